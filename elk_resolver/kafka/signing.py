"""Signatures on the internal topics (issue 21, optional).

The analysis and execution topics carry pointers the stages check against the database
(``handlers.analyze.from_database``, ``handlers.execute.load_request``): a forged record runs
nothing the database did not decide. With ``internal_topic_key`` set, the service also signs
every record it writes there (ingest, replay, the analysis stage, approvals) with an
HMAC-SHA256 of the topic name and the record's value under that key, in the
``x-elk-signature`` header, and the analysis and execute stages refuse a record without a valid
one before reading it: a writer of those topics who does not hold the key cannot even make the
service look. The topic name is signed too, so a record signed for one topic is refused on the
other. Set the same key on every copy; it never leaves the service.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from typing import Any

__all__ = ["HEADER", "headers_for", "pointer_record", "signature", "unsigned_problem"]

HEADER = "x-elk-signature"


def signature(key: str, topic: str, value: bytes) -> bytes:
    return b"sha256=" + hmac.new(key.encode(), topic.encode() + b"\n" + value, hashlib.sha256).hexdigest().encode()


def headers_for(key: str | None, topic: str, value: bytes) -> list[tuple[str, bytes]] | None:
    """The headers a record written to ``topic`` carries (None: signing is off)."""
    return None if not key else [(HEADER, signature(key, topic, value))]


def pointer_record(key: str | None, topic: str, model: Any) -> tuple[bytes, dict[str, str] | None]:
    """A contract model as the bytes to publish on ``topic`` and, when signing is on, the
    headers (as FastStream's ``publish`` takes them) with their signature."""
    value = model.model_dump_json().encode()
    return value, (None if not key else {HEADER: signature(key, topic, value).decode()})


def unsigned_problem(key: str | None, topic: str, value: bytes | None, headers: Sequence[tuple[str, bytes]] | None) -> str | None:
    """Why a record read from ``topic`` is refused for its signature (None: signing is off, or
    the signature is valid)."""
    if not key:
        return None
    found = [v for k, v in headers or () if k == HEADER]
    if not found:
        return f"the record carries no {HEADER} header (internal_topic_key is set: unsigned records are refused)"
    if len(found) > 1 or not hmac.compare_digest(found[0] or b"", signature(key, topic, value or b"")):
        return f"the record's {HEADER} is not the service's signature of its topic and value"
    return None
