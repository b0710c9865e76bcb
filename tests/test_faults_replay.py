"""Replay faults of round three (issue 22, items 3 and 4): bad records reach the dead-letter
topic from a replay exactly as from live ingest, a second replay publishes nothing, and
retention cannot make a replay count an event again."""

from __future__ import annotations

import asyncio
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from elk_resolver.operations.replay import replay
from elk_resolver.store.maintain import maintain
from handlers.ingest import ODD_TIME, occurrence_time
from tests.support.fault_trial import counted_twice, dead_letters, records_on

# what the fault trial sent: every kind of record that cannot become an event
MALFORMED: dict[str, bytes | None] = {
    "too large": b'{"message": "' + b"x" * 20000 + b'"}',
    "not JSON": b"this is not json",
    "not an object": b"[1, 2, 3]",
    "a number": b"42",
    "a string": b'"just text"',
    "tombstone": None,
    "empty": b"",
    "invalid UTF-8": b'{"message": "caf\xe9 failed", "log": {"level": "error"}}',
    "lone surrogate": b'{"message": "broken \\ud800 surrogate", "log": {"level": "error"}}',
    "too deep": b'{"message": "deep", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}",
    "no message": b'{"log": {"level": "error"}, "service": {"name": "svc"}}',
}


def _valid(i: int) -> bytes:
    return orjson.dumps({
        "@timestamp": datetime.now(UTC).isoformat(), "message": f"Connection refused to db port 5432 (try {i % 3})",
        "log": {"level": "error"}, "service": {"name": "billing"}, "event": {"hash": f"ev-{i}"},
    })


async def test_replay_dead_letters_bad_records_with_their_coordinates_and_a_second_replay_publishes_nothing(
    settings, pool
):
    s = settings.model_copy(update={"max_record_bytes": 16384})
    start = datetime.now(UTC) - timedelta(seconds=5)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers, max_request_size=8 << 20)
    await producer.start()
    sent: dict[tuple[int, int], str] = {}
    try:
        for i in range(40):
            await (await producer.send(s.topic_raw, _valid(i), partition=i % 2))
            if i % 4 == 0:
                name = list(MALFORMED)[i // 4]
                meta = await (await producer.send(s.topic_raw, MALFORMED[name], key=b"bad", partition=i % 2))
                sent[(meta.partition, meta.offset)] = name
        for name in list(MALFORMED)[10:]:
            meta = await (await producer.send(s.topic_raw, MALFORMED[name], key=b"bad", partition=1))
            sent[(meta.partition, meta.offset)] = name
    finally:
        await producer.stop()
    assert len(sent) == len(MALFORMED)

    first = await replay(s, pool, since=start)
    assert first.bad_records == len(MALFORMED) and first.dead_lettered == len(MALFORMED)
    dead = await dead_letters(s.kafka_bootstrap_servers, s.topic_dlq)
    # the coordinates of every bad record, once each, as live ingest sends them
    assert sorted((int(d["partition"]), int(d["offset"])) for d in dead) == sorted(sent)
    assert {d["topic"] for d in dead} == {s.topic_raw}
    assert Counter(d["reason"] for d in dead)["not_json"] >= 3
    assert await pool.fetchval("SELECT count(*) FROM error_occurrences") == 40
    analysis = await records_on(s.kafka_bootstrap_servers, s.topic_analysis)
    assert analysis

    second = await replay(s, pool, since=start)
    assert second.new_occurrences == 0 and second.published == 0
    assert second.dead_lettered == 0 and second.already_dead_lettered == len(MALFORMED)
    assert len(await dead_letters(s.kafka_bootstrap_servers, s.topic_dlq)) == len(MALFORMED)
    assert len(await records_on(s.kafka_bootstrap_servers, s.topic_analysis)) == len(analysis)
    assert await counted_twice(pool) == 0


def _stamped(i: int, when: str) -> bytes:
    return orjson.dumps({"@timestamp": when, "message": f"Connection refused to db port 5432 (try {i % 3})",
                         "log": {"level": "error"}, "service": {"name": "billing"}, "event": {"hash": f"ts-{i}"}})


async def _partition_months(pool) -> list[str]:
    return sorted(r[0][-8:] for r in await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'error_occurrences'::regclass AND c.relname ~ '_y[0-9]{4}m[0-9]{2}$'"))


async def test_retention_cannot_make_a_replay_count_an_event_again_and_makes_no_endless_partition(settings, pool):
    """The trial's events stamped 1975 and 2150 among ordinary ones: the 1975 one was stored
    in a 1975 partition, the next retention run dropped it and a replay counted it again
    (209 events, sum 210); the 2150 one made a partition retention never removes. Both are
    now stored at the time the broker received them, and never remediated automatically."""
    start = datetime.now(UTC) - timedelta(seconds=5)
    now = datetime.now(UTC)
    values = [_stamped(i, (now - timedelta(minutes=i)).isoformat()) for i in range(207)]
    values += [_stamped(207, "1975-01-01T00:00:00Z"), _stamped(208, "2150-01-01T00:00:00Z")]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(settings.topic_raw, v) for v in values])
    finally:
        await producer.stop()
    first = await replay(settings, pool, since=start)
    assert first.new_occurrences == 209
    months = await _partition_months(pool)
    assert not [m for m in months if m < "y2020m01" or m > "y2100m01"], months
    # the next start's retention, as the monitor stage runs it (as the owner here)
    await maintain(pool, retention_days=90)
    again = await replay(settings, pool, since=start)
    assert again.new_occurrences == 0 and again.expired == 0
    assert await pool.fetchval("SELECT sum(occurrence_count) FROM error_logs") == 209
    assert await counted_twice(pool) == 0
    # told apart by their identity alone, outside every month retention drops
    odd = await pool.fetch("SELECT tableoid::regclass::text AS part, occurred_at FROM error_occurrences "
                           "WHERE event_identity = any($1)", ["ts-207", "ts-208"])
    assert {(r["part"], r["occurred_at"]) for r in odd} == {("error_occurrences_odd", ODD_TIME)}, odd
    rows = await pool.fetch("SELECT timestamp FROM error_logs")
    assert all(r["timestamp"].year == now.year or r["timestamp"].year == now.year - 1 for r in rows)  # no 1975
    events = [orjson.loads(r.value) for r in await records_on(settings.kafka_bootstrap_servers, settings.topic_analysis)]
    assert events and all(e["replay"] for e in events)


async def test_records_older_than_the_retention_are_expired_never_counted_again_nor_their_month_made_again(pool):
    """A record received long ago (its Kafka timestamp 200 days back) is counted in its month;
    retention drops that month; reading the record again (a replay of an old offset) counts
    nothing and makes no partition for retention to drop again."""
    from elk_resolver.events.classify import PatternSet
    from elk_resolver.events.masking import SecretMasker
    from handlers.ingest import IngestConfig, PartitionCache, RawRecord, handle_batch

    long_ago = datetime.now(UTC) - timedelta(days=200)
    record = RawRecord(_stamped(1, long_ago.isoformat()), "raw", 0, 7, int(long_ago.timestamp() * 1000))
    month = f"y{long_ago:%Y}m{long_ago:%m}"

    async def ingest():
        return await handle_batch([record], pool=pool, patterns=PatternSet([]), masker=SecretMasker(),
                                  config=IngestConfig(), partitions=PartitionCache())

    assert (await ingest()).counts.new_occurrences == 1
    assert month in await _partition_months(pool)
    await pool.fetch("SELECT drop_expired_error_occurrences_partitions(CURRENT_DATE - 90)")
    assert month not in await _partition_months(pool)
    again = await ingest()
    assert again.counts.new_occurrences == 0 and again.counts.expired == 1 and again.events == []
    assert month not in await _partition_months(pool)
    assert await pool.fetchval("SELECT sum(occurrence_count) FROM error_logs") == 1


_TIMES = st.datetimes(min_value=datetime(1970, 1, 2), max_value=datetime(2199, 12, 30))


@hsettings(max_examples=300, deadline=None)
@given(parsed=st.none() | _TIMES, received=st.none() | _TIMES, believed_days=st.integers(5, 3650),
       read_at=st.lists(_TIMES, min_size=2, max_size=2))
def test_an_events_stored_time_depends_on_the_record_alone_and_stays_near_its_receipt(
    parsed, received, believed_days, read_at
):
    """The stored time keys the event's occurrence: whenever the record is read (live, again on
    a redelivery, years later in a replay) it must be the same, or the event is counted
    twice; and it must lie near when the broker received the record, or it lands in a month
    retention drops at once (1975) or never (2150)."""
    kafka_ms = None if received is None else int(received.replace(tzinfo=UTC).timestamp() * 1000)
    believed = timedelta(days=believed_days)
    first, own_first = occurrence_time(parsed, read_at[0], kafka_ms, believed)
    second, own_second = occurrence_time(parsed, read_at[1], kafka_ms, believed)
    if received is not None:
        received = datetime.fromtimestamp(kafka_ms / 1000, UTC).replace(tzinfo=None)
        assert (first, own_first) == (second, own_second)
        assert received - believed <= first <= received + timedelta(days=1)
        if parsed is not None and received - believed <= parsed <= received + timedelta(days=1):
            assert first == parsed and own_first
    elif parsed is not None:
        assert first == second == parsed


def test_an_event_stamped_1975_received_now_is_stored_when_received_and_not_believed():
    received = datetime(2026, 12, 6, 12, 0)
    kafka_ms = int(received.replace(tzinfo=UTC).timestamp() * 1000)
    assert occurrence_time(datetime(1975, 1, 1), datetime(2030, 1, 1), kafka_ms, timedelta(days=88)) == (received, False)
    assert occurrence_time(datetime(2150, 1, 1), datetime(2030, 1, 1), kafka_ms, timedelta(days=88)) == (received, False)


async def test_a_resend_of_an_event_whose_own_time_is_not_believed_counts_once(pool):
    """A producer that resends after a broker hiccup writes the same bytes again with another
    Kafka timestamp; stored at its receipt, the event was keyed by that timestamp and counted
    once per resend. Its identity alone tells it apart now."""
    from elk_resolver.events.classify import PatternSet
    from elk_resolver.events.masking import SecretMasker
    from handlers.ingest import IngestConfig, PartitionCache, RawRecord, handle_batch

    now = datetime.now(UTC)
    value = _stamped(1, "2019-03-01T00:00:00Z")  # far older than its receipt: not believed
    counted = 0
    for n, sent in enumerate((now - timedelta(seconds=3), now)):
        result = await handle_batch([RawRecord(value, "raw", 0, n, int(sent.timestamp() * 1000))], pool=pool,
                                    patterns=PatternSet([]), masker=SecretMasker(), config=IngestConfig(),
                                    partitions=PartitionCache())
        counted += result.counts.new_occurrences
        assert all(e.replay for e in result.events)  # never remediated automatically
    assert counted == 1
    assert await pool.fetchval("SELECT sum(occurrence_count) FROM error_logs") == 1
    # last seen when it was received, not in year 1 of its key: retention keeps the error
    assert (await pool.fetchval("SELECT last_seen_at FROM error_logs")).date() >= (now - timedelta(days=1)).date()
    await maintain(pool, retention_days=90)
    assert await pool.fetchval("SELECT sum(occurrence_count) FROM error_logs") == 1
