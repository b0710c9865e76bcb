import hashlib
from datetime import datetime

import orjson
import pytest

from elk_resolver.events.logstash_event import (
    BadRecord,
    get_path,
    parse_record,
    severity_of,
    split_stack_trace,
)

JAVA_TRACE = (
    "java.lang.IllegalStateException: Failed to reserve inventory\n"
    "\tat com.acme.orders.InventoryClient.reserve(InventoryClient.java:87)\n"
    "\tat com.acme.orders.OrderService.place(OrderService.java:42)\n"
    "Caused by: java.net.ConnectException: Connection refused\n"
    "\tat java.base/sun.nio.ch.Net.pollConnect(Native Method)\n"
    "\t... 12 more"
)

ECS_NESTED = {
    "@timestamp": "2024-05-14T09:31:22.418Z",
    "@version": "1",
    "message": "Failed to place order 48213",
    "log": {"level": "ERROR", "logger": "com.acme.orders.OrderService", "file": {"path": "/var/log/orders.log"}},
    "error": {
        "type": "java.lang.IllegalStateException",
        "message": "Failed to reserve inventory",
        "stack_trace": JAVA_TRACE,
    },
    "service": {"name": "order-service"},
    "host": {"name": "ip-10-0-3-17"},
    "kubernetes": {
        "namespace": "shop",
        "pod": {"name": "order-service-7d9f8c6b5-xk2lp"},
        "container": {"name": "app"},
        "deployment": {"name": "order-service"},
    },
    "event": {"original": "raw line", "hash": "f3a1c9e0b2"},
}


def record(obj) -> bytes:
    return orjson.dumps(obj)


def test_ecs_nested_record():
    ev = parse_record(record(ECS_NESTED))
    assert ev.timestamp == datetime(2024, 5, 14, 9, 31, 22, 418000)
    assert ev.timestamp.tzinfo is None  # naive UTC, for a TIMESTAMP column
    assert ev.message == "Failed to reserve inventory"  # error.message wins over message
    assert ev.stack_trace == JAVA_TRACE
    assert ev.level_raw == "ERROR"
    assert ev.severity == "ERROR"
    assert ev.error_type_ecs == "java.lang.IllegalStateException"
    assert ev.source_system == "order-service"
    assert ev.elasticsearch_id == "f3a1c9e0b2"
    assert ev.event_identity == "f3a1c9e0b2"
    assert ev.context == {
        "namespace": "shop",
        "pod": "order-service-7d9f8c6b5-xk2lp",
        "container": "app",
        "deployment": "order-service",
        "service": "order-service",
        "host": "ip-10-0-3-17",
        "file": "/var/log/orders.log",
    }
    assert ev.raw == ECS_NESTED


def test_ecs_flat_dotted_and_mixed_keys():
    obj = {
        "@timestamp": "2024-05-14T18:31:22.418+09:00",
        "message": "Elasticsearch rejected bulk: index [logs-2024.05.14] blocked by: [FORBIDDEN/12/index read-only]",
        "log.level": "critical",
        "error.type": "ClusterBlockException",
        "kubernetes.namespace": "elk-stack",
        "kubernetes": {"pod.name": "logstash-0", "deployment.name": "logstash"},
        "host.hostname": "node-3",
    }
    ev = parse_record(record(obj))
    assert ev.timestamp == datetime(2024, 5, 14, 9, 31, 22, 418000)
    assert ev.severity == "CRITICAL"
    assert ev.error_type_ecs == "ClusterBlockException"
    assert ev.stack_trace is None
    assert ev.source_system == "elk-stack/logstash"
    assert ev.context["pod"] == "logstash-0"
    assert ev.context["host"] == "node-3"
    assert ev.context["index"] == "logs-2024.05.14"  # found in the message


def test_legacy_record_with_java_trace_in_message():
    obj = {
        "@timestamp": "2024-05-14T09:31:22.000Z",
        "@version": "1",
        "host": "web-01",
        "path": "/var/log/app/app.log",
        "level": "SEVERE",
        "message": "2024-05-14 09:31:22 SEVERE [main] OrderService - order 48213 failed\n" + JAVA_TRACE + "\n",
    }
    ev = parse_record(record(obj))
    assert ev.message == (
        "2024-05-14 09:31:22 SEVERE [main] OrderService - order 48213 failed\n"
        "java.lang.IllegalStateException: Failed to reserve inventory"
    )
    assert ev.stack_trace == JAVA_TRACE
    assert ev.severity == "ERROR"
    assert ev.level_raw == "SEVERE"
    assert ev.error_type_ecs is None
    assert ev.source_system == "web-01"
    assert ev.context == {"host": "web-01", "file": "/var/log/app/app.log"}


def test_python_traceback_is_split_out():
    trace = (
        "Traceback (most recent call last):\n"
        '  File "/app/worker.py", line 12, in run\n'
        "    conn = connect(dsn)\n"
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )
    ev = parse_record(record({"message": f"job 7 failed\n{trace}", "level": "error"}))
    assert ev.message == "job 7 failed"
    assert ev.stack_trace == trace
    # a message that is only a traceback keeps its last line as the message
    ev = parse_record(record({"message": trace, "level": "error"}))
    assert ev.message == "ConnectionRefusedError: [Errno 111] Connection refused"
    assert ev.stack_trace == trace


def test_go_panic_is_split_out():
    text = (
        "panic: runtime error: invalid memory address or nil pointer dereference\n\n"
        "goroutine 1 [running]:\nmain.main()\n\t/app/main.go:12 +0x1d\nexit status 2"
    )
    message, trace = split_stack_trace(text)
    assert message == "panic: runtime error: invalid memory address or nil pointer dereference"
    assert trace.startswith("goroutine 1 [running]:") and trace.endswith("exit status 2")


def test_multi_line_message_without_trace_is_kept_whole():
    assert split_stack_trace("line one\nline two") == ("line one\nline two", None)


@pytest.mark.parametrize(
    ("value", "kwargs", "reason"),
    [
        (b"x" * 101, {"max_bytes": 100}, "too_large"),
        (b'{"message": "caf\xe9"}', {}, "invalid_utf8"),
        (b'{"message": ', {}, "not_json"),
        (b"plain text line", {}, "not_json"),
        (b'["message"]', {}, "not_object"),
        (b'"message"', {}, "not_object"),
        (b'{"@timestamp": "2024-05-14T09:31:22Z", "log": {"level": "error"}}', {}, "no_message"),
        (b'{"message": "   "}', {}, "no_message"),
    ],
)
def test_bad_records_carry_a_reason(value, kwargs, reason):
    with pytest.raises(BadRecord) as info:
        parse_record(value, **kwargs)
    assert info.value.reason == reason


def test_record_at_the_size_limit_is_accepted():
    value = record({"message": "x" * 50})
    assert parse_record(value, max_bytes=len(value)).message == "x" * 50


def test_event_original_is_the_last_resort_message():
    ev = parse_record(record({"event": {"original": "raw error line"}}))
    assert ev.message == "raw error line"


def test_ids_from_field_then_header_then_bytes_hash():
    with_field = record({"message": "m", "event": {"hash": "from-field"}})
    ev = parse_record(with_field, headers={"event_id": b"from-header"})
    assert (ev.elasticsearch_id, ev.event_identity) == ("from-field", "from-field")

    without_field = record({"message": "m"})
    ev = parse_record(without_field, headers={"event_id": b"from-header"})
    assert (ev.elasticsearch_id, ev.event_identity) == ("from-header", "from-header")

    ev = parse_record(without_field, headers=[("event_id", b"pairs-too")])
    assert ev.event_identity == "pairs-too"

    ev = parse_record(without_field)
    assert ev.elasticsearch_id is None
    assert ev.event_identity == hashlib.sha256(without_field).hexdigest()


def test_id_field_and_header_are_configurable_and_id_is_truncated():
    value = record({"message": "m", "fingerprint": {"id": "z" * 150}})
    ev = parse_record(value, id_field="fingerprint.id")
    assert ev.elasticsearch_id == "z" * 100
    assert ev.event_identity == "z" * 150
    ev = parse_record(record({"message": "m"}), headers={"doc": b"abc"}, id_header="doc")
    assert ev.elasticsearch_id == "abc"


@pytest.mark.parametrize(
    ("level", "severity"),
    [
        ("fatal", "FATAL"), ("FATAL", "FATAL"), ("emerg", "FATAL"), ("Emergency", "FATAL"),
        ("alert", "FATAL"), ("panic", "FATAL"), ("crit", "CRITICAL"), ("CRITICAL", "CRITICAL"),
        ("err", "ERROR"), ("Error", "ERROR"), (" error ", "ERROR"), ("SEVERE", "ERROR"),
        ("warn", None), ("warning", None), ("info", None), ("debug", None), ("trace", None),
        (0, "FATAL"), (1, "FATAL"), (2, "CRITICAL"), (3, "ERROR"), (4, None), (7, None),
        ("3", "ERROR"), ("6", None), (True, None), (None, None), ({"x": 1}, None),
    ],
)
def test_severity_mapping(level, severity):
    assert severity_of(level) == severity


def test_syslog_code_is_a_level_fallback():
    ev = parse_record(record({"message": "m", "log": {"syslog": {"severity": {"code": 2}}}}))
    assert (ev.level_raw, ev.severity) == ("2", "CRITICAL")


@pytest.mark.parametrize(
    ("fields", "source"),
    [
        ({"service.name": "svc", "kubernetes.namespace": "ns", "kubernetes.deployment.name": "dep", "host.name": "h"}, "svc"),
        ({"kubernetes.namespace": "ns", "kubernetes.deployment.name": "dep", "host.name": "h"}, "ns/dep"),
        ({"kubernetes.namespace": "ns", "host.name": "h"}, "ns"),
        ({"service": {"name": "  "}, "host": {"hostname": "h2"}}, "h2"),
        ({"host.name": "h"}, "h"),
        ({"host": "legacy-host"}, "legacy-host"),
        ({}, "unknown"),
        ({"service.name": "s" * 80}, "s" * 50),
    ],
)
def test_source_system_preference_and_truncation(fields, source):
    ev = parse_record(record({"message": "m", **fields}))
    assert ev.source_system == source


def test_index_context_from_fields_and_message():
    ev = parse_record(record({"message": "m", "elasticsearch": {"index": "logs-a"}}))
    assert ev.context["index"] == "logs-a"
    ev = parse_record(record({"message": "[logs-b/Zq3hJ0l4QFe2x9Q1R5sWkA] shard failed"}))
    assert ev.context["index"] == "logs-b"


def test_missing_or_odd_timestamps():
    assert parse_record(record({"message": "m", "@timestamp": 1715679082418})).timestamp == datetime(
        2024, 5, 14, 9, 31, 22, 418000
    )
    ts = parse_record(record({"message": "m", "@timestamp": "not a time"})).timestamp
    assert ts.tzinfo is None and ts.year >= 2024


def test_get_path_nested_flat_and_mixed():
    obj = {
        "a": {"b": {"c": 1}},
        "x.y.z": 2,
        "k": {"pod.name": "p", "ns": {"deep.er": 3}},
        "only.flat": {"inner": 4},
        "m": {"n": "not a dict"},
        "m.n.o": 5,
    }
    assert get_path(obj, "a.b.c") == 1
    assert get_path(obj, "x.y.z") == 2
    assert get_path(obj, "k.pod.name") == "p"
    assert get_path(obj, "k.ns.deep.er") == 3
    assert get_path(obj, "only.flat.inner") == 4
    assert get_path(obj, "m.n.o") == 5  # nested path dead-ends, the flat key answers
    assert get_path(obj, "a.b.missing") is None
    assert get_path(obj, "a.b.missing", "d") == "d"
    assert get_path("not a dict", "a") is None


def test_the_flat_view_reads_what_get_path_reads_on_mixed_shapes():
    """parse_record looks fields up in a flat view of the paths it reads (walking nothing
    else); on every mix of nested objects, dotted keys and clashes it must read what
    get_path reads."""
    import random

    import orjson

    from bench.events import generate
    from elk_resolver.events.logstash_event import _context, get_path, parse_record

    rng = random.Random(5)

    def reshape(obj):
        out = {}
        for k, v in obj.items():
            if isinstance(v, dict) and rng.random() < 0.4:
                for k2, v2 in reshape(v).items():
                    out[f"{k}.{k2}"] = v2
            else:
                out[k] = reshape(v) if isinstance(v, dict) else v
        return out

    for value in generate(3000, seed=3).records:
        raw = reshape(orjson.loads(value))
        if rng.random() < 0.3:
            raw["kubernetes.pod.name"] = "clash"
        if rng.random() < 0.2:
            raw["kubernetes"] = {"labels": {"a": "1"}, "namespace": {"name": "x"}, "pod.name": "p"}
        if rng.random() < 0.1:
            raw["log.level"] = "warn"
        ev = parse_record(orjson.dumps(raw))
        assert ev.context == _context(raw, ev.message), raw
        level = get_path(raw, "log.level")
        if isinstance(level, str):
            assert ev.level_raw == level, raw


def test_every_path_parse_record_looks_up_is_in_its_flat_view():
    """The flat view holds only the paths listed for it: a lookup added to parse_record and
    not listed would read nothing, silently."""
    import inspect
    import re

    from elk_resolver.events.logstash_event import _read_paths, parse_record

    wanted, _ = _read_paths("event.hash")
    looked_up = set(re.findall(r"""(?<![.\w])get\(\s*["']([^"']+)["']""", inspect.getsource(parse_record)))
    assert looked_up, "the test no longer sees parse_record's lookups"
    assert looked_up <= wanted, looked_up - wanted
