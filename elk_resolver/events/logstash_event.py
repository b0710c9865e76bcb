"""One Kafka record value, as Logstash's kafka output writes it with ``codec => json``.

Both shapes are read: ECS (Logstash 8 default: nested objects, or flat dotted keys such as
``"log.level": "error"`` from ECS loggers, or a mix) and legacy (``host`` as a string,
``path``, a free-form ``level``, a multi-line ``message`` with the stack trace inside).

:func:`parse_record` is pure and allocation-light: the ingest handler calls it on the hot
path. It never masks: ``ParsedEvent.raw`` is the decoded object, and the caller masks it
before storing or publishing anything.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import orjson

__all__ = [
    "DEFAULT_MAX_BYTES",
    "BadRecord",
    "ParsedEvent",
    "HISTORY_HEADER",
    "HISTORY_EXECUTE_HEADER",
    "get_path",
    "history_mark",
    "level_name",
    "parse_record",
    "severity_of",
    "split_stack_trace",
]

DEFAULT_MAX_BYTES = 1_048_576
SOURCE_SYSTEM_MAX = 50  # error_logs.source_system VARCHAR(50)
ELASTICSEARCH_ID_MAX = 100  # error_logs.elasticsearch_id VARCHAR(100)


class BadRecord(Exception):
    """A record that cannot become an event. ``reason`` is one of ``too_large``,
    ``invalid_utf8``, ``not_json``, ``not_object``, ``no_message`` (a DLQ header value)."""

    REASONS = frozenset({"too_large", "invalid_utf8", "not_json", "not_object", "no_message"})

    def __init__(self, reason: str, detail: str = "") -> None:
        assert reason in self.REASONS, reason
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(slots=True)
class ParsedEvent:
    """(Not frozen: a frozen dataclass sets each of its fields through ``object.__setattr__``,
    which costs more than the rest of its construction, once per record. Nothing changes one.)"""

    timestamp: datetime
    """Event time from ``@timestamp``, as a *naive* datetime in UTC (the ``error_logs``
    column is ``TIMESTAMP`` without time zone). Missing or unreadable: the parse time."""
    message: str
    """The error message without the stack trace."""
    stack_trace: str | None
    level_raw: str | None
    severity: str | None
    """``FATAL``, ``CRITICAL``, ``ERROR``, or ``None``: not an error by its level."""
    error_type_ecs: str | None
    source_system: str
    elasticsearch_id: str | None
    event_identity: str
    """Same for every delivery of the same Logstash event: count occurrences idempotently."""
    context: dict[str, str]
    raw: dict[str, Any]
    """The decoded record, unmasked."""
    event_time: datetime | None = None
    """``timestamp`` when ``@timestamp`` was readable and plausible (see
    :data:`EARLIEST_EVENT_TIME`), else ``None``: the caller then uses a time that is the
    same on every delivery (the record's Kafka timestamp), never the parse time."""


# --- dotted paths --------------------------------------------------------------------------

_MISSING: Any = object()


@lru_cache(maxsize=256)
def _compile_path(path: str) -> tuple[tuple[str, ...], tuple[tuple[tuple[int, str], ...], ...]]:
    parts = tuple(path.split("."))
    n = len(parts)
    # for each start i: the flat keys joining parts[i:j] for j = n .. i+2 (longest first)
    joined = tuple(tuple((j, ".".join(parts[i:j])) for j in range(n, i + 1, -1)) for i in range(n))
    return parts, joined


def _lookup(obj: Any, parts: tuple[str, ...], joined: tuple[tuple[tuple[int, str], ...], ...], i: int) -> Any:
    if not isinstance(obj, dict):
        return _MISSING
    v = obj.get(parts[i], _MISSING)
    if v is not _MISSING:
        if i + 1 == len(parts):
            return v
        found = _lookup(v, parts, joined, i + 1)
        if found is not _MISSING:
            return found
    for j, key in joined[i]:
        v = obj.get(key, _MISSING)
        if v is not _MISSING:
            if j == len(parts):
                return v
            found = _lookup(v, parts, joined, j)
            if found is not _MISSING:
                return found
    return _MISSING


def get_path(obj: Any, path: str, default: Any = None) -> Any:
    """The value at dotted ``path``, whether ``obj`` nests it (``{"log": {"level": ..}}``),
    holds it as a flat dotted key (``{"log.level": ..}``) or mixes both
    (``{"kubernetes": {"pod.name": ..}}``). Nested wins over flat when both exist."""
    parts, joined = _compile_path(path)
    found = _lookup(obj, parts, joined, 0)
    return default if found is _MISSING else found


def _flat_view(raw: dict[str, Any], paths: tuple[frozenset[str], frozenset[str]]) -> dict[str, Any] | None:
    """The paths :func:`parse_record` reads -> their values, built in one pass, so each field
    lookup is one ``dict.get``. ``paths`` is ``(wanted, prefixes)``: the paths looked up and
    their proper prefixes (``kubernetes``, ``kubernetes.pod``); only those are walked, the
    rest of the event (``agent``, ``kubernetes.labels``...) is never visited. ``None`` when two
    routes reach one wanted path (for example ``{"log": {"level": ..}, "log.level": ..}``):
    there :func:`get_path`'s precedence rule decides. Otherwise each wanted path has at most
    one route, which :func:`get_path` (an exhaustive search over the routes) would return too."""
    flat: dict[str, Any] = {}
    wanted, prefixes = paths
    return flat if _flatten_wanted(flat, "", raw, wanted, prefixes) else None


def _flatten_wanted(flat: dict[str, Any], prefix: str, obj: dict[str, Any], wanted: frozenset[str],
                    prefixes: frozenset[str]) -> bool:  # fmt: skip
    for k, v in obj.items():
        key = prefix + k if prefix else k
        if key in wanted:
            if key in flat:
                return False  # two routes to one wanted path: let _lookup decide
            flat[key] = v
        if key in prefixes and type(v) is dict and not _flatten_wanted(flat, key + ".", v, wanted, prefixes):
            return False
    return True


def _first_str(obj: Any, *paths: str) -> str | None:
    for path in paths:
        v = get_path(obj, path)
        if isinstance(v, str):
            v = v.strip()
            if v:
                return v
    return None


def _text(v: Any) -> str | None:
    """A message-like field: a string, or a list of strings (Logstash merges into arrays)."""
    if isinstance(v, str):
        return v
    if isinstance(v, list) and v and all(isinstance(x, str) for x in v):
        return "\n".join(v)
    return None


# --- severity ------------------------------------------------------------------------------

_SEVERITY = {
    "fatal": "FATAL",
    "emerg": "FATAL",
    "emergency": "FATAL",
    "alert": "FATAL",
    "panic": "FATAL",
    "crit": "CRITICAL",
    "critical": "CRITICAL",
    "err": "ERROR",
    "error": "ERROR",
    "severe": "ERROR",
}
# syslog numeric severities (RFC 5424): 0 emergency, 1 alert, 2 critical, 3 error
_SYSLOG_SEVERITY = {0: "FATAL", 1: "FATAL", 2: "CRITICAL", 3: "ERROR"}


# Levels below ERROR, by the name stored in ``error_logs.severity`` (the line's own level: a
# pattern match never raises it, see handlers/ingest.py).
_LOW_LEVELS = {
    "warn": "WARNING", "warning": "WARNING", "notice": "NOTICE",
    "info": "INFO", "information": "INFO", "informational": "INFO", "config": "INFO",
    "debug": "DEBUG", "fine": "DEBUG", "verbose": "DEBUG",
    "trace": "TRACE", "finer": "TRACE", "finest": "TRACE",
}  # fmt: skip
_SYSLOG_LOW = {4: "WARNING", 5: "NOTICE", 6: "INFO", 7: "DEBUG"}
SEVERITY_RANK = {"TRACE": 0, "DEBUG": 1, "INFO": 2, "NOTICE": 3, "WARNING": 4, "ERROR": 5, "CRITICAL": 6, "FATAL": 7}
ERROR_RANK = SEVERITY_RANK["ERROR"]


def level_name(level_raw: str) -> str:
    """The stored severity of a line whose level is below ERROR (``WARNING``, ``INFO``,
    ``DEBUG``...); an unknown level keeps its own name, upper-cased (20 characters max)."""
    key = level_raw.strip().lower()
    if key.isdigit():
        return _SYSLOG_LOW.get(int(key), key)
    return _LOW_LEVELS.get(key) or key.upper()[:20] or "UNKNOWN"


def severity_of(level: Any) -> str | None:
    """Map a log level (string, any case, or a syslog number 0-7) to the ``error_logs``
    severity; ``None`` for levels that are not errors (warn, info, debug...)."""
    if isinstance(level, bool):
        return None
    if isinstance(level, int):
        return _SYSLOG_SEVERITY.get(level)
    if isinstance(level, str):
        key = level.strip().lower()
        hit = _SEVERITY.get(key)
        if hit is None and key.isdigit():
            return _SYSLOG_SEVERITY.get(int(key))
        return hit
    return None


# --- stack traces --------------------------------------------------------------------------

# The first line of each known trace shape. A Java trace is led by the exception line just
# above its first ``at`` frame, which the splitter includes.
_TRACE_START = re.compile(
    r"^(?:"
    r"(?P<java>[ \t]+at [\w$<>./-]+[.(]"  # java / kotlin / node frames
    r"|Caused by: )"
    r"|(?P<python>Traceback \(most recent call last\):)"
    r"|(?P<go>goroutine \d+ \[[^\]\n]*\]:)"
    r")",
    re.MULTILINE,
)


def split_stack_trace(text: str) -> tuple[str, str | None]:
    """Split a multi-line message into (message, stack trace). Recognises Java (``\\tat``
    frames, ``Caused by:``), Python (``Traceback (most recent call last):``) and Go
    (``goroutine N [running]:``). A Java trace keeps its exception line, which also stays
    the last line of the message; a message that *is* a Python traceback becomes its
    final line (``ValueError: ...``)."""
    if "\n" not in text:
        return text, None
    m = _TRACE_START.search(text)
    if m is None:
        return text, None
    start = m.start()
    if m.group("java") is not None and start > 0:
        # the exception line above the first frame belongs to the trace too
        prev = text.rfind("\n", 0, start - 1) + 1
        head = text[:start].rstrip()
        trace = text[prev:].rstrip()
    else:
        head = text[:start].rstrip()
        trace = text[start:].rstrip()
    if not head:
        last = trace.rstrip().rsplit("\n", 1)[-1].strip()
        head = last if m.group("python") is not None else trace.split("\n", 1)[0].strip()
    return head, trace


# --- context -------------------------------------------------------------------------------

_INDEX_IN_MESSAGE = re.compile(
    r"\bindex \[(?P<a>[^\]\s/]+)"  # "no such index [logs-x]", "index [logs-x] blocked by"
    r"|\[(?P<b>[a-z0-9][a-z0-9._+-]*)/[A-Za-z0-9_-]{20,22}\]"  # "[logs-x/Zq3...uuid]"
)
_CONTEXT_FIELDS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("namespace", ("kubernetes.namespace", "kubernetes.namespace.name", "kubernetes.namespace_name")),
    ("pod", ("kubernetes.pod.name", "kubernetes.pod_name")),
    ("container", ("kubernetes.container.name", "container.name", "kubernetes.container_name")),
    ("deployment", ("kubernetes.deployment.name",)),
    ("service", ("service.name",)),
    ("host", ("host.name", "host.hostname", "host")),
    ("index", ("elasticsearch.index", "index", "_index")),
    ("file", ("log.file.path", "file.path", "path")),
)


# The dotted paths parse_record looks up through its flat view (besides the context's; the
# top-level "message", "level" and "@timestamp" are read from the record itself).
_RECORD_PATHS = ("error.message", "event.original", "error.stack_trace", "log.level", "log.syslog.severity.code",
                 "error.type")  # fmt: skip


@lru_cache(maxsize=16)
def _read_paths(id_field: str) -> tuple[frozenset[str], frozenset[str]]:
    """Every path :func:`parse_record` reads (with ``id_field``), and their proper prefixes."""
    paths = [*_RECORD_PATHS, id_field, *(path for _, field_paths in _CONTEXT_FIELDS for path in field_paths)]
    prefixes = {".".join(path.split(".")[:i]) for path in paths for i in range(1, path.count(".") + 1)}
    return frozenset(paths), frozenset(prefixes)


def event_context(raw: dict[str, Any], message: str) -> dict[str, str]:
    """The named values of a stored event (``error_logs.raw_log_data``) the way ingest read
    them: namespace, pod, container, deployment, service, host, index, file."""
    return _context(raw, message)


def _context(raw: dict[str, Any], message: str, get: Any = None) -> dict[str, str]:
    """``get``: the lookup of one dotted path (default: :func:`get_path` on ``raw``)."""
    if get is None:
        get = lambda path: get_path(raw, path)  # noqa: E731
    ctx: dict[str, str] = {}
    for name, paths in _CONTEXT_FIELDS:
        for path in paths:
            v = get(path)
            if isinstance(v, str):
                v = v.strip()
                if v:
                    ctx[name] = v
                    break
    if "index" not in ctx and "[" in message:
        m = _INDEX_IN_MESSAGE.search(message)
        if m is not None:
            ctx["index"] = m.group("a") or m.group("b")
    return ctx


# --- the record ----------------------------------------------------------------------------


# Event times outside these bounds are taken for junk (a zeroed or overflowed clock, a field
# in the wrong unit): year 1 or 9999 would also create a monthly partition that retention
# drops at once, so every replay would count the event again.
EARLIEST_EVENT_TIME = datetime(1970, 1, 1)
LATEST_EVENT_TIME = datetime(2200, 1, 1)


def _event_time(v: Any) -> datetime | None:
    """``@timestamp`` as a naive UTC datetime, or ``None`` when unreadable or implausible."""
    ts: datetime | None = None
    try:
        if isinstance(v, str):
            if len(v) == 24 and v[23] == "Z" and v[10] == "T" and v[19] == ".":
                # Logstash's own spelling (2026-03-02T08:00:00.000Z), UTC: read as naive UTC
                ts = datetime.fromisoformat(v[:23])
            else:
                ts = datetime.fromisoformat(v)
                if ts.tzinfo is not None:
                    ts = ts.astimezone(UTC).replace(tzinfo=None)
        elif isinstance(v, int | float) and not isinstance(v, bool):
            seconds = v / 1000 if abs(v) > 1e11 else v  # epoch milliseconds or seconds
            ts = datetime.fromtimestamp(seconds, UTC).replace(tzinfo=None)
    except (OverflowError, OSError, ValueError):
        return None
    if ts is None or not EARLIEST_EVENT_TIME <= ts < LATEST_EVENT_TIME:
        return None
    return ts


def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    if type(headers) is dict:
        v = headers.get(name)
    elif type(headers) is tuple or type(headers) is list or not isinstance(headers, Mapping):
        # aiokafka gives a sequence of (key, value) pairs; the exact-type tests come first
        # because an ABC isinstance test costs a microsecond, on every record
        v = None
        for key, value in headers:
            if key == name:
                v = value  # the last one wins, as dict(headers) would have it
    else:
        v = headers.get(name)
    if v is None:
        return None
    if isinstance(v, bytes | bytearray | memoryview):
        v = bytes(v).decode("utf-8", "replace")
    v = str(v).replace("\x00", "").strip()  # PostgreSQL text cannot hold U+0000
    return v or None


# History: records that re-publish the past carry this header (``backfill`` from backfill-es,
# ``replay`` from elk-resolver replay); ingest stores it with the occurrence and never lets such
# an event be remediated unless the publisher also set HISTORY_EXECUTE_HEADER (the operator
# asked, e.g. ``backfill-es --execute``). A forged mark can only stop remediation, never cause it.
HISTORY_HEADER = "elk-history"
HISTORY_EXECUTE_HEADER = "elk-history-execute"
HISTORY_MARKS = frozenset({"backfill", "replay"})


def history_mark(headers: Any) -> tuple[str | None, bool]:
    """``(mark, execute)`` from a record's headers: the history mark (``backfill``,
    ``replay``, or None for a live event; an unknown value counts as ``backfill``) and
    whether the operator asked for remediation anyway."""
    if not headers:
        return None, False
    mark = _header(headers, HISTORY_HEADER)
    if mark is None:
        return None, False
    mark = mark.lower()
    execute = (_header(headers, HISTORY_EXECUTE_HEADER) or "").lower() in ("1", "true", "yes")
    return (mark if mark in HISTORY_MARKS else "backfill"), execute


def _id_value(v: Any) -> str | None:
    if isinstance(v, str):
        v = v.replace("\x00", "").strip() if "\x00" in v else v.strip()
        return v or None
    if isinstance(v, int) and not isinstance(v, bool):
        return str(v)
    return None


def parse_record(
    value: bytes,
    *,
    max_bytes: int = DEFAULT_MAX_BYTES,
    headers: Mapping[str, bytes] | None = None,
    id_field: str = "event.hash",
    id_header: str = "event_id",
) -> ParsedEvent:
    """Parse one record value; raise :class:`BadRecord` when it cannot be an event.

    ``elasticsearch_id`` and ``event_identity`` come from ``id_field`` (a dotted path, where
    Logstash's fingerprint filter puts the document id in ECS mode), else the ``id_header``
    record header; ``event_identity`` falls back to the SHA-256 of the record bytes, so a
    redelivered record is still recognised.
    """
    if value is None:
        raise BadRecord("not_json", "tombstone (null value)")
    if len(value) > max_bytes:
        raise BadRecord("too_large", f"{len(value)} bytes > {max_bytes}")
    try:
        raw = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        try:
            bytes(value).decode("utf-8")
        except UnicodeDecodeError as uexc:
            raise BadRecord("invalid_utf8", str(uexc)) from None
        raise BadRecord("not_json", str(exc)) from None
    if not isinstance(raw, dict):
        raise BadRecord("not_object", type(raw).__name__)

    flat = _flat_view(raw, _read_paths(id_field))
    if flat is not None:
        get = flat.get
    else:

        def get(path: str) -> Any:
            return get_path(raw, path)

    err_message = _text(get("error.message"))
    text = _text(raw.get("message"))
    if not (err_message and err_message.strip()) and not (text and text.strip()):
        text = _text(get("event.original"))
        if not (text and text.strip()):
            raise BadRecord("no_message", "no error.message, message or event.original")

    stack = _text(get("error.stack_trace"))
    if stack is not None and not stack.strip():
        stack = None
    if err_message and err_message.strip():
        message, split_trace = split_stack_trace(err_message)
    else:
        message, split_trace = split_stack_trace(text)  # type: ignore[arg-type]
    if stack is None:
        stack = split_trace
    message = message.strip()

    level = get("log.level")
    if level is None:
        level = raw.get("level")
        if level is None:
            level = get("log.syslog.severity.code")
    level_raw = None if level is None or isinstance(level, dict | list) else str(level)

    error_type = get("error.type")
    error_type = error_type.strip() or None if isinstance(error_type, str) else None

    context = _context(raw, message, get)
    source = context.get("service")
    if source is None:
        namespace = context.get("namespace")
        deployment = context.get("deployment")
        if namespace and deployment:
            source = f"{namespace}/{deployment}"
        else:
            source = deployment or namespace or context.get("host") or "unknown"

    es_id = _id_value(get(id_field)) or _header(headers, id_header)
    identity = es_id or hashlib.sha256(value).hexdigest()

    event_time = _event_time(raw.get("@timestamp"))
    return ParsedEvent(
        timestamp=event_time or datetime.now(UTC).replace(tzinfo=None),
        message=message,
        stack_trace=stack,
        level_raw=level_raw,
        severity=severity_of(level),
        error_type_ecs=error_type,
        source_system=source[:SOURCE_SYSTEM_MAX],
        elasticsearch_id=es_id[:ELASTICSEARCH_ID_MAX] if es_id else None,
        event_identity=identity,
        context=context,
        raw=raw,
        event_time=event_time,
    )
