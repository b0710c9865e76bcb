"""The ingest handler against a real PostgreSQL, without Kafka: parse, classify, mask,
fingerprint, dedupe and the one-transaction upsert."""

from __future__ import annotations

import time
from datetime import datetime

import orjson
import pytest

from elk_resolver.events.fingerprint import fingerprint
from elk_resolver.events.masking import SecretMasker
from elk_resolver.store.pattern_cache import PatternCache
from handlers.ingest import IngestConfig, PartitionCache, RawRecord, handle_batch

SECRET = "hunter2-Zx9qPlanted"


def ecs_event(message="CrashLoopBackOff: back-off restarting failed container in pod api-7d9f", **extra):
    event = {
        "@timestamp": "2024-05-01T10:15:30.123Z",
        "@version": "1",
        "message": message,
        "log": {"level": "error"},
        "error": {
            "type": "io.k8s.PodError",
            "message": message,
            "stack_trace": "io.k8s.PodError: boom\n\tat io.k8s.Pod.run(Pod.java:42)",
        },
        "service": {"name": "checkout"},
        "host": {"name": "node-1"},
        "event": {"hash": "ecs-event-0001", "original": message},
        "kubernetes": {
            "namespace": "shop",
            "pod": {"name": "api-7d9f"},
            "container": {"name": "api"},
            "deployment": {"name": "api"},
        },
    }
    event.update(extra)
    return event


def legacy_event(message=None):
    return {
        "@timestamp": "2024-05-02T08:00:00Z",
        "@version": "1",
        "host": "web-01.example.org",
        "path": "/var/log/app/app.log",
        "level": "SEVERE",
        "message": message
        or (
            "Request failed: Connection refused to db port 5432\n"
            "java.net.ConnectException: Connection refused\n"
            "\tat java.net.PlainSocketImpl.socketConnect(Native Method)\n"
            "\tat java.net.Socket.connect(Socket.java:589)"
        ),
    }


# when the broker received them: after the events' own times (May and June 2024), within the
# time an event's own time is believed (occurrence_time)
RECEIVED_MS = 1719792000000  # 2024-07-01


def records(events, topic="raw", partition=0, start=0):
    return [
        RawRecord(orjson.dumps(e) if not isinstance(e, bytes) else e, topic, partition, start + i, RECEIVED_MS)
        for i, e in enumerate(events)
    ]


@pytest.fixture
async def patterns(pool):
    cache = PatternCache(pool)
    await cache.refresh()
    return cache


async def ingest(pool, patterns, recs, **kw):
    return await handle_batch(
        recs, pool=pool, patterns=patterns.current, masker=SecretMasker(), partitions=PartitionCache(), **kw
    )


async def test_ecs_event_lands_with_every_column(pool, patterns):
    result = await ingest(pool, patterns, records([ecs_event()]))
    assert result.counts.new_rows == 1 and not result.dead_letters
    row = await pool.fetchrow("SELECT * FROM error_logs")
    msg = "CrashLoopBackOff: back-off restarting failed container in pod api-7d9f"
    fp = fingerprint("kubernetes", msg, "template")
    assert row["timestamp"] == datetime(2024, 5, 1, 10, 15, 30, 123000)
    assert row["error_type"] == "kubernetes"  # the pattern's category, not the ECS type
    assert row["error_message"] == msg
    assert row["source_system"] == "checkout"
    assert row["severity"] == "ERROR"
    assert row["stack_trace"].startswith("io.k8s.PodError: boom\n\tat io.k8s.Pod.run")
    assert row["elasticsearch_id"] == "ecs-event-0001"
    assert row["raw_log_data"]["kubernetes"]["pod"]["name"] == "api-7d9f"
    assert row["hash_signature"] == fp.hash and len(fp.hash) == 64
    assert row["fingerprint_version"] == "template"
    assert row["fingerprint_template"] == fp.template
    assert row["pattern_id"] == 1
    assert row["occurrence_count"] == 1
    assert row["last_seen_at"] == row["timestamp"]
    occ = await pool.fetchrow("SELECT * FROM error_occurrences")
    assert (occ["event_identity"], occ["hash_signature"], occ["source_topic"], occ["source_offset"]) == (
        "ecs-event-0001",
        fp.hash,
        "raw",
        0,
    )
    [event] = result.events
    assert event.error_log_id == row["id"] and event.first_seen and event.new_occurrences == 1
    assert event.pattern is not None and event.pattern.name == "Pod CrashLoopBackOff" and event.pattern.auto_resolve
    assert (event.context.namespace, event.context.pod, event.context.deployment) == ("shop", "api-7d9f", "api")
    assert event.trigger_event_id == "ecs-event-0001" and event.replay is False


async def test_flat_dotted_ecs_keys_are_read(pool, patterns):
    flat = {
        "@timestamp": "2024-05-01T10:00:00Z",
        "message": "disk quota exceeded on volume 7",
        "log.level": "critical",
        "error.type": "QuotaError",
        "kubernetes.namespace": "infra",
        "kubernetes.deployment.name": "uploader",
    }
    await ingest(pool, patterns, records([flat]))
    row = await pool.fetchrow("SELECT * FROM error_logs")
    assert (row["severity"], row["error_type"], row["source_system"]) == ("CRITICAL", "QuotaError", "infra/uploader")


async def test_legacy_event_lands_with_every_column(pool, patterns):
    result = await ingest(pool, patterns, records([legacy_event()]))
    row = await pool.fetchrow("SELECT * FROM error_logs")
    assert row["timestamp"] == datetime(2024, 5, 2, 8, 0)
    assert row["error_type"] == "network"
    assert row["error_message"] == "Request failed: Connection refused to db port 5432\njava.net.ConnectException: Connection refused"
    assert row["stack_trace"].startswith("java.net.ConnectException: Connection refused\n\tat java.net.PlainSocketImpl")
    assert row["source_system"] == "web-01.example.org"
    assert row["severity"] == "ERROR"  # SEVERE
    assert row["elasticsearch_id"] is None
    assert row["raw_log_data"]["path"] == "/var/log/app/app.log"
    assert row["pattern_id"] == 3
    occ = await pool.fetchval("SELECT event_identity FROM error_occurrences")
    assert len(occ) == 64  # no id in the event: the SHA-256 of the record bytes
    assert result.events[0].context.path == "/var/log/app/app.log"


@pytest.mark.parametrize(
    ("message", "category", "pattern_id"),
    [
        ("CrashLoopBackOff for pod web-1", "kubernetes", 1),
        ("java.lang.OutOfMemoryError: OutOfMemory in heap", "resource", 2),
        ("container OOMKilled by kernel", "resource", 2),
        ("Connection refused while connecting to port 9200", "network", 3),
    ],
)
async def test_document_sample_patterns_classify(pool, patterns, message, category, pattern_id):
    await ingest(pool, patterns, records([{"message": message, "level": "error"}]))
    row = await pool.fetchrow("SELECT error_type, pattern_id FROM error_logs")
    assert (row["error_type"], row["pattern_id"]) == (category, pattern_id)


async def test_priority_decides_between_two_matching_patterns(pool, patterns):
    # Matches both "Out of Memory" (priority 2) and "Connection Refused" (priority 3).
    message = "OOMKilled after Connection refused on port 80"
    await ingest(pool, patterns, records([{"message": message, "level": "error"}]))
    assert await pool.fetchval("SELECT error_type FROM error_logs") == "resource"
    await pool.execute(
        "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category, priority) "
        "VALUES ('refused first', 'Connection refused', 'urgent-network', 1)"
    )
    await patterns.refresh()
    await ingest(pool, patterns, records([{"message": message + " again", "level": "error"}], start=1))
    assert await pool.fetchval("SELECT error_type FROM error_logs ORDER BY id DESC LIMIT 1") == "urgent-network"


async def test_unmatched_error_uses_ecs_type_else_unclassified(pool, patterns):
    events = [
        {"message": "widget exploded", "log": {"level": "error"}, "error": {"type": "WidgetError"}},
        {"message": "gadget melted", "level": "fatal"},
    ]
    result = await ingest(pool, patterns, records(events))
    rows = await pool.fetch("SELECT error_type, severity, pattern_id FROM error_logs ORDER BY error_type")
    assert [tuple(r) for r in rows] == [("WidgetError", "ERROR", None), ("unclassified", "FATAL", None)]
    assert all(e.pattern is None for e in result.events)


async def test_non_errors_are_skipped_unless_a_pattern_matches(pool, patterns):
    events = [
        {"message": "user logged in", "level": "info"},
        {"message": "slow request", "log": {"level": "warn"}},
        {"message": "pod CrashLoopBackOff seen for pod x", "level": "warn"},  # pattern: kept
    ]
    result = await ingest(pool, patterns, records(events))
    assert result.counts.skipped == 2 and result.counts.errors == 1
    # Stored with its own level, never raised to ERROR, and not sent on to analysis.
    assert await pool.fetchval("SELECT severity FROM error_logs") == "WARNING"
    assert result.events == []


async def test_a_debug_line_matching_a_pattern_stays_debug_and_is_never_remediated(pool, patterns):
    debug = ecs_event("pod CrashLoopBackOff seen for pod payments-api", log={"level": "debug"},
                      event={"hash": "dbg-1"}, kubernetes={"namespace": "sandbox"})
    result = await ingest(pool, patterns, records([debug]))
    row = await pool.fetchrow("SELECT severity, occurrence_count, last_actionable_at FROM error_logs")
    assert dict(row) == {"severity": "DEBUG", "occurrence_count": 1, "last_actionable_at": None}
    assert result.events == [] and result.counts.errors == 1
    # The same error at ERROR later: the row's severity rises, that event goes on to analysis.
    error = ecs_event("pod CrashLoopBackOff seen for pod payments-api", event={"hash": "err-1"},
                      **{"@timestamp": "2024-05-01T10:16:00Z"})
    again = await ingest(pool, patterns, records([debug, error]))
    assert [e.trigger_event_id for e in again.events] == ["err-1"] and not again.events[0].replay
    row = await pool.fetchrow("SELECT severity, occurrence_count, last_actionable_at FROM error_logs")
    assert dict(row) == {"severity": "ERROR", "occurrence_count": 2, "last_actionable_at": datetime(2024, 5, 1, 10, 16)}
    # A later debug line never lowers it again.
    await ingest(pool, patterns, records([ecs_event("pod CrashLoopBackOff seen for pod payments-api",
                                                    log={"level": "debug"}, event={"hash": "dbg-2"})]))
    assert await pool.fetchval("SELECT severity FROM error_logs") == "ERROR"


async def test_history_headers_are_stored_and_never_actionable(pool, patterns):
    from elk_resolver.events.logstash_event import HISTORY_EXECUTE_HEADER, HISTORY_HEADER

    def rec(event, *headers):
        return RawRecord(orjson.dumps(event), "raw", 0, 0, 1714550000000, headers=list(headers))

    old = ecs_event(event={"hash": "bf-1"})
    result = await ingest(pool, patterns, [rec(old, (HISTORY_HEADER, b"backfill"))])
    [event] = result.events
    assert event.replay and event.history == "backfill" and event.trigger_event_id == "bf-1"
    assert await pool.fetchval("SELECT history FROM error_occurrences WHERE event_identity = 'bf-1'") == "backfill"
    assert await pool.fetchval("SELECT last_actionable_at FROM error_logs") is None
    # A live event of the same error in the same batch as history: the live one is the trigger.
    live = ecs_event(event={"hash": "live-1"}, **{"@timestamp": "2024-05-01T09:00:00Z"})
    newer = ecs_event(event={"hash": "bf-2"}, **{"@timestamp": "2024-05-01T11:00:00Z"})
    result = await ingest(pool, patterns, [rec(newer, (HISTORY_HEADER, b"backfill")), rec(live)])
    [event] = result.events
    assert (event.trigger_event_id, event.replay, event.history) == ("live-1", False, None)
    assert event.event_time == datetime(2024, 5, 1, 9, 0)
    assert await pool.fetchval("SELECT last_actionable_at FROM error_logs") == datetime(2024, 5, 1, 9, 0)
    # The operator asked (backfill-es --execute): still marked, but actionable.
    asked = ecs_event(event={"hash": "bf-3"}, **{"@timestamp": "2024-05-01T12:00:00Z"})
    result = await ingest(pool, patterns, [rec(asked, (HISTORY_HEADER, b"backfill"), (HISTORY_EXECUTE_HEADER, b"true"))])
    [event] = result.events
    assert (event.replay, event.history) == (False, "backfill")
    marks = await pool.fetch("SELECT event_identity, history FROM error_occurrences ORDER BY event_identity")
    assert [tuple(r) for r in marks] == [("bf-1", "backfill"), ("bf-2", "backfill"), ("bf-3", "backfill"), ("live-1", None)]


async def test_duplicates_collapse_and_replayed_batch_does_not_double_count(pool, patterns):
    events = [
        {"@timestamp": f"2024-05-01T10:00:{i % 60:02d}Z", "message": f"timeout talking to shard {i % 5}-x",
         "level": "error", "event": {"hash": f"id-{i}"}, "error": {"type": f"T{i % 5}"}}
        for i in range(200)
    ]
    first = await ingest(pool, patterns, records(events))
    assert len(first.events) == 5 and first.counts.new_occurrences == 200
    counts = await pool.fetch("SELECT error_type, occurrence_count FROM error_logs ORDER BY error_type")
    assert [tuple(r) for r in counts] == [(f"T{i}", 40) for i in range(5)]
    again = await ingest(pool, patterns, records(events), replay=True)
    assert [tuple(r) for r in await pool.fetch("SELECT error_type, occurrence_count FROM error_logs ORDER BY error_type")] == [
        (f"T{i}", 40) for i in range(5)
    ]
    # Published again (a lost publish is repaired by redelivery), marked as nothing new.
    assert len(again.events) == 5
    assert all(e.new_occurrences == 0 and not e.first_seen and e.replay for e in again.events)
    assert {e.error_log_id for e in again.events} == {e.error_log_id for e in first.events}


async def test_repeat_keeps_first_row_and_moves_last_seen(pool, patterns):
    a = {"@timestamp": "2024-05-01T10:00:00Z", "message": "db down", "level": "error", "event": {"hash": "a"}}
    b = {"@timestamp": "2024-06-03T10:00:00Z", "message": "db down", "level": "error", "event": {"hash": "b"},
         "service": {"name": "other"}}
    await ingest(pool, patterns, records([a]))
    first = await pool.fetchrow("SELECT * FROM error_logs")
    await ingest(pool, patterns, records([b], start=1))
    row = await pool.fetchrow("SELECT * FROM error_logs")
    assert row["id"] == first["id"] and row["source_system"] == first["source_system"]
    assert row["occurrence_count"] == 2 and row["last_seen_at"] == datetime(2024, 6, 3, 10)
    parts = await pool.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'error_occurrences'::regclass")
    assert parts >= 2  # May and June 2024 were created on demand


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"this is not json", "not_json"),
        (b"[1, 2, 3]", "not_object"),
        (b'{"level": "error", "host": "x"}', "no_message"),
        (b'{"message": "' + b"x" * 2000 + b'"}', "too_large"),
        (b'{"message": "bad \xff\xfe bytes"}', "invalid_utf8"),
    ],
)
async def test_bad_record_becomes_a_dead_letter_and_good_ones_around_it_are_stored(pool, patterns, value, reason):
    recs = records([{"message": "before", "level": "error"}, value, {"message": "after", "level": "error"}], partition=3)
    result = await handle_batch(
        recs, pool=pool, patterns=patterns.current, masker=SecretMasker(), config=IngestConfig(max_record_bytes=1024)
    )
    [dead] = result.dead_letters
    assert (dead.reason, dead.topic, dead.partition, dead.offset) == (reason, "raw", 3, 1)
    assert dead.value == value
    assert {r["error_message"] for r in await pool.fetch("SELECT error_message FROM error_logs")} == {"before", "after"}


async def test_planted_secret_is_stored_nowhere(pool, patterns):
    event = ecs_event(
        message=f"login failed password={SECRET} for jdbc:postgresql://app:{SECRET}@db:5432/x",
        extra_field={"api_key": SECRET, "note": f"Authorization: Bearer {SECRET}"},
    )
    event["error"]["stack_trace"] = f"AuthError: token={SECRET}\n\tat a.b.C.d(C.java:1)"
    event["event"]["original"] = f"password={SECRET}"
    result = await ingest(pool, patterns, records([event]))
    dump = await pool.fetchval("SELECT row_to_json(e)::text FROM error_logs e")
    occ = await pool.fetchval("SELECT string_agg(row_to_json(o)::text, '') FROM error_occurrences o")
    assert SECRET not in dump and SECRET not in occ and "***" in dump
    for ev in result.events:
        assert SECRET not in ev.model_dump_json()


async def test_nul_characters_are_removed_not_fatal(pool, patterns):
    await ingest(pool, patterns, records([{"message": "bad\u0000byte", "level": "error", "x": "\u0000"}]))
    assert await pool.fetchval("SELECT error_message FROM error_logs") == "badbyte"


async def test_pathological_pattern_does_not_stall(pool, patterns):
    await pool.execute(
        "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category, priority) "
        "VALUES ('evil', '(a+)+$', 'evil', 1), ('broken', '(unclosed', 'broken', 1)"
    )
    await patterns.refresh()
    assert len(patterns.current.invalid) == 1  # the unclosed group, skipped not fatal
    long = "a" * 50_000 + "!"  # catastrophic for a backtracking engine
    started = time.perf_counter()
    await ingest(pool, patterns, records([{"message": long, "level": "error"}, {"message": "a" * 30, "level": "info"}]))
    assert time.perf_counter() - started < 5
    types = {r["error_type"] for r in await pool.fetch("SELECT error_type FROM error_logs")}
    assert types == {"unclassified", "evil"}


async def test_encoded_events_are_the_analysis_event_contract(pool, patterns):
    from elk_resolver.events.contracts import AnalysisEvent
    from handlers.ingest import StoredBatch, build_events, encode_events, prepare_batch

    batch = prepare_batch(
        records([ecs_event(), legacy_event(), {"message": "plain", "level": "error"}]),
        patterns=patterns.current,
        masker=SecretMasker(),
    )
    stored = StoredBatch({h: (i + 1, i % 2 == 0, i) for i, h in enumerate(batch.errors)}, [])
    built = build_events(batch, stored, replay=True)
    encoded = encode_events(batch, stored, replay=True)
    assert [h for h, _ in encoded] == [e.hash_signature for e in built]
    assert [AnalysisEvent.model_validate_json(v) for _, v in encoded] == built
    assert [set(orjson.loads(v)) for _, v in encoded] == [set(e.model_dump()) for e in built]


async def test_one_analysis_event_per_error_and_workload(pool, patterns):
    """Issue 10: the same error from three workloads in one batch is three analysis events, each
    with its own workload (events that name only the deployment too); many pods of one
    deployment are one."""
    message = 'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space'
    events = [
        ecs_event(message, event={"hash": "a"}, kubernetes={"namespace": "payments", "deployment": {"name": "billing"}}),
        ecs_event(message, event={"hash": "b"}, kubernetes={"namespace": "payments", "deployment": {"name": "api"}}),
        ecs_event(message, event={"hash": "c"}, kubernetes={"namespace": "dev", "deployment": {"name": "toy"}}),
        ecs_event(message, event={"hash": "d"}, kubernetes={"namespace": "payments", "pod": {"name": "api-7d9c8b6f5-x2kzq"}}),
        ecs_event(message, event={"hash": "e"}, kubernetes={"namespace": "payments", "pod": {"name": "api-bcdfghjkl-zxvbn"}}),
    ]
    result = await ingest(pool, patterns, records(events))
    assert len({e.hash_signature for e in result.events}) == 1
    got = sorted((e.context.namespace, e.context.deployment or e.context.pod, e.occurrences_in_batch) for e in result.events)
    # each event carries its trigger's own object: the newest event of payments/api is a pod's
    assert got == [("dev", "toy", 1), ("payments", "api-bcdfghjkl-zxvbn", 3), ("payments", "billing", 1)]
    assert {e.trigger_event_id for e in result.events} == {"a", "c", "e"}


async def test_an_event_from_a_clock_years_ahead_is_stored_at_its_kafka_time(pool, patterns):
    """The database creates no partition more than a month ahead (migrations 0080, 0090, 0095):
    a far-future @timestamp is not believed, the event is stored at the record's Kafka timestamp,
    and the batch lands."""
    future = ecs_event(event={"hash": "future-1"}, **{"@timestamp": "2150-05-01T10:00:00Z"})
    result = await ingest(pool, patterns, records([future]))
    assert result.counts.new_rows == 1 and not result.dead_letters
    assert await pool.fetchval("SELECT timestamp FROM error_logs") == datetime.utcfromtimestamp(RECEIVED_MS / 1000)
    assert await pool.fetchval("SELECT to_regclass('error_occurrences_y2150m05')") is None
