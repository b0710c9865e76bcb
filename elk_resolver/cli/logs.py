"""Logging set-up: plain lines for people, JSON lines for log shippers (``log_json``).

A JSON line carries ``time``, ``level``, ``logger``, ``message`` and, when the caller passed
them with ``extra={...}``, ``stage``, ``topic``, ``partition`` and ``offset`` (so a line can
be traced to the record that caused it), plus ``exception`` text when there is one.
"""

from __future__ import annotations

import logging
import sys
import time
from datetime import UTC, datetime

import orjson

CONTEXT_FIELDS = ("stage", "topic", "partition", "offset", "group", "request_id", "hash_signature")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str).decode()


class RepeatFilter(logging.Filter):
    """One line per ``window_s`` for a message that repeats: the Kafka and PostgreSQL clients'
    (a broker that restarted or lost a topic makes aiokafka log the same failure for every
    request, ~100 lines a second; asyncpg's pool says it cannot restore its floor on every try)
    and any record logged with ``extra={"coalesce": ...}``: ``True`` groups by the message's
    text before its arguments, a string groups by that too (a cause: one line per cause per
    window). The line after a quiet window says how many were left out."""

    PREFIXES = ("aiokafka", "kafka", "faststream", "elk_resolver.broker", "asyncpg")

    def __init__(self, window_s: float = 30.0) -> None:
        super().__init__()
        self.window_s = window_s
        self._seen: dict[tuple[str, int, str, str | None], list[float | int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        if not (getattr(record, "coalesce", False) or record.name.startswith(self.PREFIXES)):
            return True
        coalesce = getattr(record, "coalesce", None)
        key = (record.name, record.levelno, str(record.msg), coalesce if isinstance(coalesce, str) else None)
        now = time.monotonic()
        seen = self._seen.get(key)
        if seen is not None and now - seen[0] < self.window_s:
            seen[1] += 1
            return False
        if seen is not None and seen[1]:
            record.msg = f"{record.msg} ({seen[1]} more like this in the last {self.window_s:.0f}s)"
        if len(self._seen) > 1000:
            self._seen.clear()
        self._seen[key] = [now, 0]
        return True


def configure(*, json_lines: bool, level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.addFilter(RepeatFilter())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # aiokafka logs every coordinator hiccup at INFO/ERROR; keep it at WARNING unless debugging
    if level.upper() != "DEBUG":
        logging.getLogger("aiokafka").setLevel(logging.WARNING)
        # FastStream's per-subscriber chatter ("callback for Task-N is being executed")
        logging.getLogger("elk_resolver.broker").setLevel(logging.WARNING)
