"""Replay faults of round three (issue 22, items 3 and 4): bad records reach the dead-letter
topic from a replay exactly as from live ingest, a second replay publishes nothing, and
retention cannot make a replay count an event again."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer

from elk_resolver.operations.replay import replay
from tests.support.fault_trial import counted_twice, dead_letters, records_on

# what the fault trial sent: every kind of record that cannot become an event
MALFORMED: dict[str, bytes | None] = {
    "too large": b'{"message": "' + b"x" * 5000 + b'"}',
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
    s = settings.model_copy(update={"max_record_bytes": 4096})
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
