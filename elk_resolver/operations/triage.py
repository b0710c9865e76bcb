"""What a person says about an error, for every face: its state (open, acknowledged, resolved,
snoozed until a time, muted), its owner, notes, and how errors are grouped (merge, split).

A state is kept beside the error (``error_states``), so a new occurrence never resets it; a
resolved error that occurs again, or a snooze that ends, reads as open at once, with why, and
the monitor stage records that once as the service's decision. Muted errors (and snoozed ones,
while the snooze stands) send no notification. Every change is in the audit log (the tables'
triggers write it, migration 0130).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from elk_resolver.operations.people import Person, Refused
from elk_resolver.store.db import queries

if TYPE_CHECKING:
    import asyncpg

STATES = ("open", "acknowledged", "resolved", "snoozed", "muted")
MAX_SNOOZE = timedelta(days=90)
NOTE_LIMIT = 4000


def _who(person: Person | None, what: str) -> Person:
    if person is None or not person.name:
        raise Refused(f"{what} needs an authenticated person")
    return person


async def set_state(pool: asyncpg.Pool, error_id: int, state: str, person: Person | None, *,
                    until: datetime | None = None, now: datetime | None = None) -> dict[str, Any]:
    """Give an error a state; ``snoozed`` needs ``until`` (UTC, in the future, at most
    ``MAX_SNOOZE`` ahead). Anyone signed in may triage: a state decides nothing that runs."""
    from handlers.execute import utc_naive

    person = _who(person, "changing an error's state")
    if state not in STATES:
        raise Refused(f"unknown state {state!r}: one of {', '.join(STATES)}")
    now = utc_naive(now)
    if state == "snoozed":
        if until is None:
            raise Refused("snoozing needs a time until which (e.g. 2h, or an ISO time)")
        until = utc_naive(until)
        if until <= now:
            raise Refused("a snooze must end in the future")
        if until - now > MAX_SNOOZE:
            raise Refused(f"a snooze may last at most {MAX_SNOOZE.days} days (mute it instead)")
    else:
        until = None
    row = await pool.fetchrow(queries().error_state_set, error_id, state, until, person.name)
    if row is None:
        raise Refused(f"no error with id {error_id}")
    return dict(row)


async def set_owner(pool: asyncpg.Pool, error_id: int, owner: str | None, person: Person | None) -> dict[str, Any]:
    person = _who(person, "choosing an error's owner")
    owner = (owner or "").strip()[:50] or None
    row = await pool.fetchrow(queries().error_owner_set, error_id, owner, person.name)
    if row is None:
        raise Refused(f"no error with id {error_id}")
    return dict(row)


async def add_note(pool: asyncpg.Pool, error_id: int, text: str, person: Person | None) -> dict[str, Any]:
    from elk_resolver.events.masking import mask_text

    person = _who(person, "writing a note")
    text = (text or "").strip()
    if not text:
        raise Refused("an empty note")
    # a note is stored and shown to others: secrets pasted into it are masked like a log line's
    row = await pool.fetchrow(queries().error_note_add, error_id, person.name, mask_text(text)[:NOTE_LIMIT])
    if row is None:
        raise Refused(f"no error with id {error_id}")
    return dict(row)


async def notes(pool: asyncpg.Pool, error_id: int) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(queries().error_notes, error_id)]


# --- grouping -----------------------------------------------------------------------------------


@dataclass
class Merged:
    canonical: dict[str, Any]
    member: dict[str, Any]
    moved_occurrences: int


async def merge(pool: asyncpg.Pool, canonical_id: int, member_id: int, person: Person | None, *,
                force: bool = False) -> Merged:
    """Fold error ``member_id`` into ``canonical_id``. Errors of different types are refused
    unless ``force``: a Java OOM merged into a network error hides one of them."""
    from elk_resolver.store.merge_pass import operator_merge

    person = _who(person, "merging errors")
    if canonical_id == member_id:
        raise Refused("an error cannot be merged into itself")
    rows = {r["id"]: dict(r) for r in await pool.fetch(queries().error_type_of, [canonical_id, member_id])}
    for error_id in (canonical_id, member_id):
        if error_id not in rows:
            raise Refused(f"no error with id {error_id}")
    a, b = rows[canonical_id], rows[member_id]
    if a["error_type"] != b["error_type"] and not force:
        raise Refused(
            f"error {member_id} is {b['error_type']!r} ({b['error_message']}) and error {canonical_id} is "
            f"{a['error_type']!r} ({a['error_message']}): different types are not merged without --force"
        )
    try:
        result = await operator_merge(pool, canonical_id, member_id, person.name)
    except (LookupError, ValueError) as exc:
        raise Refused(str(exc)) from None
    return Merged(a, b, result["moved_occurrences"])


async def split(pool: asyncpg.Pool, error_id: int, person: Person | None) -> list[dict[str, Any]]:
    from elk_resolver.store.merge_pass import operator_split

    person = _who(person, "splitting errors")
    try:
        return await operator_split(pool, error_id, person.name)
    except (LookupError, ValueError) as exc:
        raise Refused(str(exc)) from None
