"""What keeps the ingest upsert flat as the tables grow: the occurrences' key in time order,
room for HOT updates on error_logs, and the growth benchmark's own database work."""

from __future__ import annotations

import asyncpg

from bench import growth
from bench.events import generate
from elk_resolver.events.classify import PatternSet
from elk_resolver.events.masking import SecretMasker
from handlers.ingest import PartitionCache, RawRecord, prepare_batch, store_batch


async def test_occurrences_key_leads_with_the_time_so_new_keys_land_at_the_recent_end(database_url):
    conn = await asyncpg.connect(database_url)
    try:
        columns = await conn.fetch(
            "SELECT a.attname FROM pg_index i JOIN pg_class c ON c.oid = i.indrelid"
            " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, n) ON true"
            " JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = k.attnum"
            " WHERE c.relname = 'error_occurrences' AND i.indisprimary ORDER BY k.n"
        )
        assert [r["attname"] for r in columns] == ["occurred_at", "event_identity"]
    finally:
        await conn.close()


def _batch(records: list[bytes], offset: int = 0):
    raw = [RawRecord(value=v, topic="t", partition=0, offset=offset + i) for i, v in enumerate(records)]
    return prepare_batch(raw, patterns=PatternSet([]), masker=SecretMasker())  # no pattern ids: no FK


async def test_repeats_of_a_known_error_are_hot_updates(database_url):
    """Every repeat updates occurrence_count and last_seen_at only: with room on the page the
    new row version stays there and no index gets an entry (n_tup_hot_upd counts it)."""
    data = generate(400, seed=11, unique_only=True)
    first = _batch(data.records)
    conn = await asyncpg.connect(database_url)
    try:
        await store_batch(conn, first, partitions=PartitionCache())
        # the repeats arrive over several batches, as an error's repeats do
        expected = 0  # one update per error per batch (a name the rules mask may make two records one error)
        for start in range(0, 400, 50):
            again = _batch(data.records[start : start + 50], offset=10_000 + start)
            expected += len(again.errors)
            again.occurrences = {(f"{i}-again", when): v for (i, when), v in again.occurrences.items()}
            await store_batch(conn, again, partitions=PartitionCache())
        await conn.execute("SELECT pg_stat_force_next_flush()")
        await conn.close()  # a backend flushes its counters when it ends
        conn = await asyncpg.connect(database_url)
        updated = hot = 0
        for _ in range(100):  # the statistics arrive shortly after the backend ends
            row = await conn.fetchrow(
                "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname = 'error_logs'"
            )
            updated, hot = row["n_tup_upd"], row["n_tup_hot_upd"]
            if updated >= expected:
                break
            await conn.execute("SELECT pg_stat_clear_snapshot()")
        assert updated == expected
        assert hot >= 0.8 * updated, (hot, updated)  # 232 of 400 with the pages packed full
    finally:
        await conn.close()


async def test_growth_preload_sizes_and_plans_on_a_small_table(database_url):
    loaded = await growth.preload(database_url, 3_000)
    assert loaded["rows"] == 3_000
    sizes = await growth.sizes(database_url)
    assert sizes["error_logs_rows"] == 3_000 and sizes["occurrence_rows"] == 3_000
    assert sizes["indexes_mb"]["idx_error_logs_raw_log_data"] > 0  # rebuilt after the load
    assert "idx_error_occurrences_hash" in {
        r["indexname"]
        for r in await (await asyncpg.connect(database_url)).fetch("SELECT indexname FROM pg_indexes")
    }
    plans = await growth.upsert_plan(database_url, _batch(generate(200, seed=12).records))
    assert plans["upsert"]["execution_ms"] > 0 and plans["upsert"]["wal_records"] > 0
    # rolled back: nothing of the batch stayed
    assert (await growth.sizes(database_url))["error_logs_rows"] == 3_000
