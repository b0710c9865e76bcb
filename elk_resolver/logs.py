"""Logging set-up: plain lines for people, JSON lines for log shippers (``log_json``).

A JSON line carries ``time``, ``level``, ``logger``, ``message`` and, when the caller passed
them with ``extra={...}``, ``stage``, ``topic``, ``partition`` and ``offset`` (so a line can
be traced to the record that caused it), plus ``exception`` text when there is one.
"""

from __future__ import annotations

import logging
import sys
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


def configure(*, json_lines: bool, level: str = "INFO", stream=None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)
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
