"""Did the fix help? What every face shows of an action's effect (issue 25): the table of
``elk-resolver report effect``, a playbook's page in the console, and starting or stopping a
playbook's observe-only trial (an approver's decision, like switching a playbook off)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from elk_resolver.operations.controls import UnknownPlaybook, catalogue
from elk_resolver.operations.people import Person, require
from elk_resolver.store.db import queries
from handlers import effect as handler

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings

SCOPES = ("solution", "playbook", "action", "error_type")


def _points(value: float | None) -> str:
    return "" if value is None else f"{value * 100:+.0f}"


def _rate(resolved: int, cases: int) -> str:
    return f"{resolved * 100 / cases:.0f}% ({resolved}/{cases})" if cases else "-"


def _median(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return f"{seconds:.1f}s" if seconds < 120 else f"{seconds / 60:.1f}min"


def view(row: dict[str, Any], min_cases: int) -> dict[str, Any]:
    """One ``action_effects`` row as the faces show it."""
    enough = row["acted_cases"] >= min_cases and row["left_cases"] >= min_cases
    if row["uplift"] is None:
        verdict = "no comparison yet"
    elif not enough:
        verdict = f"too few cases (each side needs {min_cases})"
    elif row["uplift_low"] > 0:
        verdict = "helps"
    else:
        verdict = "no measured effect: not automatic"
    return {
        **row,
        "acted": _rate(row["acted_resolved"], row["acted_cases"]),
        "left": _rate(row["left_resolved"], row["left_cases"]),
        "acted_median": _median(row["acted_median_s"]),
        "left_median": _median(row["left_median_s"]),
        "uplift_text": "" if row["uplift"] is None else
        f"{_points(row['uplift'])} [{_points(row['uplift_low'])}, {_points(row['uplift_high'])}]",
        "in_grace": "" if row["resolved_in_grace"] is None else f"{row['resolved_in_grace'] * 100:.0f}%",
        "verdict": verdict,
    }  # fmt: skip


async def report(pool: asyncpg.Pool, settings: Settings, scope: str | None = None) -> list[dict[str, Any]]:
    """Every stored effect figure (one scope, or all), as the faces show it."""
    return [view(r, settings.effect_min_cases) for r in await handler.effect_report(pool=pool, scope=scope)]


async def playbook(pool: asyncpg.Pool, settings: Settings, name: str) -> dict[str, Any]:
    """A playbook's effect: both comparisons, its solutions', how its cases ended and its trial."""
    figures = [view(r, settings.effect_min_cases) for r in await handler.effect_report(pool=pool, scope="playbook", key=name)]
    rows = await pool.fetch(queries().effect_of_playbook_solutions, name)
    solutions = [view(dict(r), settings.effect_min_cases) for r in rows]
    trials = [t for t in await handler.list_trials(pool=pool) if t["playbook_name"] == name]
    trial = trials[0] if trials else None
    return {
        "name": name, "figures": figures, "solutions": solutions,
        "outcomes": await handler.outcome_counts(pool=pool, playbook=name),
        "trial": trial, "trial_on": trial is not None and trial["stopped_at"] is None,
        "min_cases": settings.effect_min_cases, "grace_s": settings.grace_s,
        "critical": settings.critical_namespaces, "max_per_window": settings.trial_max_per_window,
        "window_s": settings.trial_window_s,
    }  # fmt: skip


async def set_trial(pool: asyncpg.Pool, settings: Settings, name: str, fraction: float | None,
                    person: Person | None) -> dict[str, Any] | None:  # fmt: skip
    """Start (``fraction``) or stop (None) the playbook's observe-only trial; for approvers."""
    person = require(settings, person, "start or stop a playbook's trial")
    if fraction is None:
        await handler.stop_trial(name, person.name, pool=pool)
        return None
    available = sorted(pb.name for pb in catalogue(settings))
    if name not in available:
        raise UnknownPlaybook(name, available)
    return await handler.start_trial(name, fraction, person.name, pool=pool)
