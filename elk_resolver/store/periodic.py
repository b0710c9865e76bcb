"""A refresh that runs every few seconds in its own task, for the in-memory caches of database
tables (patterns, aliases): when the database is unreachable the last state stays in use, and
the failure is logged once per outage, not every refresh."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

import asyncpg

from elk_resolver.store.db import describe_db_failure

DB_ERRORS = (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.exceptions.InternalClientError,
             asyncio.TimeoutError)
"""Failures of the database or of a connection to it. InternalClientError ("cannot switch to
state 11; another operation is in progress") is a pooled connection a timed-out statement left
mid-operation while PostgreSQL was frozen: part of the outage, as
:func:`elk_resolver.store.db.is_transient_db_error` says, not a bug."""


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
                log.warning("%s refresh failed, keeping the last state: %s", what, describe_db_failure(exc))
            failing = True
        except Exception:  # noqa: BLE001 - a bug in one refresh must not end every later one
            log.exception("%s refresh failed, keeping the last state", what)


async def cancel_and_wait(task: asyncio.Task, *, bound_s: float = 10.0, what: str = "task",
                          log: logging.Logger | None = None) -> None:
    """Cancel ``task`` and wait until it has ended, asking again while it runs on.

    One cancel is not always enough on Python 3.11: ``asyncio.wait_for`` (used inside aiokafka,
    asyncpg and our own code) swallows a cancellation that lands just as its inner call
    finishes, and a ``while True`` loop then goes on for ever while its owner awaits it: a stop
    that never returns. Past ``bound_s`` the task is left behind with a warning, never awaited
    for ever. A cancel that lands inside an asyncpg call can also surface as the connection's own
    error ("another operation is in progress"); the task is being stopped either way."""
    deadline = time.monotonic() + bound_s
    while not task.done():
        if time.monotonic() >= deadline:
            (log or logging.getLogger(__name__)).warning("%s did not stop within %.0fs; left behind", what, bound_s)
            return
        task.cancel()
        await asyncio.wait({task}, timeout=0.5)
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, DB_ERRORS):
        (log or logging.getLogger(__name__)).warning("%s ended with an error while stopping: %r", what, exc, exc_info=exc)


async def stop_task(task: asyncio.Task | None) -> None:
    if task is not None:
        await cancel_and_wait(task, what=task.get_name())
