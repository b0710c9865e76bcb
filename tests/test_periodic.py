"""The refresh loop behind the pattern and alias caches keeps going, and stops cleanly."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from elk_resolver.store.periodic import keep_refreshing, stop_task
from tests.support.polling import wait_for

log = logging.getLogger(__name__)


async def test_a_refresh_that_raises_a_bug_does_not_end_later_refreshes(caplog):
    calls = []

    async def refresh():
        calls.append(len(calls))
        if len(calls) == 1:
            raise ValueError("a bug in one refresh")

    task = asyncio.create_task(keep_refreshing(refresh, 0.01, "test cache", log))
    try:
        await wait_for(lambda: len(calls) >= 3, timeout=10, what="refreshes after the failing one")
    finally:
        await stop_task(task)
    assert "test cache refresh failed" in caplog.text


async def test_a_connection_left_mid_operation_by_an_outage_is_said_once_as_the_outage_not_as_a_bug(caplog):
    """A frozen PostgreSQL: the pattern refresh's statement timed out (one warning), then, after
    the thaw, the pooled connection the timeout left mid-operation raised asyncpg's
    InternalClientError, logged as an ERROR with a traceback (the fault test of a PostgreSQL
    outage allows no ERROR line: it failed in one full-suite run in two)."""
    caplog.set_level(logging.INFO)
    calls = []

    async def refresh():
        calls.append(len(calls))
        if len(calls) == 1:
            raise TimeoutError
        if len(calls) == 2:
            raise asyncpg.exceptions.InternalClientError("cannot switch to state 11; another operation (2) is in progress")

    task = asyncio.create_task(keep_refreshing(refresh, 0.01, "test cache", log))
    try:
        await wait_for(lambda: len(calls) >= 4, timeout=10, what="refreshes after the outage")
    finally:
        await stop_task(task)
    failed = [r for r in caplog.records if "refresh failed" in r.getMessage()]
    assert [r.levelname for r in failed] == ["WARNING"] and failed[0].exc_info is None, failed
    assert "test cache refresh works again" in caplog.text


async def test_stopping_a_task_cancelled_inside_a_database_call_is_not_an_error():
    started = asyncio.Event()

    async def refresh_like_asyncpg_on_cancel():
        started.set()
        try:
            await asyncio.sleep(3600)
        except asyncio.CancelledError:
            # what asyncpg raises when a cancel lands while its connection is mid-operation
            raise asyncpg.InterfaceError("cannot perform operation: another operation is in progress")

    task = asyncio.create_task(refresh_like_asyncpg_on_cancel())
    await started.wait()
    await stop_task(task)  # raised InterfaceError into the stopping stage before
    assert task.done()


async def test_a_task_that_swallows_one_cancel_is_still_stopped():
    """Python 3.11's wait_for loses a cancel that lands as its inner call finishes; a refresh or
    watch loop then ran on and its stop awaited it for ever (a test hung past its timeout)."""
    ticks = []

    async def loop_that_loses_the_first_cancel():
        lost = False
        while True:
            try:
                await asyncio.sleep(0.01)
                ticks.append(1)
            except asyncio.CancelledError:
                if lost:
                    raise
                lost = True

    task = asyncio.create_task(loop_that_loses_the_first_cancel())
    await wait_for(lambda: ticks, timeout=10, what="the loop running")
    stopping = asyncio.create_task(stop_task(task))
    try:
        await wait_for(stopping.done, timeout=10, what="stop_task to return")
    finally:
        stopping.cancel()  # without the fix: unblocks the stop (and with it the loop) for teardown
    assert task.cancelled()
