"""The GIN pending-list pass beside ingest's writes (migration 0065): the stage drains the
list of error_logs' GIN index itself, so no ingest INSERT makes PostgreSQL's inline pass (the
0.4-0.8 s stall behind the latency benchmark's p99); the service role may run it, nobody else."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka import AIOKafkaProducer

from elk_resolver.store.roles import apply_roles
from streams.ingest import build_ingest
from tests.support.polling import wait_for
from tests.test_ingest_stream import error_event, produce, total_count
from tests.test_roles_and_migrate import _as_role

PENDING = "SELECT pending_pages, pending_tuples FROM pgstatginindex('idx_error_logs_raw_log_data')"


async def test_the_stage_drains_the_gin_pending_list_beside_its_writes(settings, pool, kafka):
    await pool.execute("CREATE EXTENSION IF NOT EXISTS pgstattuple")
    # autovacuum's analyze drains the list too; off for this table, only the stage may do it
    await pool.execute("ALTER TABLE error_logs SET (autovacuum_enabled = false)")
    fast = settings.model_copy(update={"batch_max_records": 100, "batch_timeout_ms": 20, "gin_cleanup_every_s": 0.2})
    stage = build_ingest(fast, pool=pool)
    producer = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=5)
    await producer.start()
    await stage.start()
    try:
        await wait_for(lambda: stage.ready, timeout=30, what="partitions assigned")
        total = 300  # distinct errors: every one adds its raw_log_data keys to the pending list
        await produce(producer, fast.topic_raw, [error_event(i, i) for i in range(total)])
        await wait_for(lambda: stage.metrics.events_in >= total, timeout=60, what="every event ingested")
        assert await total_count(pool) == total
        await wait_for(lambda: stage.gin_cleaner.pages > 0, timeout=30, what="a pass that moved pending pages")
        await wait_for(
            lambda: _pending_is_empty(pool), timeout=30, what="the pending list drained by the stage's pass"
        )
    finally:
        await stage.stop()
        await producer.stop()
    # the entries are in the index proper: a containment query finds a row through it
    async with pool.acquire() as conn:
        await conn.execute("SET enable_seqscan = off")
        found = await conn.fetchval(
            "SELECT count(*) FROM error_logs WHERE raw_log_data @> '{\"service\": {\"name\": \"svc\"}}'"
        )
    assert found == total


async def _pending_is_empty(pool) -> bool:
    row = await pool.fetchrow(PENDING)
    return row["pending_pages"] == 0 and row["pending_tuples"] == 0


async def test_only_the_service_role_may_run_the_pass(database_url, pool):
    await apply_roles(database_url, readonly_password="ro-secret", app_password="app-secret")
    app = await asyncpg.connect(_as_role(database_url, "elk_resolver_user", "app-secret"))
    try:
        assert await app.fetchval("SELECT clean_error_logs_gin_pending_list()") >= 0
    finally:
        await app.close()
    readonly = await asyncpg.connect(_as_role(database_url, "elk_readonly", "ro-secret"))
    try:
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await readonly.fetchval("SELECT clean_error_logs_gin_pending_list()")
    finally:
        await readonly.close()
    row = await pool.fetchrow(
        "SELECT proconfig, proacl::text[] AS acl FROM pg_proc WHERE prosecdef AND proname = 'clean_error_logs_gin_pending_list'"
    )
    assert row["proconfig"] == ["search_path=public, pg_temp"]
    assert row["acl"] is not None and not any(entry.startswith("=") for entry in row["acl"])
