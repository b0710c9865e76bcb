"""The execution stage's decisions: whether a request runs, and what is recorded when it does.

Plain async functions over an asyncpg pool; no broker. The stream (``streams/execute.py``), the
approvals CLI and the tests call them directly, and publish what they return.

What travels on the execution topic is a pointer (:class:`ExecutionRequest`): ids and a digest.
:func:`load_request` reads the :class:`PlannedRequest` the analysis stage stored in
``planned_requests`` (solution, error, pattern, the one bound object, the rendered commands,
the history mark); a message that carries anything else, names an id nobody stored, or whose
ids or digest differ from the row is ``refused`` (logged in ``decision_log``, nothing claimed).

The guards, in order (the first that applies decides):

1. ``execution_mode=off`` or the kill switch (the setting, or the ``resolver_controls`` row)
   -> ``skipped``. Nothing is claimed, so the request can still run later if redelivered.
2. The claim: ``execution_requests`` gets the request id once. Already there -> ``duplicate``,
   unless a person approved the waiting request (an approval or an incident object): then it
   runs here, once (:func:`_start_approved`).
3. Under a lock on the bound object (``pg_advisory_xact_lock`` on its key, across every copy):
   the solution must exist; a request about a dependency no object can be named for goes to a
   person (:func:`_dependency_outage`); every command must pass the current policy (``denied``).
4. History (replayed, backfilled) -> ``skipped``.
5. Off means off: the playbook the solution came from is disabled (``playbooks disable``, read
   from ``playbook_controls`` now, or gone from this copy's catalogue) or the error's stored
   pattern is disabled -> ``skipped``. Then the errors stopped by themselves: the object's
   newest error in the database is older than ``quiet_after_s`` -> ``skipped``.
6. Per object: cooldown (``cooldown_s``) and hourly cap (``max_runs_per_hour``) over every slot
   taken on the object, whatever error, solution or copy took it -> ``skipped``. A run still in
   flight counts: 1,000 requests about one deployment cause one restart. Then a dependency
   outage: the object's errors name a host:port that ``dependency_outage_services`` services
   name -> ``skipped`` (the clients are never restarted).
7. Needs a person -> ``pending_approval`` (one pending approval per object): stale event; a run
   on the object whose error came back (the history attached); the analysis stage's view is
   ``approval``; a command not flagged safe; no bound object; the pattern stored with the error
   (read now) does not allow auto_resolve, or is not the one the request names; an LLM
   solution not yet trusted; the breaker.
8. The settle time: a request that would run before it is ``settle_s`` old is decided again
   then (nothing claimed meanwhile), so the incident's shape is in the database first.
9. Under one fleet-wide lock: a node going bad (``node_hold_objects`` workloads failing only on
   the request's node) -> ``held`` in the one incident naming the node; the systemic hold (more
   than ``systemic_hold_objects`` distinct objects needed this kind of action within
   ``systemic_window_s``) -> ``held`` in the one pending incident for that action; then the
   fleet budget (``fleet_max_actions`` overall and ``fleet_max_actions_per_namespace`` per
   ``fleet_window_s``) -> ``pending_approval``.
10. ``dry-run`` -> ``dry_run`` with what would have run; nothing runs, no history row.
11. ``live`` -> the slot is taken and committed, the commands run (each one evaluated again by
    the executors), then exactly one ``execution_history`` row records the run and its object.

After a successful run the object is watched for ``verification_window_s``: the same object
needing the same kind of action again turns it ``recurred``, silence ``resolved``
(:func:`verify_outcomes`). :func:`reap_lost_runs` records runs that died after their claim.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg
import orjson

from elk_resolver.actions.executors import CommandResult, run_commands
from elk_resolver.actions.effect import Effect, no_effect_reason, trial_selects
from elk_resolver.actions.executors.result import bound_text
from elk_resolver.actions.policy import ExecutionPolicy, evaluate
from elk_resolver.events.contracts import ApprovalEvent, ExecutionRequest, ExecutionResult, PlannedRequest
from elk_resolver.events.masking import mask_text
from elk_resolver.store.db import is_transient_db_error, queries

if TYPE_CHECKING:
    import httpx
    from elasticsearch import AsyncElasticsearch

    from elk_resolver.actions.playbooks import Catalogue
    from elk_resolver.settings import Settings

log = logging.getLogger(__name__)

AUTO = "auto-resolver"
_RANDOM = random.SystemRandom()  # the trials' draws: recorded, never predictable from outside
HISTORY_ATTACHED = 10


class ApprovalError(RuntimeError):
    """An approval cannot be decided (unknown, already decided, expired, or execution stopped)."""


class NotSettled(Exception):
    """The request would run automatically before its settle time (``settle_s``) has passed:
    the decision's transaction is rolled back (nothing claimed) and made again at ``until``."""

    def __init__(self, until: datetime, *, grace: bool = False) -> None:
        super().__init__(f"not settled until {until:%H:%M:%S}")
        self.until = until
        self.grace = grace
        """the grace period (``grace_s``, issue 25): the request is deferred, not waited for here"""


@dataclass(frozen=True)
class Runtime:
    """What running commands needs besides the policy; all optional (tests, CLI)."""

    elasticsearch: AsyncElasticsearch | None = None
    http_client: httpx.AsyncClient | None = None
    env: Mapping[str, str] | None = None
    instance: str = f"{socket.gethostname()}:{os.getpid()}"


def utc_naive(value: datetime | None = None) -> datetime:
    """The database's TIMESTAMP columns hold naive UTC."""
    if value is None:
        return datetime.now(UTC).replace(tzinfo=None)
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value


def _aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _result(req: PlannedRequest, outcome: str, reason: str, now: datetime, **extra: Any) -> ExecutionResult:
    return ExecutionResult(
        request_id=req.request_id,
        hash_signature=req.hash_signature,
        solution_id=req.solution_id,
        error_log_id=req.error_log_id,
        outcome=outcome,
        reason=reason,
        at=_aware(now),
        **extra,
    )


async def kill_switch_on(conn: asyncpg.Connection, settings: Settings) -> tuple[bool, str]:
    if settings.kill_switch:
        return True, "kill switch is on (setting ELK_RESOLVER_KILL_SWITCH)"
    row = await conn.fetchrow(queries().kill_switch_get)
    if row is not None and row["kill_switch"]:
        return True, f"kill switch is on (set by {row['updated_by']} at {row['updated_at']:%Y-%m-%d %H:%M:%S} UTC)"
    return False, ""


async def _decide(
    conn: asyncpg.Connection,
    req: PlannedRequest,
    decision: str,
    reason: str,
    now: datetime,
    *,
    details: dict[str, Any] | None = None,
    by: str | None = None,
) -> None:
    await conn.execute(
        queries().insert_decision,
        req.request_id, req.hash_signature, req.solution_id, req.error_log_id,
        decision, reason, details or {}, by, now, req.target_key or req.subject,
    )  # fmt: skip


async def _finish(conn: asyncpg.Connection, req: PlannedRequest, outcome: str, now: datetime) -> None:
    await conn.execute(queries().finish_request, req.request_id, "done", outcome, now)


def _refusals(req: PlannedRequest, policy: ExecutionPolicy) -> list[dict[str, str]]:
    refused = []
    for spec in req.commands:
        verdict = evaluate(spec.model_dump(), policy)
        if not verdict.allowed:
            refused.append({"type": spec.type, "command": mask_text(spec.command), "reason": verdict.reason})
    return refused


def _dry_run_plan(req: PlannedRequest, policy: ExecutionPolicy) -> list[dict[str, Any]]:
    plan = []
    for spec in req.commands:
        verdict = evaluate(spec.model_dump(), policy)
        what = " ".join(verdict.argv) if verdict.argv else verdict.action
        plan.append({"type": spec.type, "command": mask_text(spec.command), "would_run": what, "reason": verdict.reason})
    return plan


async def _history(conn: asyncpg.Connection, solution_id: int) -> list[dict[str, Any]]:
    rows = await conn.fetch(queries().solution_history, solution_id, HISTORY_ATTACHED)
    return [
        {
            "id": r["id"],
            "execution_status": r["execution_status"],
            "execution_output": r["execution_output"],
            "execution_time_s": r["execution_time_s"],
            "executed_at": _aware(r["executed_at"]).isoformat() if r["executed_at"] else None,
            "executed_by": r["executed_by"],
        }
        for r in rows
    ]


def _approval_event(row: Mapping[str, Any], history: list[dict[str, Any]] | None = None) -> ApprovalEvent:
    return ApprovalEvent(
        approval_id=row["id"],
        request_id=row["request_id"],
        hash_signature=row["hash_signature"],
        solution_id=row["solution_id"],
        status=row["status"],
        reason=row["reason"],
        decided_by=row["decided_by"],
        expires_at=_aware(row["expires_at"]),
        history=history or [],
    )


# --- the request path --------------------------------------------------------------------


@dataclass
class _Plan:
    """What the decision transaction committed to: run live (``run``) or nothing more."""

    results: list[ExecutionResult]
    run: bool = False
    executed_by: str = AUTO
    approved: bool = False
    repeats_until: datetime | None = None
    """until when repeats of the request fold into it (migration 0060); None: decided + cooldown_s."""
    duplicate: bool = False


def _refused(pointer: ExecutionRequest, reason: str, now: datetime) -> ExecutionResult:
    return ExecutionResult(
        request_id=pointer.request_id, hash_signature=pointer.hash_signature, solution_id=pointer.solution_id,
        error_log_id=pointer.error_log_id, outcome="refused", reason=reason, at=_aware(now),
    )  # fmt: skip


async def load_request(
    pointer: ExecutionRequest, *, pool: asyncpg.Pool, now: datetime
) -> tuple[PlannedRequest | None, ExecutionResult | None]:
    """The stored request ``pointer`` points at, or why the message is refused.

    Refused (logged in ``decision_log``, nothing claimed, so the genuine pointer still runs):
    a message carrying anything but the pointer's fields; an id the analysis stage never
    stored; ids or digest that differ from the stored row; a row edited after it was stored.
    """
    extra = sorted((pointer.model_extra or {}).keys())
    row = await pool.fetchrow(queries().planned_request, pointer.request_id)
    req = None
    if extra:
        problem = (
            f"the message carries {', '.join(extra)}: a request on the execution topic is a pointer;"
            " what runs is read from the database"
        )
    elif row is None:
        problem = "no stored request has this id (the analysis stage did not write it)"
    else:
        req = PlannedRequest.model_validate(row["request"])
        if req.digest() != row["digest"]:
            problem = "the stored request differs from what the analysis stage wrote (digest mismatch)"
        elif (pointer.error_log_id, pointer.hash_signature, pointer.solution_id) != (
            req.error_log_id, req.hash_signature, req.solution_id,
        ):  # fmt: skip
            problem = "the message's error, hash or solution differs from the stored request"
        elif pointer.digest != row["digest"]:
            problem = "the message's digest differs from the stored request (edited or forged)"
        else:
            return req, None
    reason = f"refused: {problem}"
    details = {"message": orjson.loads(mask_text(orjson.dumps(pointer.model_dump(mode="json")).decode()))}
    await pool.execute(
        queries().insert_decision, pointer.request_id, pointer.hash_signature, pointer.solution_id,
        pointer.error_log_id, "refused", reason, details, None, now, None,
    )  # fmt: skip
    log.warning("execution request %s refused: %s", pointer.request_id[:16], problem)
    return None, _refused(pointer, reason, now)


async def refuse_message(pool: asyncpg.Pool, where: str, value: bytes | None, problem: str, now: datetime | None = None) -> None:
    """Log an execution record refused before it was read (no valid signature; see
    :mod:`elk_resolver.kafka.signing`): 'refused', nothing claimed. ``where`` says which record."""
    try:
        body = orjson.loads(mask_text((value or b"").decode("utf-8", "replace"))[:4000])
    except orjson.JSONDecodeError:
        body = None
    claimed = body if isinstance(body, dict) else {}
    await pool.execute(
        queries().insert_decision, str(claimed.get("request_id") or f"execution-record:{where}")[:200],
        str(claimed.get("hash_signature") or "")[:64] or None, None, None, "refused", f"refused: {problem}",
        {"message": body, "at": where}, None, utc_naive(now), None,
    )  # fmt: skip
    log.warning("execution record %s refused: %s", where, problem)


async def handle_request(
    pointer: ExecutionRequest,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    policy: ExecutionPolicy,
    now: datetime | None = None,
    runtime: Runtime | None = None,
    catalogue: Catalogue | None = None,
) -> list[ExecutionResult]:
    """Load the request ``pointer`` names, decide, and maybe run it; return every outcome.

    Safe to call again with the same pointer (redelivery, replay, retry after an error): the
    claim makes every call after the first a ``duplicate`` that runs nothing, except the one
    call after a person approved it, which runs it once.
    """
    fixed_clock = now is not None
    now = utc_naive(now)
    runtime = runtime or Runtime()
    req, refused = await load_request(pointer, pool=pool, now=now)
    if req is None:
        return [refused] if refused is not None else []
    results = await record_recurrence(req, pool=pool, settings=settings, now=now)
    while True:
        try:
            plan = await _decide_request(
                req, pool=pool, settings=settings, policy=policy, now=now, runtime=runtime, catalogue=catalogue
            )
            break
        except NotSettled as wait:
            if wait.grace:
                # the grace period: the maintenance pass decides it again when it is over
                # (handlers.effect.deferred_due); repeats fold into it meanwhile
                await pool.execute(queries().defer_request, req.request_id, wait.until)
                return results
            # the incident's shape is not in the database yet: decide again at the settle time
            delay = min(settings.settle_s, max((wait.until - now).total_seconds(), 0.0)) + 0.01
            await asyncio.sleep(delay)
            now = now + timedelta(seconds=delay) if fixed_clock else utc_naive()
    results += plan.results
    if plan.run:
        results.append(
            await _run_and_record(
                req, pool=pool, settings=settings, policy=policy, now=now, runtime=runtime,
                executed_by=plan.executed_by, approved=plan.approved,
            )
        )  # fmt: skip
    return results


async def _switched_off(
    conn: asyncpg.Connection, req: PlannedRequest, solution: Mapping[str, Any], catalogue: Catalogue | None
) -> str | None:
    """Off means off: why the playbook or pattern behind ``req`` is disabled now (else None)."""
    q = queries()
    name = solution["playbook_name"] if solution["source"] == "playbook" else None
    if name:
        control = await conn.fetchrow(q.playbook_control_get, name)
        if control is not None and control["disabled_at"] is not None:
            return (
                f"playbook {name!r} is disabled (by {control['updated_by']} at"
                f" {control['disabled_at']:%Y-%m-%d %H:%M:%S} UTC): its stored solutions do not run automatically"
            )
        if catalogue is not None and catalogue.get(name) is None:
            return f"playbook {name!r} is not in this executor's catalogue (removed or disabled in playbooks_dir)"
    pattern = await conn.fetchrow(q.pattern_of_error, req.error_log_id)
    if pattern is not None and pattern["disabled_at"] is not None:
        return f"pattern {pattern['pattern_name']!r} is disabled: its errors are not remediated automatically"
    return None


async def _approval_reason(
    conn: asyncpg.Connection,
    req: PlannedRequest,
    solution: Mapping[str, Any],
    *,
    settings: Settings,
    now: datetime,
) -> tuple[str | None, list[dict[str, Any]]]:
    """Why a person must decide, read from the database and the current settings (else None)."""
    age = (now - utc_naive(req.event_time)).total_seconds()
    if age > settings.stale_after_s:
        return f"stale event: {age:.0f}s old (stale_after_s={settings.stale_after_s:g})", []
    if settings.recurrence_to_person and req.target_key:
        came_back = await conn.fetchrow(
            queries().object_recurred, req.target_key, now - timedelta(seconds=max(settings.verification_window_s, 3600))
        )  # fmt: skip
        if came_back is not None:
            reason = (
                f"recurred: {came_back['action']} of {req.target_key} at {came_back['executed_at']:%H:%M:%S} UTC did not"
                f" help ({came_back['evidence']}); running again would be a restart loop: a person decides, with the"
                f" history (proposed now: {req.action or 'a manual step'})"
            )
            return reason, await _object_history(conn, req.target_key)
    if req.decision == "approval":
        return f"analysis requires approval: {req.reason}", []
    if not all(spec.safe for spec in req.commands):
        return "a command is not flagged safe", []
    if req.target_key is None:
        return "no single object is bound to the request", []
    # the pattern stored with the error, as it is now, whatever pattern the request names
    pattern = await conn.fetchrow(queries().pattern_of_error, req.error_log_id)
    if pattern is None or pattern["id"] is None:
        return "no pattern is stored with the error, so nothing allows auto_resolve", []
    if req.pattern is None or req.pattern.id != pattern["id"]:
        named = req.pattern.id if req.pattern is not None else None
        return f"the request names pattern {named}; the error's stored pattern is {pattern['id']}", []
    if not pattern["auto_resolve"]:
        return f"pattern {pattern['pattern_name']!r} does not allow auto_resolve (now)", []
    if solution["source"] == "llm" and solution["approved_success_count"] < settings.llm_trust_after_successes:
        return (
            f"untrusted: LLM solution has {solution['approved_success_count']}/{settings.llm_trust_after_successes}"
            " approved successes"
        ), []
    if solution["tripped_at"] is not None or solution["consecutive_failures"] >= settings.breaker_threshold:
        reason = (
            f"circuit breaker open: {solution['consecutive_failures']} consecutive failed or unverified runs"
            f" (breaker_threshold={settings.breaker_threshold})"
        )
        return reason, await _history(conn, req.solution_id)
    effect = await conn.fetchrow(queries().effect_of_solution, req.solution_id)
    if effect is not None:
        why = no_effect_reason(
            effect["effect_uplift_low"], effect["effect_acted_cases"], effect["effect_left_cases"],
            settings.effect_min_cases, describe_effect(effect),
        )  # fmt: skip
        if why:
            return why, []
    return None, []


async def _observe_only(
    conn: asyncpg.Connection, req: PlannedRequest, solution: Mapping[str, Any], *, settings: Settings, now: datetime
) -> _Plan | None:
    """A playbook in trial mode leaves a random share of its eligible cases alone: nothing runs
    and the case joins the comparison group (never in a critical namespace, at most
    ``trial_max_per_window`` per ``trial_window_s``; the fleet lock is held, so the count holds
    across copies). Every random draw is recorded in ``trial_draws``."""
    name = solution["playbook_name"] if solution["source"] == "playbook" else None
    if not name:
        return None
    q = queries()
    trial = await conn.fetchrow(q.trial_get, name)
    if trial is None:
        return None
    left = await conn.fetchval(q.trial_left_in_window, name, now - timedelta(seconds=settings.trial_window_s))
    draw = _trial_draw(req)
    chosen, why = trial_selects(
        draw=draw, fraction=trial["fraction"], namespace=req.namespace, critical=settings.critical_namespaces,
        left_in_window=left, max_per_window=settings.trial_max_per_window,
    )  # fmt: skip
    if not why.startswith("drawn"):
        return None  # not part of the random comparison (critical namespace, the window's cap)
    await conn.execute(q.trial_record_draw, req.request_id, name, req.namespace, "observe" if chosen else "act",
                       draw, trial["fraction"], now)  # fmt: skip
    if not chosen:
        return None
    reason = (
        f"observe only: playbook {name!r} is on trial since {trial['started_at']:%Y-%m-%d %H:%M} UTC (fraction"
        f" {trial['fraction']:g}, {why}); nothing runs, the case joins the comparison group"
    )
    return await _close(conn, req, "observe_only", reason, now, details={"trial": {"draw": draw, "fraction": trial["fraction"]}})


def _trial_draw(req: PlannedRequest) -> float:
    """A uniform draw in [0, 1) for an observe-only trial (the simulator's tests replace it with
    one fixed per object, so a run of the simulated world can be repeated)."""
    return _RANDOM.random()


def describe_effect(row: Mapping[str, Any]) -> str:
    """A solution's measured effect in one line (``solutions.effect_*``), for approvals and reasons."""
    return Effect.from_row(row).describe()


async def _object_history(conn: asyncpg.Connection, target_key: str) -> list[dict[str, Any]]:
    rows = await conn.fetch(queries().object_history, target_key, HISTORY_ATTACHED)
    return [
        {
            "id": r["id"], "execution_status": r["execution_status"], "execution_output": r["execution_output"],
            "execution_time_s": r["execution_time_s"], "verified": r["verified"], "evidence": r["evidence"],
            "executed_at": _aware(r["executed_at"]).isoformat() if r["executed_at"] else None,
            "executed_by": r["executed_by"],
        }
        for r in rows
    ]


async def _quiet_reason(conn: asyncpg.Connection, req: PlannedRequest, *, settings: Settings, now: datetime) -> str | None:
    """Why the object's errors stopped by themselves (else None): its newest live error, read
    from the database (the events ingest stored about it, the repeats folded into its requests),
    is older than ``quiet_after_s``; with a grace period (``grace_s``), older than half of it (the
    error must still be there in the grace period's second half for an action to run)."""
    limits = [(v, name) for v, name in ((settings.quiet_after_s, "quiet_after_s"), (settings.grace_s / 2, "grace_s/2")) if v]
    if not limits:
        return None
    limit, name = min(limits)
    keys = [k for k in (req.target_key, req.subject) if k]
    newest = await conn.fetchval(queries().newest_error_of_object, keys) if keys else None
    newest = max(filter(None, (newest, utc_naive(req.event_time))))
    quiet = (now - newest).total_seconds()
    if quiet <= limit:
        return None
    return (
        f"stopped by itself: no error about {req.target_key or req.subject or 'the object'} since"
        f" {newest:%Y-%m-%d %H:%M:%S} UTC ({quiet:.0f}s, {name}={limit:g}); nothing to run"
    )


def _is_dependency(req: PlannedRequest) -> bool:
    return (req.target or {}).get("type") == "dependency"


def _service_object(dependency: str) -> str | None:
    """The Kubernetes object a ``NAME.NAMESPACE.svc[...]:PORT`` dependency is, by the convention
    the connection-refused playbook uses (a deployment named like its service)."""
    parts = dependency.split(":")[0].split(".")
    if len(parts) >= 3 and parts[2] == "svc":
        return f"k8s:{parts[1]}/deployment/{parts[0]}"
    return None


async def _dependency_outage(conn: asyncpg.Connection, req: PlannedRequest, *, settings: Settings, now: datetime) -> _Plan:
    """A dependency the event's action cannot name (another namespace, outside the cluster):
    one approval per dependency names it and every affected service; nothing is run for it."""
    q = queries()
    dependency = (req.target or {}).get("name", "")
    since = now - timedelta(seconds=settings.systemic_window_s)
    services = await conn.fetchval(q.dependency_services, dependency, since) or [s for s in [req.subject] if s]
    own = _service_object(dependency)
    if own is not None:
        asked = await conn.fetchval(q.requests_for_object, own, since)
        if asked:
            reason = (
                f"dependency {dependency} is acted on through its own object {own} (request {asked[:16]}, from services"
                f" allowed to name it); {len(services)} service(s) named it: {', '.join(services)}"
            )
            return await _close(conn, req, "skipped", reason, now, details={"dependency": dependency, "services": services})
        recent = await conn.fetchrow(q.recent_slots_target, own, ["live", "dry_run"], now)
        if recent["last_at"] is not None and (now - recent["last_at"]).total_seconds() < settings.cooldown_s:
            reason = (
                f"dependency {dependency}: its object {own} was acted on at {recent['last_at']:%H:%M:%S} UTC"
                f" (cooldown_s={settings.cooldown_s:g}); {len(services)} service(s) named it: {', '.join(services)}"
            )
            plan = await _close(conn, req, "skipped", reason, now, details={"dependency": dependency, "services": services})
            plan.repeats_until = recent["last_at"] + timedelta(seconds=settings.cooldown_s)
            return plan
    reason = (
        f"dependency outage: {dependency} is unreachable for {len(services)} service(s) ({', '.join(services)});"
        " it is not an object this event may act on (outside the cluster, or another namespace): a person restores"
        " it, the services are not restarted"
    )
    return await _ask_for_approval(conn, req, reason, [], settings=settings, now=now)


async def _client_of_outage(
    conn: asyncpg.Connection, req: PlannedRequest, *, settings: Settings, now: datetime
) -> tuple[str | None, dict[str, Any] | None]:
    """Why ``req``'s object is a client of a dependency outage (else None): its live errors name
    a host:port that at least ``dependency_outage_services`` services name. Restarting the
    clients does not bring a database or broker back."""
    if not req.target_key:
        return None, None
    since = now - timedelta(seconds=settings.systemic_window_s)
    rows = await conn.fetch(queries().dependency_outages, req.target_key, since, settings.dependency_outage_services)
    if not rows:
        return None, None
    first = rows[0]
    reason = (
        f"dependency outage: {first['dependency']} fails for {len(first['services'])} services"
        f" ({', '.join(first['services'])}); {req.target_key} is one of them: the clients are not restarted,"
        " the dependency is acted on (or asked about) once"
    )
    return reason, {"dependency": first["dependency"], "services": list(first["services"])}


async def _budget_reason(
    conn: asyncpg.Connection, req: PlannedRequest, kinds: list[str], *, settings: Settings, now: datetime
) -> tuple[str | None, datetime | None]:
    """Per object: the cooldown and the hourly cap, over every slot on the object. Returns why
    the object has no budget (else None) and when its cooldown ends (None: the cap, judged
    again after cooldown_s)."""
    recent = await conn.fetchrow(queries().recent_slots_target, req.object_key, kinds, now)
    what = req.target.get("key") if req.target else "this solution and error"
    if recent["last_at"] is not None and (now - recent["last_at"]).total_seconds() < settings.cooldown_s:
        return (
            f"cooldown: {what} was acted on at {recent['last_at']:%H:%M:%S} UTC"
            f" (cooldown_s={settings.cooldown_s:g}, per object)"
        ), recent["last_at"] + timedelta(seconds=settings.cooldown_s)
    if recent["last_hour"] >= settings.max_runs_per_hour:
        return (
            f"rate limit: {recent['last_hour']} actions on {what} in the last hour"
            f" (max_runs_per_hour={settings.max_runs_per_hour}, per object)"
        ), None
    return None, None


async def _fleet_reason(
    conn: asyncpg.Connection, req: PlannedRequest, kinds: list[str], *, settings: Settings, now: datetime
) -> str | None:
    """The fleet budget: automatic actions per window, overall and in the request's namespace."""
    since = now - timedelta(seconds=settings.fleet_window_s)
    counts = await conn.fetchrow(queries().fleet_slots, kinds, since, req.namespace)
    window = f"in the last {settings.fleet_window_s:g}s"
    if counts["total"] >= settings.fleet_max_actions:
        return f"fleet budget: {counts['total']} actions {window} (fleet_max_actions={settings.fleet_max_actions})"
    if req.namespace and counts["namespace"] >= settings.fleet_max_actions_per_namespace:
        return (
            f"fleet budget: {counts['namespace']} actions in namespace {req.namespace} {window}"
            f" (fleet_max_actions_per_namespace={settings.fleet_max_actions_per_namespace})"
        )
    return None


async def _decide_request(
    req: PlannedRequest,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    policy: ExecutionPolicy,
    now: datetime,
    runtime: Runtime,
    catalogue: Catalogue | None = None,
) -> _Plan:
    async with pool.acquire() as conn, conn.transaction():
        plan = await _judge(conn, req, settings=settings, policy=policy, now=now, runtime=runtime, catalogue=catalogue)
        if not plan.duplicate:
            # Repeats of this error on this object fold into the request for as long as they
            # would get the same decision (handlers.analyze._fold_repeats).
            until = plan.repeats_until or now + timedelta(seconds=settings.cooldown_s)
            await conn.execute(queries().hold_repeats, req.request_id, until)
        return plan


async def _judge(
    conn: asyncpg.Connection,
    req: PlannedRequest,
    *,
    settings: Settings,
    policy: ExecutionPolicy,
    now: datetime,
    runtime: Runtime,
    catalogue: Catalogue | None = None,
) -> _Plan:
    """The guards of the module docstring, in one transaction; the first that applies decides."""
    q = queries()
    recheck = now + timedelta(seconds=settings.repeat_recheck_s)
    # 1. off / kill switch: nothing is claimed, so a later delivery can still be judged.
    if settings.execution_mode == "off":
        reason = "execution_mode is off"
    else:
        _, reason = await kill_switch_on(conn, settings)
    if reason:
        await _decide(conn, req, "skipped", reason, now)
        return _Plan([_result(req, "skipped", reason, now)], repeats_until=recheck)

    # 2. the claim; a claimed request runs again only once, after a person approved it
    claimed = await conn.fetchval(
        q.claim_request, req.request_id, req.hash_signature, req.solution_id, req.error_log_id,
        runtime.instance, now, req.target_key, req.namespace,
    )  # fmt: skip
    if claimed is None:
        approver = await conn.fetchval(q.approver_of_waiting_request, req.request_id)
        if approver is not None:
            return await _start_approved(conn, req, approver, settings=settings, policy=policy, now=now)
        reason = "request already claimed (redelivered, replayed, or handled by another executor)"
        await _decide(conn, req, "duplicate", reason, now)
        return _Plan([_result(req, "duplicate", reason, now)], duplicate=True)

    # 3. one decision at a time per object, across every executor copy
    await conn.execute(q.lock_object, req.object_key)
    solution = await conn.fetchrow(q.solution_state, req.solution_id)
    if solution is None:
        return await _close(conn, req, "denied", f"solution {req.solution_id} does not exist", now)
    if _is_dependency(req):  # nothing the service may run: a person restores it
        return await _dependency_outage(conn, req, settings=settings, now=now)
    refused = _refusals(req, policy)
    if not req.commands:
        refused = [{"type": "", "command": "", "reason": "the request has no commands"}]
    if refused:
        reason = "refused by the execution policy: " + "; ".join(r["reason"] for r in refused)
        log.warning("request %s denied: %s", req.request_id, reason)
        return await _close(conn, req, "denied", reason, now, details={"refused": refused})

    # 4. history is never acted on
    if req.replay:
        return await _close(conn, req, "skipped", "history (replayed or backfilled event): never remediated", now)

    # 5. off means off
    off = await _switched_off(conn, req, solution, catalogue)
    if off:
        plan = await _close(conn, req, "skipped", off, now)
        plan.repeats_until = recheck
        return plan

    # 5b. errors that stopped by themselves before any action: nothing runs
    reason = await _quiet_reason(conn, req, settings=settings, now=now)
    if reason:
        plan = await _close(conn, req, "skipped", reason, now)
        plan.repeats_until = recheck
        return plan

    # 6. per object: cooldown and hourly cap, over live runs (in dry-run mode would-be runs too)
    slot = "dry_run" if settings.execution_mode == "dry-run" else "live"
    kinds = ["live", "dry_run"] if slot == "dry_run" else ["live"]
    reason, free_at = await _budget_reason(conn, req, kinds, settings=settings, now=now)
    if reason:
        plan = await _close(conn, req, "skipped", reason, now)
        plan.repeats_until = free_at
        return plan

    # 6b. a dependency outage: the services that cannot reach it are never restarted
    reason, details = await _client_of_outage(conn, req, settings=settings, now=now)
    if reason:
        return await _close(conn, req, "skipped", reason, now, details=details)

    # 7. needs a person?
    reason, history = await _approval_reason(conn, req, solution, settings=settings, now=now)
    if reason:
        return await _ask_for_approval(conn, req, reason, history, settings=settings, now=now)

    # 8. wait for the settle time: the incident's shape is in the database before anything runs
    until = utc_naive(req.requested_at) + timedelta(seconds=settings.settle_s)
    grace = utc_naive(req.event_time) + timedelta(seconds=settings.grace_s)
    if settings.grace_s and now < grace and grace > until:
        raise NotSettled(grace, grace=True)  # wait and see: many errors stop by themselves (issue 25)
    if settings.settle_s and now < until:
        raise NotSettled(until)

    # 9. the fleet: a node going bad, the systemic hold, then the budget (one fleet-wide lock)
    await conn.execute(q.lock_fleet)
    since = now - timedelta(seconds=settings.systemic_window_s)
    node = (req.signs or {}).get("host")
    if node:
        objects = await conn.fetchval(q.node_only_objects, node, since)
        if len(objects) >= settings.node_hold_objects and (req.subject in objects or req.target_key in objects):
            reason = (
                f"node {node} is going bad: {len(objects)} workloads fail only on it in the last"
                f" {settings.systemic_window_s:g}s ({', '.join(objects)}; node_hold_objects={settings.node_hold_objects});"
                " per-workload restarts stop, one incident names the node (cordon and drain it)"
            )
            return await _hold(conn, req, f"node:{node}", reason, settings=settings, now=now)
    demand = await conn.fetchval(q.systemic_demand, req.action, since)
    if demand > settings.systemic_hold_objects:
        reason = (
            f"systemic hold: {demand} distinct objects needed {req.action} in the last {settings.systemic_window_s:g}s"
            f" (systemic_hold_objects={settings.systemic_hold_objects}); automatic runs stop, one approval for the incident"
        )
        return await _hold(conn, req, req.action, reason, settings=settings, now=now)
    reason = await _fleet_reason(conn, req, kinds, settings=settings, now=now)
    if reason:
        return await _ask_for_approval(conn, req, reason, [], settings=settings, now=now)

    # 9b. an observe-only trial of the playbook may leave this eligible case alone (issue 25)
    left_alone = await _observe_only(conn, req, solution, settings=settings, now=now)
    if left_alone is not None:
        return left_alone

    # 10. dry run
    if slot == "dry_run":
        await conn.execute(q.take_slot, req.request_id, "dry_run", now, "done")
        return _Plan([await _record_dry_run(conn, req, policy, now, by=AUTO)])

    # 11. live: the slot is committed before anything runs
    await conn.execute(q.take_slot, req.request_id, "live", now, "running")
    return _Plan([], run=True)


async def _close(
    conn: asyncpg.Connection,
    req: PlannedRequest,
    outcome: str,
    reason: str,
    now: datetime,
    *,
    details: dict[str, Any] | None = None,
    by: str | None = None,
) -> _Plan:
    """A final decision that runs nothing: logged, the request finished, the outcome returned."""
    await _decide(conn, req, outcome, reason, now, details=details, by=by)
    await _finish(conn, req, outcome, now)
    return _Plan([_result(req, outcome, reason, now, details=details or {}, executed_by=by)])


async def _start_approved(
    conn: asyncpg.Connection,
    req: PlannedRequest,
    approver: str,
    *,
    settings: Settings,
    policy: ExecutionPolicy,
    now: datetime,
) -> _Plan:
    """A person approved the waiting request: it runs here, once. The approval overrides
    staleness, the analysis view, the breaker, the budgets and the hold; not ``off``, the kill
    switch (checked before) or the policy."""
    q = queries()
    await conn.execute(q.lock_object, req.object_key)
    if await conn.fetchval(q.start_approved_run, req.request_id, "running") is None:
        reason = "request already claimed (redelivered, replayed, or handled by another executor)"
        await _decide(conn, req, "duplicate", reason, now)
        return _Plan([_result(req, "duplicate", reason, now)], duplicate=True)
    if not req.commands:
        reason = f"approved by {approver}: nothing the service can run for {req.object_key}; it is restored by hand"
        return await _close(conn, req, "skipped", reason, now, by=approver)
    refused = _refusals(req, policy)
    if refused:
        reason = "refused by the execution policy: " + "; ".join(r["reason"] for r in refused)
        return await _close(conn, req, "denied", reason, now, details={"refused": refused}, by=approver)
    if settings.execution_mode == "dry-run":
        await conn.execute(q.take_slot, req.request_id, "dry_run", now, "done")
        return _Plan([await _record_dry_run(conn, req, policy, now, by=approver)])
    await conn.execute(q.take_slot, req.request_id, "live", now, "running")
    return _Plan([], run=True, executed_by=approver, approved=True)


async def _ask_for_approval(
    conn: asyncpg.Connection,
    req: PlannedRequest,
    reason: str,
    history: list[dict[str, Any]],
    *,
    settings: Settings,
    now: datetime,
) -> _Plan:
    q = queries()
    pending = await conn.fetchval(q.pending_approval_for_object, req.object_key, now)
    if pending is not None:
        why = f"approval {pending} for {req.target_key or req.subject or 'this solution and error'} is already pending ({reason})"
        return await _close(conn, req, "skipped", why, now)
    expires = now + timedelta(seconds=settings.approval_ttl_s)
    row = await conn.fetchrow(
        q.insert_approval, req.request_id, req.hash_signature, req.solution_id,
        req.model_dump(mode="json"), reason, now, expires, req.object_key,
    )  # fmt: skip
    await conn.execute(q.await_approval, req.request_id)
    event = ApprovalEvent(
        approval_id=row["id"], request_id=req.request_id, hash_signature=req.hash_signature,
        solution_id=req.solution_id, status="pending", reason=reason, expires_at=_aware(row["expires_at"]),
        history=history, target_key=req.target_key,
    )  # fmt: skip
    details = {"approval_id": row["id"], "approval": event.model_dump(mode="json")}
    await _decide(conn, req, "pending_approval", reason, now, details={"approval_id": row["id"], "history": history})
    return _Plan([_result(req, "pending_approval", reason, now, details=details)])


async def _hold(
    conn: asyncpg.Connection, req: PlannedRequest, key: str, reason: str, *, settings: Settings, now: datetime
) -> _Plan:
    """An incident hold: this object joins the one pending incident of ``key`` (the kind of
    action for the systemic hold, ``node:NAME`` for a node going bad)."""
    q = queries()
    incident = await conn.fetchrow(q.open_incident, key, now)
    if incident is None:
        await conn.execute(q.expire_incident_for_action, key, now)
        incident = await conn.fetchrow(
            q.insert_incident, key, reason, now, now + timedelta(seconds=settings.approval_ttl_s)
        )
    added = await conn.fetchval(
        q.add_incident_object, incident["id"], req.object_key, req.request_id, req.namespace, req.signs, now
    )
    if added is None:
        return await _close(conn, req, "skipped", f"{req.target_key} is already held in incident {incident['id']}", now)
    await conn.execute(q.await_approval, req.request_id)
    event = await incident_event(conn, incident["id"], req)
    await _decide(conn, req, "held", reason, now, details={"incident_id": incident["id"]})
    details = {"incident_id": incident["id"], "approval": event.model_dump(mode="json")}
    return _Plan([_result(req, "pending_approval", reason, now, details=details)])


async def incident_summary(conn: asyncpg.Connection | asyncpg.Pool, incident_id: int) -> dict[str, Any]:
    """Every object of an incident and the signs they share (namespace, host/node, dependency)."""
    rows = await conn.fetch(queries().incident_objects, incident_id)
    signs: dict[str, dict[str, int]] = {}
    for row in rows:
        for key, value in (row["signs"] or {}).items():
            counts = signs.setdefault(key, {})
            counts[str(value)] = counts.get(str(value), 0) + 1
    objects = [
        {"target_key": r["target_key"], "request_id": r["request_id"], "namespace": r["namespace"], "status": r["status"]}
        for r in rows
    ]
    shared = {k: v for k, v in signs.items() if len(v) == 1 and sum(v.values()) == len(rows)}
    return {"objects": objects, "signs": signs, "shared": {k: next(iter(v)) for k, v in shared.items()}}


async def incident_event(
    conn: asyncpg.Connection | asyncpg.Pool, incident_id: int, req: PlannedRequest | None = None
) -> ApprovalEvent:
    row = await conn.fetchrow(queries().incident_get, incident_id)
    summary = await incident_summary(conn, incident_id)
    first = summary["objects"][0] if summary["objects"] else {}
    status = {"pending": "pending", "decided": "approved", "expired": "expired"}[row["status"]]
    if row["status"] == "decided" and not any(o["status"] == "approved" for o in summary["objects"]):
        status = "rejected"
    return ApprovalEvent(
        approval_id=row["id"], request_id=req.request_id if req else first.get("request_id", ""),
        hash_signature=req.hash_signature if req else "", solution_id=req.solution_id if req else 0,
        status=status, reason=row["reason"], decided_by=row["decided_by"], expires_at=_aware(row["expires_at"]),
        target_key=req.target_key if req else None,
        incident={"id": row["id"], "action": row["action"], **summary},
    )  # fmt: skip


async def _record_dry_run(
    conn: asyncpg.Connection, req: PlannedRequest, policy: ExecutionPolicy, now: datetime, *, by: str
) -> ExecutionResult:
    plan = _dry_run_plan(req, policy)
    reason = "dry-run mode: recorded what would run, ran nothing"
    await _decide(conn, req, "dry_run", reason, now, details={"would_run": plan}, by=by)
    await _finish(conn, req, "dry_run", now)
    return _result(req, "dry_run", reason, now, executed_by=by, details={"would_run": plan})


def _overall(results: list[CommandResult]) -> str:
    if not results:
        return "failed"
    if any(r.status == "timeout" for r in results):
        return "timeout"
    if any(r.status != "success" for r in results):
        return "failed"
    return "success"


def _output(results: list[CommandResult], limit: int) -> str:
    parts = []
    for r in results:
        code = "" if r.exit_code is None else f" exit={r.exit_code}"
        parts.append(f"$ {r.command}\n[{r.status}{code} {r.duration_s:.2f}s]\n{r.output.rstrip()}")
    # Each output is already masked and bounded; mask and bound the whole once more.
    return bound_text("\n".join(parts), limit)


async def _retrying(what: str, attempt, *, deadline_s: float = 120.0):
    """Run ``attempt()`` until it succeeds; retry transient database errors with backoff.

    Used after a command has run: the run cannot be repeated, so its record must not be lost
    to a database blip. Gives up (raises) after ``deadline_s``.
    """
    delay, started = 0.2, time.monotonic()
    while True:
        try:
            return await attempt()
        except Exception as exc:
            if not is_transient_db_error(exc) or time.monotonic() - started > deadline_s:
                raise
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, exc, delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _run_and_record(
    req: PlannedRequest,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    policy: ExecutionPolicy,
    now: datetime,
    runtime: Runtime,
    executed_by: str,
    approved: bool,
) -> ExecutionResult:
    started = time.monotonic()
    commands = [spec.model_dump() for spec in req.commands]
    ran = await run_commands(
        commands, policy, dry_run=False,
        elasticsearch=runtime.elasticsearch, http_client=runtime.http_client, env=runtime.env,
    )  # fmt: skip
    duration = time.monotonic() - started
    status = _overall(ran)
    output = _output(ran, policy.output_limit_bytes)
    finished = now + timedelta(seconds=duration)
    executed_by = executed_by[:50]
    q = queries()

    async def record() -> tuple[int, asyncpg.Record | None]:
        async with pool.acquire() as conn, conn.transaction():
            history_id = await conn.fetchval(
                q.insert_history, req.error_log_id, req.solution_id, status, output, duration, now,
                executed_by, req.request_id, req.target_key, req.target,
            )  # fmt: skip
            if history_id is None:  # an earlier attempt committed; its answer was lost
                return await conn.fetchval(q.history_id_for_request, req.request_id), None
            await conn.execute(q.finish_request, req.request_id, "done", status, finished)
            state = await conn.fetchrow(
                q.solution_after_run, req.solution_id, status != "success", approved,
                settings.breaker_threshold, finished,
            )  # fmt: skip
            if status == "success":
                await conn.execute(
                    q.insert_verification, history_id, req.hash_signature, req.solution_id, req.request_id,
                    req.error_log_id, finished, finished + timedelta(seconds=settings.verification_window_s),
                    req.target_key, req.action,
                )  # fmt: skip
            return history_id, state

    history_id, state = await _retrying(f"recording run of request {req.request_id}", record)
    details: dict[str, Any] = {
        "execution_time_s": round(duration, 3),
        "commands": [
            {"type": r.type, "command": mask_text(r.command), "status": r.status, "exit_code": r.exit_code,
             "refused": r.refused, "reason": r.reason}
            for r in ran
        ],
    }  # fmt: skip
    if state is not None:
        details["consecutive_failures"] = state["consecutive_failures"]
        details["breaker_tripped"] = state["tripped_at"] is not None
    if status == "success":
        details["verification_until"] = _aware(finished + timedelta(seconds=settings.verification_window_s)).isoformat()
    return _result(
        req, status, f"{len(ran)} of {len(req.commands)} commands ran; {status}", finished,
        execution_history_id=history_id, executed_by=executed_by, details=details,
    )  # fmt: skip


# --- verification ------------------------------------------------------------------------


def _verification_result(row: Mapping[str, Any], outcome: str, now: datetime, state: Any) -> ExecutionResult:
    return ExecutionResult(
        request_id=row["request_id"] or "",
        hash_signature=row["hash_signature"],
        solution_id=row["solution_id"],
        error_log_id=row["error_log_id"] or 0,
        outcome=outcome,
        reason=row["evidence"] or "",
        execution_history_id=row["execution_history_id"],
        details={
            "verified_success_rate": float(state["verified_success_rate"]) if state["verified_success_rate"] is not None else None,
            "consecutive_failures": state["consecutive_failures"],
            "breaker_tripped": state["tripped_at"] is not None,
        },
        at=_aware(now),
    )


async def _apply_verdicts(
    conn: asyncpg.Connection, rows: list[asyncpg.Record], outcome: str, settings: Settings, now: datetime
) -> list[ExecutionResult]:
    out = []
    for row in rows:
        state = await conn.fetchrow(
            queries().solution_verified, row["solution_id"], outcome == "resolved", row["execution_history_id"],
            settings.breaker_threshold, now,
        )  # fmt: skip
        out.append(_verification_result(row, outcome, now, state))
    return out


async def record_recurrence(
    req: PlannedRequest,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    now: datetime | None = None,
) -> list[ExecutionResult]:
    """The object ``req`` is bound to needed an action again at its event time: a pending
    verification of a run on that object, finished before then and whose window covers it, is
    ``recurred``. Another object with the same error proves nothing about this
    run. (A run recorded before objects were bound is judged by its error hash.)"""
    now = utc_naive(now)
    at = utc_naive(req.event_time)
    evidence = f"{req.target_key or 'the error'} needed {req.action or 'the action'} again at {at:%Y-%m-%d %H:%M:%S} UTC (request {req.request_id})"
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(
            queries().recurred_by_request, req.hash_signature, at, now, evidence, req.target_key
        )
        return await _apply_verdicts(conn, rows, "recurred", settings, now)


async def verify_outcomes(*, pool: asyncpg.Pool, settings: Settings, now: datetime | None = None) -> list[ExecutionResult]:
    """Turn pending verifications into ``recurred`` (the ingest stage saw the error again after
    the run) or ``resolved`` (the window passed in silence). Recurrence is checked first, so an
    occurrence inside the window that is ingested late still counts until the window is judged."""
    now = utc_naive(now)
    q = queries()
    async with pool.acquire() as conn, conn.transaction():
        recurred = await conn.fetch(q.recurred_by_occurrence, now)
        results = await _apply_verdicts(conn, recurred, "recurred", settings, now)
        resolved = await conn.fetch(q.resolve_verifications, now)
        results += await _apply_verdicts(conn, resolved, "resolved", settings, now)
    return results


# --- approvals -----------------------------------------------------------------------------


async def list_approvals(
    *, pool: asyncpg.Pool, status: str | None = "pending", limit: int = 100
) -> list[dict[str, Any]]:
    rows = await pool.fetch(queries().approvals_list, status, limit)
    return [dict(r) for r in rows]


async def approve(
    approval_id: int,
    by: str,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    now: datetime | None = None,
) -> tuple[ApprovalEvent, ExecutionRequest]:
    """Record a person's approval; return the event and the pointer to publish on the execution
    topic. Nothing runs here: the execute stage of the running service carries the request out
    (once), with ``executed_by`` = ``by``. It also runs approvals whose pointer never arrived
    (:func:`approved_waiting`). A person's approval overrides staleness, the analysis view, the
    breaker, the budgets and the hold; it does not override the kill switch, ``off`` or the
    policy."""
    now = utc_naive(now)
    by = _approver(by)
    q = queries()
    async with pool.acquire() as conn, conn.transaction():
        await _can_run(conn, settings)
        row = await conn.fetchrow(q.approval_decide, approval_id, "approved", by, now, None)
        if row is None:
            raise ApprovalError(await _why_not_pending(conn, approval_id, now))
        req = await _stored(conn, row["request_id"], row["request"])
        await _decide(conn, req, "approved", f"approved by {by}", now, details={"approval_id": approval_id}, by=by)
    return _approval_event(row), req.pointer()


def _approver(by: str) -> str:
    by = (by or "").strip()[:50]
    if not by:
        raise ApprovalError("an approver name is required")
    return by


async def _can_run(conn: asyncpg.Connection, settings: Settings) -> None:
    if settings.execution_mode == "off":
        raise ApprovalError("execution_mode is off: nothing can run; the approval stays pending")
    killed, why = await kill_switch_on(conn, settings)
    if killed:
        raise ApprovalError(f"{why}: the approval stays pending")


async def _stored(
    conn: asyncpg.Connection | asyncpg.Pool, request_id: str, fallback: Mapping[str, Any] | None = None
) -> PlannedRequest:
    """The stored request; for an approval from before requests were stored, the copy the
    approval row holds (``fallback``), stored now so the execute stage can load it."""
    row = await conn.fetchrow(queries().planned_request, request_id)
    if row is not None:
        return PlannedRequest.model_validate(row["request"])
    if fallback is None:
        raise ApprovalError(f"request {request_id} is not stored")
    from handlers.analyze import store_request

    return await store_request(conn, PlannedRequest.model_validate(fallback))


async def approve_incident(
    incident_id: int,
    by: str,
    objects: list[str] | None = None,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    now: datetime | None = None,
) -> tuple[ApprovalEvent, list[ExecutionRequest]]:
    """Approve a held incident for every object (``objects`` None) or the named ones (target
    keys); the rest are rejected. Returns the pointers to publish: the execute stage runs each
    approved object's request once."""
    now = utc_naive(now)
    by = _approver(by)
    q = queries()
    async with pool.acquire() as conn, conn.transaction():
        await _can_run(conn, settings)
        incident = await conn.fetchrow(q.incident_decide, incident_id, by, now)
        if incident is None:
            raise ApprovalError(await _why_incident_not_pending(conn, incident_id, now))
        held = {r["target_key"]: r for r in await conn.fetch(q.incident_objects, incident_id)}
        chosen = list(held) if objects is None else list(dict.fromkeys(objects))
        unknown = [o for o in chosen if o not in held]
        if unknown:
            raise ApprovalError(f"incident {incident_id} does not hold {', '.join(unknown)}")
        pointers = []
        for key, row in held.items():
            req = await _stored(conn, row["request_id"])
            if key in chosen:
                await conn.execute(q.incident_object_decide, incident_id, key, "approved", by, now)
                await _decide(conn, req, "approved", f"incident {incident_id} approved by {by}", now,
                              details={"incident_id": incident_id}, by=by)  # fmt: skip
                pointers.append(req.pointer())
            else:
                await conn.execute(q.incident_object_decide, incident_id, key, "rejected", by, now)
                await _close(conn, req, "denied", f"incident {incident_id}: {by} approved other objects", now, by=by)
        event = await incident_event(conn, incident_id)
    return event, pointers


async def reject_incident(
    incident_id: int, by: str, reason: str | None = None, *, pool: asyncpg.Pool, now: datetime | None = None
) -> tuple[ApprovalEvent, list[ExecutionResult]]:
    now = utc_naive(now)
    by = (by or "").strip()[:50] or "unknown"
    q = queries()
    results = []
    async with pool.acquire() as conn, conn.transaction():
        if await conn.fetchrow(q.incident_decide, incident_id, by, now) is None:
            raise ApprovalError(await _why_incident_not_pending(conn, incident_id, now))
        why = f"incident {incident_id} rejected by {by}" + (f": {reason}" if reason else "")
        for row in await conn.fetch(q.incident_objects, incident_id):
            await conn.execute(q.incident_object_decide, incident_id, row["target_key"], "rejected", by, now)
            req = await _stored(conn, row["request_id"])
            results += (await _close(conn, req, "denied", why, now, by=by)).results
        event = await incident_event(conn, incident_id)
    return event, results


async def _why_incident_not_pending(conn: asyncpg.Connection, incident_id: int, now: datetime) -> str:
    row = await conn.fetchrow(queries().incident_get, incident_id)
    if row is None:
        return f"incident {incident_id} does not exist"
    if row["status"] == "pending" and row["expires_at"] <= now:
        return f"incident {incident_id} expired at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC"
    return f"incident {incident_id} is already {row['status']} (by {row['decided_by']})"


async def list_incidents(*, pool: asyncpg.Pool, status: str | None = "pending", limit: int = 50) -> list[dict[str, Any]]:
    out = []
    for row in await pool.fetch(queries().incidents_list, status, limit):
        out.append({**dict(row), **await incident_summary(pool, row["id"])})
    return out


async def approved_waiting(*, pool: asyncpg.Pool, settings: Settings, now: datetime | None = None) -> list[ExecutionRequest]:
    """Pointers of approved requests the execute stage has not started after
    ``approved_sweep_after_s`` (the approver's publish was lost): the stage runs them."""
    now = utc_naive(now)
    if settings.execution_mode == "off" or (await kill_switch_on(pool, settings))[0]:
        return []  # they wait (approved) until execution is allowed again; no decision per pass
    since = now - timedelta(seconds=settings.approved_sweep_after_s)
    rows = await pool.fetch(queries().approved_waiting, since)
    return [PlannedRequest.model_validate(r["request"]).pointer() for r in rows]


async def _why_not_pending(conn: asyncpg.Connection, approval_id: int, now: datetime) -> str:
    row = await conn.fetchrow(queries().approval_get, approval_id)
    if row is None:
        return f"approval {approval_id} does not exist"
    if row["status"] == "pending" and row["expires_at"] <= now:
        return f"approval {approval_id} expired at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC"
    return f"approval {approval_id} is already {row['status']} (by {row['decided_by']})"


async def reject(
    approval_id: int,
    by: str,
    reason: str | None = None,
    *,
    pool: asyncpg.Pool,
    now: datetime | None = None,
) -> tuple[ApprovalEvent, list[ExecutionResult]]:
    now = utc_naive(now)
    by = (by or "").strip()[:50] or "unknown"
    async with pool.acquire() as conn, conn.transaction():
        row = await conn.fetchrow(
            queries().approval_decide, approval_id, "rejected", by, now, f"rejected: {reason}" if reason else None
        )
        if row is None:
            raise ApprovalError(await _why_not_pending(conn, approval_id, now))
        req = await _stored(conn, row["request_id"], row["request"])
        why = f"rejected by {by}" + (f": {reason}" if reason else "")
        plan = await _close(conn, req, "denied", why, now, details={"approval_id": approval_id}, by=by)
    return _approval_event(row), plan.results


async def expire_approvals(
    *, pool: asyncpg.Pool, now: datetime | None = None
) -> tuple[list[ApprovalEvent], list[ExecutionResult]]:
    """Deny every pending approval and incident past its expiry."""
    now = utc_naive(now)
    q = queries()
    events, results = [], []
    async with pool.acquire() as conn, conn.transaction():
        for row in await conn.fetch(q.approvals_expire, now):
            req = await _stored(conn, row["request_id"], row["request"])
            why = f"approval {row['id']} expired undecided at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC"
            results += (await _close(conn, req, "denied", why, now, details={"approval_id": row["id"], "expired": True})).results
            events.append(_approval_event(row))
        for row in await conn.fetch(q.incidents_expire, now):
            why = f"incident {row['id']} expired undecided at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC"
            for obj in await conn.fetch(q.incident_objects, row["id"]):
                await conn.execute(q.incident_object_decide, row["id"], obj["target_key"], "expired", None, now)
                req = await _stored(conn, obj["request_id"])
                results += (await _close(conn, req, "denied", why, now, details={"incident_id": row["id"]})).results
            events.append(await incident_event(conn, row["id"]))
    return events, results


# --- the reaper ----------------------------------------------------------------------------


async def reap_lost_runs(*, pool: asyncpg.Pool, settings: Settings, now: datetime | None = None) -> list[ExecutionResult]:
    """Runs that took their live slot more than ``run_lost_after_s`` ago and never recorded an
    outcome (the executor crashed, or hung past every timeout): each gets an ``unknown``
    execution_history row (the success rate and the breaker count it as a failure), a 'lost'
    decision, and its request is finished, so it is never run again without a new decision."""
    now = utc_naive(now)
    q = queries()
    results = []
    async with pool.acquire() as conn, conn.transaction():
        for row in await conn.fetch(q.lost_runs, now - timedelta(seconds=settings.run_lost_after_s)):
            req = await _stored(conn, row["request_id"]) if row["planned"] else None
            if req is None:  # a run from before requests were stored; record what the claim knows
                req = PlannedRequest(
                    request_id=row["request_id"], error_log_id=row["error_log_id"] or 0,
                    hash_signature=row["hash_signature"], solution_id=row["solution_id"], solution_source="manual",
                    commands=[], decision="approval", reason="", event_time=row["slot_at"], requested_at=row["slot_at"],
                )  # fmt: skip
            reason = (
                f"lost: the run claimed by {row['claimed_by']} at {row['slot_at']:%Y-%m-%d %H:%M:%S} UTC recorded"
                f" no outcome within run_lost_after_s={settings.run_lost_after_s:g} (crash or timeout);"
                " recorded as unknown, not re-run without a decision"
            )
            history_id = await conn.fetchval(
                q.insert_history, req.error_log_id, req.solution_id, "unknown", reason,
                (now - row["slot_at"]).total_seconds(), row["slot_at"], (row["claimed_by"] or AUTO)[:50],
                req.request_id, req.target_key, req.target,
            )  # fmt: skip
            await conn.execute(q.finish_request, req.request_id, "done", "lost", now)
            state = await conn.fetchrow(q.solution_after_run, req.solution_id, True, False, settings.breaker_threshold, now)
            await _decide(conn, req, "lost", reason, now, details={"execution_history_id": history_id})
            log.error("execution request %s: %s", req.request_id[:16], reason)
            details = {"claimed_by": row["claimed_by"]}
            if state is not None:
                details["consecutive_failures"] = state["consecutive_failures"]
                details["breaker_tripped"] = state["tripped_at"] is not None
            results.append(_result(req, "lost", reason, now, execution_history_id=history_id, details=details))
    return results


async def set_kill_switch(on: bool, by: str, *, pool: asyncpg.Pool, now: datetime | None = None) -> dict[str, Any]:
    row = await pool.fetchrow(queries().kill_switch_set, on, (by or "unknown")[:50], utc_naive(now))
    return dict(row)


async def get_kill_switch(*, pool: asyncpg.Pool) -> dict[str, Any]:
    row = await pool.fetchrow(queries().kill_switch_get)
    return dict(row) if row else {"kill_switch": False, "updated_by": None, "updated_at": None}


async def set_playbook_enabled(
    name: str, enabled: bool, by: str, *, pool: asyncpg.Pool, now: datetime | None = None
) -> dict[str, Any]:
    """Switch a playbook off (its stored solutions stop running automatically in every executor
    copy, at their next decision) or back on."""
    now = utc_naive(now)
    row = await pool.fetchrow(queries().playbook_control_set, name[:100], None if enabled else now, (by or "unknown")[:50], now)
    return dict(row)


async def list_playbook_controls(*, pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return [dict(r) for r in await pool.fetch(queries().playbook_controls)]
