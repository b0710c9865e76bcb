"""The growth section's database work: a year's worth of stored errors, loaded with SQL, and
what the tables, their indexes and the ingest upsert look like at that size.

The section itself (``python -m bench --only growth``) runs the ingest stage against an
empty database and against one preloaded here, in the same run, and compares the rates.
"""

from __future__ import annotations

import time
from typing import Any

import asyncpg

# One row per distinct error, shaped like the stored ones (a 64-hex hash, a template, a
# realistic JSON document), and one occurrence per row, one second apart and ending where the
# benchmark's events begin (2026-03-02 08:00): the new occurrences land in a partition that
# already holds part of them.
PRELOAD_ERRORS = """
INSERT INTO error_logs AS e
    (timestamp, error_type, error_message, source_system, severity, elasticsearch_id, raw_log_data,
     hash_signature, fingerprint_version, fingerprint_template, occurrence_count, last_seen_at, created_at)
SELECT ts, 'preloaded_' || (g % 211), msg, 'svc-' || (g % 97), 'ERROR', id,
       jsonb_build_object(
           '@timestamp', to_char(ts, 'YYYY-MM-DD"T"HH24:MI:SS"Z"'), '@version', '1', 'message', msg,
           'log', jsonb_build_object('level', 'error', 'logger', 'com.acme.svc' || (g % 97)),
           'service', jsonb_build_object('name', 'svc-' || (g % 97)),
           'host', jsonb_build_object('name', 'node-' || (g % 40) || '.prod.acme.internal'),
           'kubernetes', jsonb_build_object('namespace', 'ns-' || (g % 13),
                                            'pod', jsonb_build_object('name', 'svc-' || (g % 97) || '-' || md5(g::text))),
           'event', jsonb_build_object('hash', id),
           'error', jsonb_build_object('message', msg, 'type', 'preloaded_' || (g % 211))),
       encode(sha256(('preloaded-' || g)::bytea), 'hex'), 'template',
       'preloaded error <*> in component ' || (g % 997), 1, ts, ts
FROM (
    SELECT g, timestamp '2026-03-02 08:00' - g * interval '1 second' AS ts,
           'preloaded error ' || g || ' in component ' || (g % 997) || ' after ' || (g % 5000) || ' ms' AS msg,
           substr(md5('id-' || g), 1, 24) AS id
    FROM generate_series(1, $1::int) AS g
) AS src
"""

PRELOAD_OCCURRENCES = """
INSERT INTO error_occurrences (event_identity, occurred_at, hash_signature, source_topic, source_partition, source_offset)
SELECT elasticsearch_id, timestamp, hash_signature, 'preloaded', 0, id FROM error_logs
"""

# Indexes of error_logs and the occurrences' parent that no constraint owns (dropping the
# parent's drops the partitions' ones; recreating it on the parent recreates them).
REBUILDABLE_INDEXES = """
SELECT i.indexname, i.indexdef FROM pg_indexes i
WHERE i.schemaname = 'public' AND i.tablename IN ('error_logs', 'error_occurrences')
  AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conname = i.indexname)
ORDER BY i.indexname
"""

SIZES = """
SELECT c.relname AS name, c.relkind::text AS kind, pg_relation_size(c.oid) AS bytes
FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace AND n.nspname = 'public'
WHERE c.relname LIKE 'error_logs%' OR c.relname LIKE 'error_occurrences%' OR c.relname LIKE 'idx_error_%'
   OR c.relname LIKE 'uq_error_%'
ORDER BY c.relname
"""

TABLE_STATS = """
SELECT relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_live_tup, n_dead_tup, idx_scan, seq_scan
FROM pg_stat_user_tables WHERE relname = 'error_logs' OR relname LIKE 'error_occurrences%'
ORDER BY relname
"""


async def preload(database_url: str, rows: int) -> dict[str, Any]:
    """Load ``rows`` distinct errors and one occurrence each; vacuum, analyse, checkpoint."""
    conn = await asyncpg.connect(database_url)
    try:
        started = time.perf_counter()
        await conn.execute(
            "SELECT ensure_error_occurrences_partition(m::date) FROM generate_series("
            "date_trunc('month', timestamp '2026-03-02 08:00' - $1::int * interval '1 second'),"
            " timestamp '2026-03-02', interval '1 month') AS m",
            rows,
        )
        # Indexes not behind a constraint are built after the load (minutes faster than
        # maintaining them row by row); a built index is denser than a grown one, so the
        # first inserts split more pages: if anything, this makes the full side slower.
        rebuild = await conn.fetch(REBUILDABLE_INDEXES)
        for r in rebuild:
            await conn.execute(f'DROP INDEX "{r["indexname"]}"')
        # pg_indexes spells a partitioned table's index ON ONLY; built ON it covers the partitions
        definitions = [r["indexdef"].replace(" ON ONLY ", " ON ") for r in rebuild]
        await conn.execute("SET maintenance_work_mem = '256MB'")
        await conn.execute(PRELOAD_ERRORS, rows)
        await conn.execute(PRELOAD_OCCURRENCES)
        for definition in definitions:
            await conn.execute(definition)
        await conn.execute("VACUUM ANALYZE error_logs")
        await conn.execute("VACUUM ANALYZE error_occurrences")
        await conn.execute("CHECKPOINT")
        await conn.execute("SELECT pg_stat_reset()")
        return {"rows": rows, "seconds": time.perf_counter() - started}
    finally:
        await conn.close()


async def sizes(database_url: str) -> dict[str, Any]:
    """Bytes of error_logs, error_occurrences (all partitions) and each of their indexes."""
    conn = await asyncpg.connect(database_url)
    try:
        relations = {r["name"]: (r["kind"], r["bytes"]) for r in await conn.fetch(SIZES)}
        tables = await conn.fetch(
            "SELECT relname, pg_table_size(oid) AS heap, pg_indexes_size(oid) AS idx FROM pg_class "
            "WHERE relname = 'error_logs' OR (relname LIKE 'error_occurrences_y%' AND relkind = 'r')"
        )
        rows = await conn.fetchval("SELECT count(*) FROM error_logs")
        occurrences = await conn.fetchval("SELECT count(*) FROM error_occurrences")
    finally:
        await conn.close()
    mb = 1 << 20
    return {
        "error_logs_rows": rows,
        "occurrence_rows": occurrences,
        "error_logs_table_mb": sum(t["heap"] for t in tables if t["relname"] == "error_logs") / mb,
        "error_logs_indexes_mb": sum(t["idx"] for t in tables if t["relname"] == "error_logs") / mb,
        "occurrences_table_mb": sum(t["heap"] for t in tables if t["relname"] != "error_logs") / mb,
        "occurrences_indexes_mb": sum(t["idx"] for t in tables if t["relname"] != "error_logs") / mb,
        "indexes_mb": {name: size / mb for name, (kind, size) in relations.items() if kind == "i" and size},
    }


async def table_stats(database_url: str) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        return [dict(r) for r in await conn.fetch(TABLE_STATS)]
    finally:
        await conn.close()


async def upsert_plan(database_url: str, batch, fingerprint_version: str = "template") -> dict[str, Any]:
    """EXPLAIN (ANALYZE, BUFFERS, WAL) of the stage's upsert for one prepared batch, rolled back."""
    from elk_resolver.store.db import create_pool, queries
    from handlers.ingest import store_batch

    q = queries()
    captured: dict[str, Any] = {}

    class Explaining:
        """A connection stand-in: store_batch's upsert goes through EXPLAIN, the rest as is."""

        def __init__(self, conn: asyncpg.Connection) -> None:
            self.conn = conn

        async def execute(self, sql: str, *args: Any) -> Any:
            return await self.conn.execute(sql, *args)

        async def fetch(self, sql: str, *args: Any) -> list:
            name = {q.ingest_upsert_batch: "upsert", q.ingest_row_ids: "row_ids"}.get(sql)
            if name is not None:
                explain = "EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) " + sql
                captured[name] = await self.conn.fetchval(explain, *args)
                if name == "row_ids":  # so the caller gets its rows, after the plan
                    return await self.conn.fetch(sql, *args)
                return []
            return await self.conn.fetch(sql, *args)

    async with await create_pool(database_url, min_size=1, max_size=1) as pool:
        async with pool.acquire() as conn:
            tx = conn.transaction()
            await tx.start()
            try:
                await store_batch(Explaining(conn), batch, fingerprint_version=fingerprint_version)  # type: ignore[arg-type]
            finally:
                await tx.rollback()
    return {name: summarize_plan(_decoded(plan)) for name, plan in captured.items()}


def _decoded(plan: Any) -> dict[str, Any]:
    if isinstance(plan, str | bytes):
        import orjson

        plan = orjson.loads(plan)
    return plan[0] if isinstance(plan, list) else plan


def summarize_plan(plan: dict[str, Any]) -> dict[str, Any]:
    """The figures of an EXPLAIN (ANALYZE, BUFFERS, WAL, FORMAT JSON) plan that show growth:
    time, buffers touched/read/dirtied, WAL and full-page images, and the access path of
    every scan node (an index-only scan, an index scan or a sequential one)."""
    top = plan["Plan"]
    scans: list[str] = []

    def walk(node: dict[str, Any]) -> None:
        kind = node.get("Node Type", "")
        if "Scan" in kind:
            target = node.get("Index Name") or node.get("Relation Name") or node.get("Function Name") or ""
            scans.append(f"{kind} {target}".strip())
        for child in node.get("Plans", ()):
            walk(child)

    walk(top)
    return {
        "execution_ms": plan.get("Execution Time"),
        "shared_hit": top.get("Shared Hit Blocks"),
        "shared_read": top.get("Shared Read Blocks"),
        "shared_dirtied": top.get("Shared Dirtied Blocks"),
        "shared_written": top.get("Shared Written Blocks"),
        "wal_records": top.get("WAL Records"),
        "wal_fpi": top.get("WAL FPI"),
        "wal_bytes": top.get("WAL Bytes"),
        "scans": sorted(set(scans)),
    }
