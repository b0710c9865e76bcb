"""The audit trail, for every face: every decision a person or the service made, newest first,
filterable by person, object and time (migration 0130's ``audit_trail``: the audit log the
control tables' triggers write, the decision log, the runs, and merges and splits)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from elk_resolver.operations.reading import PAGE, pages
from elk_resolver.store.db import queries

if TYPE_CHECKING:
    import asyncpg


def _naive(when: datetime | None) -> datetime | None:
    from handlers.execute import utc_naive

    return None if when is None else utc_naive(when)


async def trail(pool: asyncpg.Pool, *, person: str | None = None, obj: str | None = None,
                since: datetime | None = None, until: datetime | None = None, people_only: bool = False,
                page: int = 1, per_page: int = PAGE) -> dict[str, Any]:
    """One page of the trail. ``person``: who (any case; ``service`` for the stages); ``obj``: part
    of an object's name (``logstash-0``, ``playbook:``, ``pattern:3``) or ``error:ID``; ``since``
    and ``until`` (UTC); ``people_only`` leaves the service's own decisions out."""
    q = queries()
    args = ((person or "").strip() or None, (obj or "").strip() or None, _naive(since), _naive(until), people_only)
    total = await pool.fetchval(q.audit_count, *args)
    paging = pages(total, page, per_page)
    rows = [dict(r) for r in await pool.fetch(q.audit_page, *args, per_page, paging["offset"])]
    return {"rows": rows, "paging": paging}


async def actors(pool: asyncpg.Pool) -> list[str]:
    return [r[0] for r in await pool.fetch(queries().audit_actors)]


async def changes(pool: asyncpg.Pool) -> str:
    """A fingerprint of what the console's lists show (live refresh reloads a list when it moves)."""
    return await pool.fetchval(queries().console_changes) or ""
