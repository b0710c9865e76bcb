"""What every command of the command line shares: the errors it says in one line, and how it
prints times, tables and rows."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from elk_resolver.operations.times import parse_time

if TYPE_CHECKING:
    import asyncpg

__all__ = ["CliError", "PartialError", "Unreachable", "jsonable", "parse_time", "records", "table", "where"]


class CliError(Exception):
    """A failure the user can act on; printed as one line."""


class PartialError(Exception):
    """Stopped part-way; running the command again resumes."""


class Unreachable(Exception):
    """A service that does not answer; the message names it."""


def where(dsn: str) -> str:
    """host:port/database of a DSN, without the password."""
    return dsn.split("@", 1)[-1] if "@" in dsn else dsn.split("://", 1)[-1]


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    if isinstance(value, timedelta):
        return f"{value.total_seconds():.3f}s"
    if isinstance(value, Decimal | float):
        return f"{float(value):.2f}"
    if isinstance(value, dict | list):
        return json.dumps(value, default=str)[:80]
    text = " ".join(str(value).split())
    return text if len(text) <= 80 else text[:79] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Aligned columns; numbers right-aligned."""
    cells = [list(headers), *[[_cell(c) for c in row] for row in rows]]
    numeric = [all(isinstance(row[i], int | float | Decimal) or row[i] is None for row in rows) and rows
               for i in range(len(headers))]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        return "  ".join(c.rjust(w) if numeric[i] else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()

    return "\n".join([fmt(cells[0]), "  ".join("-" * w for w in widths), *(fmt(r) for r in cells[1:])])


def jsonable(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, Decimal):
        return float(value)
    return value


def records(rows: Sequence[asyncpg.Record]) -> list[dict[str, Any]]:
    return [{k: jsonable(v) for k, v in dict(r).items()} for r in rows]
