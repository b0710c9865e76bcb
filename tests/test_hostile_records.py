"""Records whose values sit at the edges (issue 12): stored once, with a time that is the same
on every delivery, never dead-lettered for a value PostgreSQL would refuse."""

from __future__ import annotations

from datetime import datetime

import orjson
import pytest

from elk_resolver.events.masking import SecretMasker
from elk_resolver.store.pattern_cache import PatternCache
from handlers.ingest import ODD_TIME, PartitionCache, RawRecord, handle_batch

KAFKA_MS = 1_714_557_600_000  # 2024-05-01T10:00:00Z: the record's broker timestamp
KAFKA_TIME = datetime(2024, 5, 1, 10, 0)


def event(ts, n):
    value = {"message": f"edge case {n} failed", "log": {"level": "error"}, "event": {"hash": f"edge-{n}"}}
    if ts is not ...:
        value["@timestamp"] = ts
    return value


async def ingest(pool, records):
    cache = PatternCache(pool)
    await cache.refresh()
    return await handle_batch(records, pool=pool, patterns=cache.current, masker=SecretMasker(),
                              partitions=PartitionCache())


@pytest.mark.parametrize(
    "ts",
    [
        9 * 10**18,  # numeric, out of any calendar
        -9 * 10**18,
        1e300,
        "0001-01-01T00:00:00Z",
        "0001-01-01T00:00:00+01:00",  # before year 1 once in UTC
        "9999-12-31T23:59:59-05:00",  # after year 9999 once in UTC
        "1969-07-20T20:17:40Z",
        "2999-01-01T00:00:00Z",
        "not a time",
        ...,
    ],
)
async def test_unusable_timestamp_is_stored_at_the_record_time_and_counted_once(pool, ts):
    rec = RawRecord(orjson.dumps(event(ts, 1)), topic="raw", partition=0, offset=7, timestamp=KAFKA_MS)
    first = await ingest(pool, [rec])
    assert first.dead_letters == []
    again = await ingest(pool, [rec])  # a replay of the same record
    assert again.counts.new_occurrences == 0
    assert await pool.fetchval("SELECT occurrence_count FROM error_logs") == 1
    assert await pool.fetchval("SELECT timestamp FROM error_logs") == KAFKA_TIME
    # told apart by its identity alone: a resend with another broker timestamp counts nothing again
    assert await pool.fetchval("SELECT occurred_at FROM error_occurrences") == ODD_TIME


async def test_event_id_header_holding_nul_is_stored(pool):
    rec = RawRecord(orjson.dumps(event("2024-05-01T10:00:00Z", 2)), headers=[("event_id", b"abc\x00def")],
                    timestamp=KAFKA_MS)
    value = orjson.loads(rec.value)
    del value["event"]
    rec.value = orjson.dumps(value)
    result = await ingest(pool, [rec])
    assert result.dead_letters == []
    assert await pool.fetchval("SELECT elasticsearch_id FROM error_logs") == "abcdef"
    assert (await ingest(pool, [rec])).counts.new_occurrences == 0


async def test_pool_has_a_command_timeout_and_tcp_keepalives(database_url):
    """A frozen server used to hang a statement (and the first /ready) for as long as it
    stayed frozen; a peer that vanished was never noticed."""
    import socket

    from elk_resolver.store.db import create_pool

    async with await create_pool(database_url, min_size=1, max_size=1, command_timeout=0.5,
                                 keepalive_idle_s=17) as pool:
        async with pool.acquire() as conn:
            with pytest.raises(TimeoutError):
                await conn.execute("SELECT pg_sleep(5)")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SHOW tcp_keepalives_idle") == "17"
            sock = conn._transport.get_extra_info("socket")  # noqa: SLF001 - what the server cannot show
            if sock.family in (socket.AF_INET, socket.AF_INET6):
                assert sock.getsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE) == 1
                assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE) == 17


def test_a_failure_the_kafka_client_repeats_is_one_line_per_window():
    """After a broker restart the client logged the same OffsetCommit failure ~107 times a
    second; the log keeps one line per window and counts the rest."""
    import io
    import logging

    from elk_resolver.cli.logs import configure

    out = io.StringIO()
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    aiokafka_level = logging.getLogger("aiokafka").level
    configure(json_lines=False, level="INFO", stream=out)
    try:
        kafka_log = logging.getLogger("aiokafka.consumer.group_coordinator")
        for _ in range(500):
            kafka_log.error("OffsetCommit failed for group %s due to group error (%s)", "g", "UnknownTopicOrPartition")
        for i in range(3):
            logging.getLogger("streams.ingest").warning("dead-lettered raw[0]@%d: not_json", i)
    finally:
        for handler in list(root.handlers):
            root.removeHandler(handler)
        for handler in handlers:
            root.addHandler(handler)
        root.setLevel(level)
        logging.getLogger("aiokafka").setLevel(aiokafka_level)
    lines = out.getvalue().splitlines()
    assert sum("OffsetCommit failed" in line for line in lines) == 1
    assert sum("dead-lettered" in line for line in lines) == 3  # the service's own lines are all kept
