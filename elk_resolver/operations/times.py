"""How a person writes a time, for every face: ISO-8601 (UTC unless a zone is given), ``now``,
or a duration ago (``2h``, ``30m``, ``7d``, ``now-2h``). The CLI's ``--since`` and the console's
audit filters read times the same way."""

from __future__ import annotations

import argparse
import re
from datetime import UTC, datetime, timedelta


class BadTime(argparse.ArgumentTypeError, ValueError):
    """Not a time; the message says what is accepted (argparse shows it as it is)."""


def parse_time(text: str) -> datetime:
    """ISO-8601 (``2024-05-01``, ``2024-05-01T10:00:00Z``; no zone = UTC), ``now``,
    ``now-2h`` or just ``2h`` / ``30m`` / ``7d`` / ``45s`` (that long ago). A bad time raises
    :class:`BadTime` saying what is accepted."""
    value = text.strip()
    rel = re.fullmatch(r"(?:now)?-?\s*(\d+(?:\.\d+)?)\s*([smhdw])", value)
    if value == "now":
        return datetime.now(UTC)
    if rel:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[rel[2]]
        return datetime.now(UTC) - timedelta(**{unit: float(rel[1])})
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise BadTime(
            f"{text!r} is not a time: use ISO-8601 (2024-05-01T10:00:00Z) or a duration ago (2h, 7d, now-30m)"
        ) from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def parse_until(text: str) -> datetime:
    """A time ahead: a duration (``2h``, ``30m``, ``1d``) from now, or ISO-8601 as it is
    (what ``snooze`` takes: until when)."""
    value = text.strip()
    rel = re.fullmatch(r"\+?\s*(\d+(?:\.\d+)?)\s*([smhdw])", value)
    if rel:
        unit = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}[rel[2]]
        return datetime.now(UTC) + timedelta(**{unit: float(rel[1])})
    return parse_time(value)
