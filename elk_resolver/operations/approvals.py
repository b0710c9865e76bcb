"""Approvals and systemic holds (incidents): list, approve, reject, decide many at once.

Nothing runs in the deciding process: a decision is recorded in PostgreSQL and, for an
approval, a pointer is published on the execution topic; the execute stage carries it out once.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from elk_resolver.operations.people import Person, Refused, require
from elk_resolver.operations.reading import PAGE
from elk_resolver.store.db import queries
from handlers.execute import ApprovalError, utc_naive
from handlers.execute import approve as approve_request
from handlers.execute import approve_incident as approve_incident_request
from handlers.execute import list_incidents as list_incident_rows
from handlers.execute import reject as reject_request
from handlers.execute import reject_incident as reject_incident_request

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings


# (results, approval events[, pointers at approved requests for the execution topic])
Publisher = Callable[..., Awaitable[None]]


@dataclass
class Decision:
    approval_id: int
    status: str
    by: str
    results: list[Any] = field(default_factory=list)
    error: str | None = None
    handed_over: list[str] = field(default_factory=list)
    """request ids handed to the execute stage (an approval runs there, not here)"""


async def list_approvals(pool: asyncpg.Pool, *, status: str | None = "pending", limit: int = PAGE,
                         offset: int = 0) -> tuple[list[dict[str, Any]], int]:
    q = queries()
    rows = await pool.fetch(q.console_approvals, status, limit, offset)
    total = await pool.fetchval(q.console_approvals_count, status)
    return [dict(r) for r in rows], total


async def approval(pool: asyncpg.Pool, approval_id: int) -> dict[str, Any] | None:
    row = await pool.fetchrow(queries().approval_get, approval_id)
    return dict(row) if row else None


async def approve(pool: asyncpg.Pool, settings: Settings, approval_id: int, person: Person | None, *,
                  publish: Publisher | None = None) -> Decision:
    """Record the approval; the execute stage of the running service carries it out once (the
    pointer is published on the execution topic; its maintenance pass also finds approvals
    whose pointer never arrived). Nothing runs in the deciding process."""
    person = require(settings, person, "approve")

    async def decide() -> tuple[Any, list, list]:
        event, pointer = await approve_request(approval_id, person.name, pool=pool, settings=settings)
        return event, [], [pointer]

    return await _decided(approval_id, person, decide, publish)


async def _decided(decision_id: int, person: Person, decide: Callable[[], Awaitable[tuple[Any, list, list]]],
                   publish: Publisher | None) -> Decision:
    """Run one decision (``decide`` returns the event, the results and the pointers at approved
    requests), say a refusal as :class:`Refused`, and publish what changed."""
    try:
        event, results, pointers = await decide()
    except ApprovalError as exc:
        raise Refused(str(exc)) from None
    if publish is not None:
        await publish(results, [event], pointers) if pointers else await publish(results, [event])
    return Decision(decision_id, event.status, person.name, results, handed_over=[p.request_id for p in pointers])


async def list_incidents(pool: asyncpg.Pool, *, status: str | None = "pending", limit: int = PAGE) -> list[dict[str, Any]]:
    """Systemic holds: each names every held object and the signs they share."""
    return await list_incident_rows(pool=pool, status=status, limit=limit)


async def approve_incident(pool: asyncpg.Pool, settings: Settings, incident_id: int, person: Person | None,
                           objects: Sequence[str] | None = None, *, publish: Publisher | None = None) -> Decision:
    """Approve a systemic hold for every object, or only ``objects`` (the rest are rejected);
    the execute stage restarts each approved object once."""
    person = require(settings, person, "approve")

    async def decide() -> tuple[Any, list, list]:
        event, pointers = await approve_incident_request(
            incident_id, person.name, list(objects) if objects else None, pool=pool, settings=settings
        )
        return event, [], pointers

    return await _decided(incident_id, person, decide, publish)


async def incident_detail(pool: asyncpg.Pool, incident_id: int) -> dict[str, Any] | None:
    """A systemic hold as a decider sees it: the action, why, every held object with what would
    run on it and its error, the signs the objects share, and what came of each."""
    q = queries()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(q.incident_get, incident_id)
        if row is None:
            return None
        objects = [dict(r) for r in await conn.fetch(q.console_incident_objects, incident_id)]
    signs: dict[str, set[str]] = {}
    for o in objects:
        for key, value in (o["signs"] or {}).items():
            signs.setdefault(key, set()).add(str(value))
    shared = {k: next(iter(v)) for k, v in signs.items() if len(v) == 1}
    return {"incident": dict(row), "objects": objects, "shared": shared,
            "pending": row["status"] == "pending" and row["expires_at"] > utc_naive()}


async def reject_incident(pool: asyncpg.Pool, settings: Settings, incident_id: int, person: Person | None,
                          reason: str | None = None, *, publish: Publisher | None = None) -> Decision:
    person = require(settings, person, "reject")

    async def decide() -> tuple[Any, list, list]:
        return (*await reject_incident_request(incident_id, person.name, reason, pool=pool), [])

    return await _decided(incident_id, person, decide, publish)


async def reject(pool: asyncpg.Pool, settings: Settings, approval_id: int, person: Person | None,
                 reason: str | None = None, *, publish: Publisher | None = None) -> Decision:
    person = require(settings, person, "reject")

    async def decide() -> tuple[Any, list, list]:
        return (*await reject_request(approval_id, person.name, reason, pool=pool), [])

    return await _decided(approval_id, person, decide, publish)


async def decide_many(pool: asyncpg.Pool, settings: Settings, approval_ids: Sequence[int], person: Person | None,
                      *, approve_them: bool, reason: str | None = None,
                      publish: Publisher | None = None) -> list[Decision]:
    """An incident-wide decision: the same answer for some or all of its approvals. Each one is
    decided on its own (one that someone else decided meanwhile is reported, not retried)."""
    person = require(settings, person, "approve" if approve_them else "reject")
    out = []
    for approval_id in dict.fromkeys(approval_ids):
        try:
            if approve_them:
                out.append(await approve(pool, settings, approval_id, person, publish=publish))
            else:
                out.append(await reject(pool, settings, approval_id, person, reason, publish=publish))
        except Refused as exc:
            out.append(Decision(approval_id, "refused", person.name, error=str(exc)))
    return out
