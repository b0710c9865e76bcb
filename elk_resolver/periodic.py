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
        except Exception:  # noqa: BLE001 - a bug in one refresh must not end every later one
            log.exception("%s refresh failed, keeping the last state", what)


async def stop_task(task: asyncio.Task | None) -> None:
    """Cancel a refresh task and wait for it. A cancel that lands inside an asyncpg call can
    surface as the connection's own error ("another operation is in progress") instead of
    CancelledError; the task is being stopped either way, so that is not the caller's failure."""
    if task is not None:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, *DB_ERRORS):
            await task
