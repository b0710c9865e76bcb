"""A refresh that runs every few seconds in its own task, for the in-memory caches of database
tables (patterns, aliases): when the database is unreachable the last state stays in use, and
the failure is logged once per outage, not every refresh."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncio.TimeoutError)


async def keep_refreshing(refresh: Callable[[], Awaitable[object]], interval_s: float, what: str,
                          log: logging.Logger) -> None:
    failing = False
    while True:
        await asyncio.sleep(interval_s)
        try:
            await refresh()
            if failing:
                log.info("%s refresh works again", what)
            failing = False
        except DB_ERRORS as exc:
            if not failing:  # once per outage, not every refresh
                log.warning("%s refresh failed, keeping the last state: %s", what, exc)
            failing = True


async def stop_task(task: asyncio.Task | None) -> None:
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
