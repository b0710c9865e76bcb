"""Did the fix help? Every request's outcome, and each action's effect (issue 25).

Plain async functions over a pool; no broker. The execute stage's maintenance pass calls
:func:`record_outcomes` (and :func:`deferred_due` for the grace period); the CLI and the
console read :func:`effect_report`, and start or stop trials with :func:`start_trial` /
:func:`stop_trial`.

Each request the analysis stage stored is a case: it gets one ``request_outcomes`` row, judged
with :func:`elk_resolver.actions.effect.judge_case` from what the database holds about its object
(when the error was seen there, the runs on the object, the request's own decisions, its
approval and its trial draw), the same way whether anything ran or not. Once the cases of a
solution, playbook, kind of action or error type are judged, :func:`refresh_effects` writes the
resolution rates with and without the action, the medians, the uplift and its interval to
``action_effects`` and, per solution, next to ``success_rate`` in ``solutions``.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime
from typing import TYPE_CHECKING, Any

from elk_resolver.actions.effect import Arm, Decision, Effect, effect_of, judge_case
from elk_resolver.events.contracts import ExecutionRequest, PlannedRequest
from elk_resolver.store.db import queries
from handlers.execute import utc_naive

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings

BATCH = 2000


async def record_outcomes(*, pool: asyncpg.Pool, settings: Settings, now: datetime | None = None) -> int:
    """Give every new request its outcome row and judge the open ones; refresh the effect figures
    when a case was decided. Returns how many cases left 'open' in this call."""
    now = utc_naive(now)
    q = queries()
    window, horizon = settings.verification_window_s, settings.effect_horizon_s
    async with pool.acquire() as conn:
        await conn.execute(q.effect_new_outcomes, BATCH)
        cases = await conn.fetch(q.effect_open_cases, BATCH)
        if not cases:
            return 0
        ids = [c["request_id"] for c in cases]
        keys = [c["target_key"] or "" for c in cases]
        starts = [c["started_at"] for c in cases]
        errors: dict[str, list[datetime]] = defaultdict(list)
        for r in await conn.fetch(q.effect_case_errors, ids, [c["hash_signature"] for c in cases], keys, starts,
                                  horizon + window):  # fmt: skip
            errors[r["request_id"]].append(r["at"])
        runs: dict[str, list[datetime]] = defaultdict(list)
        for r in await conn.fetch(q.effect_case_runs, ids, keys, starts, window, horizon):
            runs[r["request_id"]].append(r["at"])
        decisions: dict[str, list[Decision]] = defaultdict(list)
        for r in await conn.fetch(q.effect_case_decisions, ids):
            decisions[r["request_id"]].append(Decision(r["id"], r["decision"], r["reason"], r["decided_at"]))
        approvals = {r["request_id"]: r["status"] for r in await conn.fetch(q.effect_case_approvals, ids)}
        arms = {r["request_id"]: r["arm"] for r in await conn.fetch(q.effect_case_draws, ids)}
        rows: list[tuple[Any, ...]] = []
        for c in cases:
            rid = c["request_id"]
            out = judge_case(
                c["started_at"], errors=errors[rid], runs=runs[rid], decisions=decisions[rid],
                approval_status=approvals.get(rid), now=now, window_s=window, horizon_s=horizon,
                deferred=c["deferred_until"] is not None,
            )  # fmt: skip
            if c["history"]:  # replayed or backfilled: never a case of either side
                out_kind, reason = "history", "history (replayed or backfilled event)"
            else:
                out_kind, reason = out.not_acted, out.not_acted_reason
            rows.append((rid, out.acted and not c["history"], out.acted_at, out_kind, reason, arms.get(rid), out.state,
                         out.resolved_at, out.resolution_s))  # fmt: skip
        columns = list(zip(*rows, strict=True))
        await conn.execute(q.effect_judge, *columns, now)
    decided = sum(1 for r in rows if r[6] != "open")
    if decided:
        await refresh_effects(pool=pool, settings=settings, now=now)
    return decided


def _effect(row: Any, grace_s: float) -> Effect:
    acted = Arm(row["acted_cases"], row["acted_resolved"], row["acted_median_s"])
    left = Arm(row["left_cases"], row["left_resolved"], row["left_median_s"])
    in_grace = row["in_grace"] / row["cases"] if grace_s and row["cases"] else None
    return effect_of(row["comparison"], acted, left, in_grace)


def preferred(effects: dict[str, Effect], min_cases: int) -> Effect | None:
    """The comparison a solution is judged by: its random trial once both arms have
    ``min_cases``, else every case left alone (the trial is free of selection bias, the rest
    is not)."""
    trial = effects.get("trial")
    if trial is not None and trial.enough(min_cases):
        return trial
    return effects.get("left alone") or trial


async def refresh_effects(*, pool: asyncpg.Pool, settings: Settings, now: datetime | None = None) -> int:
    """Recompute every scope's figures from the judged cases; write them to ``action_effects``
    and each solution's chosen comparison next to its ``success_rate``."""
    now = utc_naive(now)
    q = queries()
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(q.effect_arms, settings.grace_s)
        scopes: dict[tuple[str, str], dict[str, Effect]] = defaultdict(dict)
        for row in rows:
            scopes[(row["scope"], row["key"])][row["comparison"]] = _effect(row, settings.grace_s)
        store: list[tuple[Any, ...]] = []
        # a playbook's solutions (one per error hash) share its template: they are judged by the
        # playbook's pooled cases; an LLM or manual solution by its own
        by_template: dict[tuple[str | None, int | None], dict[str, Effect]] = {}
        for (scope, key), effects in scopes.items():
            chosen = preferred(effects, settings.effect_min_cases)
            for comparison, e in effects.items():
                store.append((scope, key, comparison, e.acted.cases, e.acted.resolved, e.acted.median_s, e.left.cases,
                              e.left.resolved, e.left.median_s, e.uplift, e.low, e.high, e.resolved_in_grace, now,
                              e is chosen))  # fmt: skip
            if scope == "playbook":
                by_template[(key, None)] = effects
            elif scope == "solution":
                by_template[(None, int(key))] = effects
        if store:
            await conn.execute(q.effect_store, *[list(c) for c in zip(*store, strict=True)])
        chosen = [(key, preferred(effects, settings.effect_min_cases)) for key, effects in by_template.items()]
        solutions = [(name, e.acted.cases, e.acted.resolved, e.left.cases, e.left.resolved, e.uplift, e.low, e.high,
                      e.comparison, sid) for (name, sid), e in chosen if e is not None]  # fmt: skip
        if solutions:
            await conn.execute(q.effect_store_solutions, *[list(c) for c in zip(*solutions, strict=True)], now)
        return len(store)


async def effect_report(
    *, pool: asyncpg.Pool, scope: str | None = None, key: str | None = None
) -> list[dict[str, Any]]:
    """The stored effect figures (``action_effects``), with the playbook's trial."""
    return [dict(r) for r in await pool.fetch(queries().effect_report, scope, key)]


async def outcome_counts(*, pool: asyncpg.Pool, playbook: str | None = None) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(queries().effect_outcome_counts, playbook)]


async def start_trial(name: str, fraction: float, by: str, *, pool: asyncpg.Pool, now: datetime | None = None) -> dict[str, Any]:
    """Put playbook ``name`` in trial mode: ``fraction`` of its eligible cases are left alone."""
    if not 0 < fraction <= 1:
        raise ValueError(f"a trial's fraction must be above 0 and at most 1, not {fraction:g}")
    row = await pool.fetchrow(queries().trial_start, name, fraction, utc_naive(now), by[:50])
    return dict(row)


async def stop_trial(name: str, by: str, *, pool: asyncpg.Pool, now: datetime | None = None) -> bool:
    return await pool.fetchval(queries().trial_stop, name, utc_naive(now), by[:50]) is not None


async def list_trials(*, pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(queries().trial_list)]


async def deferred_due(*, pool: asyncpg.Pool, now: datetime | None = None, limit: int = 500) -> list[ExecutionRequest]:
    """Pointers of requests whose grace period is over and that nobody decided since: the
    execute stage's maintenance pass decides them again (the error may have stopped)."""
    rows = await pool.fetch(queries().deferred_due, utc_naive(now), limit)
    return [PlannedRequest.model_validate(r["request"]).pointer() for r in rows]

