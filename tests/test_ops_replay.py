"""`replay` and `backfill-es` against the real broker and PostgreSQL."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from elk_resolver.kafka.offsets import partitions_of
from elk_resolver.operations.backfill import BackfillError, backfill
from elk_resolver.operations.replay import replay
from tests.support.es_stub import EsStub


def _event(i: int, *, service: str = "billing") -> bytes:
    return orjson.dumps({
        "@timestamp": datetime.now(UTC).isoformat(), "message": f"Connection refused to db port 5432 (try {i % 3})",
        "log": {"level": "error"}, "service": {"name": service}, "event": {"hash": f"ev-{i}"},
    })


async def _produce(settings, ids) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic_raw, _event(i), key=str(i).encode()) for i in ids]
        for future in futures:
            await future
    finally:
        await producer.stop()


async def _read_all(settings, topic: str) -> list:
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap_servers, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    try:
        tps = await partitions_of(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        found = []
        while True:
            batch = await consumer.getmany(timeout_ms=700)
            if not batch:
                return found
            for records in batch.values():
                found.extend(records)
    finally:
        await consumer.stop()


async def _counts(pool) -> tuple[list[str], int]:
    async with pool.acquire() as conn:
        ids = sorted(await conn.fetchval("SELECT coalesce(array_agg(event_identity), '{}') FROM error_occurrences"))
        total = await conn.fetchval("SELECT coalesce(sum(occurrence_count), 0) FROM error_logs")
    return ids, total


async def test_replay_from_a_middle_time_reads_only_what_came_after_and_twice_changes_nothing(settings, pool):
    start = datetime.now(UTC) - timedelta(seconds=5)
    await _produce(settings, range(0, 12))
    # a gap in the broker's receive times on both sides of the cut (the scenario, not a wait)
    await asyncio.sleep(0.5)
    middle = datetime.now(UTC)
    await asyncio.sleep(0.5)
    await _produce(settings, range(12, 20))

    result = await replay(settings, pool, since=middle)
    ids, total = await _counts(pool)
    assert ids == sorted(f"ev-{i}" for i in range(12, 20)) and total == 8
    assert result.records == 8 and result.new_occurrences == 8

    full = await replay(settings, pool, since=start)
    assert full.records == 20 and full.new_occurrences == 12
    before = await _counts(pool)
    again = await replay(settings, pool, since=start)
    assert again.records == 20 and again.new_occurrences == 0 and again.new_rows == 0
    assert await _counts(pool) == before
    assert before[1] == 20

    events = [orjson.loads(r.value) for r in await _read_all(settings, settings.topic_analysis)]
    assert events and all(e["replay"] is True for e in events)  # nothing gets remediated
    async with pool.acquire() as conn:
        assert await conn.fetchval("SELECT count(*) FROM execution_history") == 0


async def test_replay_until_stops_there(settings, pool):
    start = datetime.now(UTC) - timedelta(seconds=5)
    await _produce(settings, range(0, 6))
    # a gap in the broker's receive times on both sides of the cut (the scenario, not a wait)
    await asyncio.sleep(0.5)
    until = datetime.now(UTC)
    await asyncio.sleep(0.5)
    await _produce(settings, range(6, 10))
    result = await replay(settings, pool, since=start, until=until)
    assert result.records == 6
    assert (await _counts(pool))[0] == sorted(f"ev-{i}" for i in range(6))


def _docs(n: int) -> list[dict]:
    base = datetime(2024, 5, 1, 10, 0, tzinfo=UTC)
    docs = []
    for i in range(n):
        # pairs share a timestamp, so pages end in the middle of equal sort values
        ts = (base + timedelta(seconds=i // 2)).isoformat().replace("+00:00", "Z")
        docs.append({"_id": f"doc-{i:03d}", "_source": {
            "@timestamp": ts, "message": f"OOMKilled container worker-{i % 4}", "log": {"level": "error"},
            "service": {"name": "worker"}, "event": {"dataset": "k8s"},
        }})
    return docs


async def test_backfill_pages_through_survives_an_interruption_and_resumes_without_duplicates(settings, pool):
    async with EsStub() as es:
        es.serve_documents(_docs(23) + [{"_id": "too-old", "_source": {
            "@timestamp": "2024-04-01T00:00:00Z", "message": "old", "log": {"level": "error"}}}])
        s = settings.model_copy(update={"elasticsearch_url": es.url})
        since = datetime(2024, 5, 1, tzinfo=UTC)
        es.fail_searches_after(2)
        with pytest.raises(BackfillError):
            await backfill(s, pool, index="logs-*", since=since, page_size=5)
        assert not es.open_pits  # closed even when interrupted
        async with pool.acquire() as conn:
            cursor = await conn.fetchrow("SELECT docs_published, completed_at FROM backfill_cursors")
        assert cursor["docs_published"] == 10 and cursor["completed_at"] is None

        es.fail_searches_after(None)
        result = await backfill(s, pool, index="logs-*", since=since, page_size=5)
        assert result.resumed and result.published == 23
        again = await backfill(s, pool, index="logs-*", since=since, page_size=5)
        assert again.already_complete

    records = await _read_all(settings, settings.topic_raw)
    ids = [orjson.loads(r.value)["event"]["hash"] for r in records]
    assert sorted(ids) == [f"doc-{i:03d}" for i in range(23)]  # each once, the old one filtered out
    assert all(dict(r.headers)["event_id"].decode() == orjson.loads(r.value)["event"]["hash"] for r in records)
    assert {r.key for r in records} == {b"worker"}
    first = orjson.loads(records[0].value)
    assert first["event"]["dataset"] == "k8s" and "message" in first  # Logstash's shape, untouched otherwise


async def test_backfilled_documents_are_history_never_remediated_and_a_double_backfill_counts_once(settings, pool):
    """Issue 10 item 6: the records backfill-es publishes carry the history mark, which the
    ingest handler (as the live stage runs it) stores and turns into no-remediation events;
    Logstash's event.hash is the identity, so the event already consumed live and a second
    backfill of the same documents count nothing twice."""
    from elk_resolver.events.masking import SecretMasker
    from elk_resolver.store.pattern_cache import PatternCache
    from handlers.ingest import IngestConfig, PartitionCache, handle_batch

    cache = PatternCache(pool)
    await cache.refresh()

    async def ingest(records):
        return await handle_batch(records, pool=pool, patterns=cache.current, masker=SecretMasker(),
                                  config=IngestConfig.from_settings(settings), partitions=PartitionCache())

    now = datetime.now(UTC).replace(microsecond=0)
    stamp = now.isoformat().replace("+00:00", "Z")
    message = "OOMKilled container worker-1"
    live = {"@timestamp": stamp, "message": message, "log": {"level": "error"}, "service": {"name": "worker"},
            "event": {"hash": "logstash-fp-1"}}
    # Live first: the service consumed this event when it happened.
    await ingest([type("R", (), {"topic": "raw", "partition": 0, "offset": 0, "timestamp": None,
                                 "value": orjson.dumps(live), "headers": ()})()])
    docs = [
        # The same event as indexed by Elasticsearch under an id of its own.
        {"_id": "es-auto-id-1", "_source": live},
        # Two recent documents the service never saw (within stale_after_s: "remediable" by age).
        {"_id": "doc-a", "_source": {**live, "event": {"hash": "logstash-fp-2"}}},
        {"_id": "doc-b", "_source": {k: v for k, v in live.items() if k != "event"}},
    ]
    async with EsStub() as es:
        es.serve_documents(docs)
        s = settings.model_copy(update={"elasticsearch_url": es.url})
        since = now - timedelta(minutes=5)
        assert (await backfill(s, pool, index="logs-*", since=since)).published == 3
        assert (await backfill(s, pool, index="logs-*", since=since, restart=True)).published == 3

    records = await _read_all(settings, settings.topic_raw)
    assert len(records) == 6
    assert all(dict(r.headers)["elk-history"] == b"backfill" for r in records)
    result = await ingest(records)
    ids, total = await _counts(pool)
    assert ids == ["doc-b", "logstash-fp-1", "logstash-fp-2"] and total == 3
    assert result.counts.new_occurrences == 2
    [event] = result.events
    assert event.replay and event.history == "backfill"
    async with pool.acquire() as conn:
        marks = dict(await conn.fetch("SELECT event_identity, history FROM error_occurrences"))
        actionable = await conn.fetchval("SELECT last_actionable_at FROM error_logs")
    assert marks == {"logstash-fp-1": None, "logstash-fp-2": "backfill", "doc-b": "backfill"}
    assert actionable == now.replace(tzinfo=None)  # the live occurrence only
