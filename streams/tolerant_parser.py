"""A FastStream parser that never loses a record over its headers.

FastStream's Kafka parser decodes every header value as UTF-8 before any handler runs. A
record with a non-UTF-8 header then fails outside the handler, and with manual acks the next
``msg.ack()`` commits past it: the record is lost without reaching the dead-letter topic.
This parser decodes such values with replacement characters instead, so the record reaches
the handler (which dead-letters it if its body is bad too).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Awaitable, Callable
from typing import Any


def _printable(headers: Any) -> list[tuple[str, bytes]]:
    return [(key, value.decode("utf-8", "replace").encode()) for key, value in headers or ()]


async def tolerant_parser(record: Any, original: Callable[[Any], Awaitable[Any]]) -> Any:
    try:
        return await original(record)
    except UnicodeDecodeError:
        if isinstance(record, tuple):  # a batch subscriber's records
            return await original(tuple(dataclasses.replace(r, headers=_printable(r.headers)) for r in record))
        return await original(dataclasses.replace(record, headers=_printable(record.headers)))
