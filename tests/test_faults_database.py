"""Database faults of round three (issue 22): a read-only PostgreSQL (a failover to a replica,
a demoted primary) is an outage, not bad input; health answers at once during a freeze and
says why in words; an outage is told in a few lines, not one per record, scrape or pass."""

from __future__ import annotations

import contextlib

import asyncpg
import pytest

from tests.support.polling import wait_for
from tests.test_faults import dlq_count
from tests.test_ingest_stream import error_event, fast, produce, producer, running, total_count  # noqa: F401


@contextlib.asynccontextmanager
async def read_only_server(postgres):
    """``default_transaction_read_only = on`` for the whole server, as a demoted primary or a
    replica after a failover answers: every session's next write is refused with 25006."""
    if not postgres.controllable:
        pytest.skip("PostgreSQL is not under the test's control")
    admin = await asyncpg.connect(postgres.admin_dsn, server_settings={"default_transaction_read_only": "off"})
    try:
        await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await admin.execute("SELECT pg_reload_conf()")
        yield admin
    finally:
        await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


async def test_a_read_only_database_pauses_ingest_and_dead_letters_nothing(
    running, fast, producer, pool, kafka, postgres
):
    stage = await running()
    await produce(producer, fast.topic_raw, [error_event(i, i % 5) for i in range(100)])
    await wait_for(lambda: _total_is(pool, 100), timeout=30, what="first 100 stored")
    async with read_only_server(postgres):
        await produce(producer, fast.topic_raw, [error_event(i, i % 5) for i in range(100, 400)])
        # the stage keeps the batch and retries (it used to store it record by record and
        # dead-letter every one as db_rejected)
        await wait_for(lambda: stage.metrics.db_retries >= 3, timeout=30, what="ingest retrying")
        assert stage.metrics.dead_lettered == 0
        assert await total_count(pool) == 100
    await wait_for(lambda: _total_is(pool, 400), timeout=60, what="every event stored once writable again")
    await wait_for(lambda: stage.metrics.events_in >= 400, timeout=30, what="all committed")
    assert await pool.fetchval("SELECT count(*) FROM error_occurrences") == 400
    assert stage.metrics.dead_lettered == 0
    assert await dlq_count(kafka, fast.topic_dlq) == 0


async def _total_is(pool, n: int) -> bool:
    return await total_count(pool) == n
