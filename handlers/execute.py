"""The execution stage's decisions: whether a request runs, and what is recorded when it does.

Plain async functions over an asyncpg pool; no broker. The stream (``streams/execute.py``), the
approvals CLI and the tests call them directly, and publish what they return.

The guards, in order (the first that applies decides):

1. ``execution_mode=off`` or the kill switch (the setting, or the ``resolver_controls`` row)
   -> ``skipped``. Nothing is claimed, so the request can still run later if redelivered.
2. The claim: ``execution_requests`` gets the request id once. Already there -> ``duplicate``.
   Replays and two executors consuming the same request both end here.
3. Under ``pg_advisory_xact_lock(hash, solution)`` (every later guard sees a consistent view
   across instances): the solution must exist (``denied``), and every command must pass the
   policy (``denied``, listing the refusals: approval could not make them runnable).
4. A request marked ``replay`` -> ``skipped`` (replays never remediate).
5. Needs a person -> ``pending_approval`` (stored and returned with an approval event): the
   event is older than ``stale_after_s``; the analysis stage decided ``approval``; a command is
   not flagged safe; or the breaker is open (``consecutive_failures >= breaker_threshold`` or
   ``tripped_at`` set), with the solution's recent history attached. One pending approval per
   solution and hash is enough: further ones are ``skipped``.
6. Cooldown (a run of this solution for this hash within ``cooldown_s``) and the hourly cap
   (``max_runs_per_hour``) -> ``skipped``. Counted over ``execution_requests.slot_at`` under the
   lock, so a run still in flight counts: 1,000 identical requests cause one run.
7. ``dry-run`` -> ``dry_run`` with what would have run; nothing runs, no history row.
8. ``live`` -> the slot is taken and committed, the commands run (each one evaluated again by
   the executors), then exactly one ``execution_history`` row is written with the request id.

After a successful run the hash is watched for ``verification_window_s``: any later occurrence
(a request about a newer event, ``error_occurrences``, ``error_logs.last_seen_at``) turns it
``recurred``, silence turns it ``resolved`` (:func:`verify_outcomes`).
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import asyncpg

from elk_resolver.db import is_transient_db_error, queries
from elk_resolver.executors import CommandResult, run_commands
from elk_resolver.executors.result import bound_text
from elk_resolver.masking import mask_text
from elk_resolver.policy import ExecutionPolicy, evaluate
from streams.contracts import ApprovalEvent, ExecutionRequest, ExecutionResult

if TYPE_CHECKING:
    import httpx
    from elasticsearch import AsyncElasticsearch

    from elk_resolver.settings import Settings

log = logging.getLogger(__name__)

AUTO = "auto-resolver"
HISTORY_ATTACHED = 10


class ApprovalError(RuntimeError):
    """An approval cannot be decided (unknown, already decided, expired, or execution stopped)."""


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


def _result(req: ExecutionRequest, outcome: str, reason: str, now: datetime, **extra: Any) -> ExecutionResult:
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
    req: ExecutionRequest,
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
        decision, reason, details or {}, by, now,
    )  # fmt: skip


async def _finish(conn: asyncpg.Connection, req: ExecutionRequest, outcome: str, now: datetime) -> None:
    await conn.execute(queries().finish_request, req.request_id, "done", outcome, now)


def _refusals(req: ExecutionRequest, policy: ExecutionPolicy) -> list[dict[str, str]]:
    refused = []
    for spec in req.commands:
        verdict = evaluate(spec.model_dump(), policy)
        if not verdict.allowed:
            refused.append({"type": spec.type, "command": mask_text(spec.command), "reason": verdict.reason})
    return refused


def _dry_run_plan(req: ExecutionRequest, policy: ExecutionPolicy) -> list[dict[str, Any]]:
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


async def handle_request(
    req: ExecutionRequest,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    policy: ExecutionPolicy,
    now: datetime | None = None,
    runtime: Runtime | None = None,
) -> list[ExecutionResult]:
    """Decide, and maybe run, one execution request; return every outcome to publish.

    Safe to call again with the same request (redelivery, replay, retry after an error): the
    claim makes every call after the first a ``duplicate`` that runs nothing.
    """
    now = utc_naive(now)
    runtime = runtime or Runtime()
    results = await record_recurrence(
        req.hash_signature, req.event_time, pool=pool, settings=settings, now=now, request_id=req.request_id
    )
    plan = await _decide_request(req, pool=pool, settings=settings, policy=policy, now=now, runtime=runtime)
    results += plan.results
    if plan.run:
        results.append(
            await _run_and_record(
                req, pool=pool, settings=settings, policy=policy, now=now, runtime=runtime,
                executed_by=plan.executed_by, approved=plan.approved,
            )
        )  # fmt: skip
    return results


async def _decide_request(
    req: ExecutionRequest,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    policy: ExecutionPolicy,
    now: datetime,
    runtime: Runtime,
) -> _Plan:
    q = queries()
    async with pool.acquire() as conn, conn.transaction():
        # 1. off / kill switch: nothing is claimed, so a later delivery can still be judged.
        if settings.execution_mode == "off":
            reason = "execution_mode is off"
        else:
            _, reason = await kill_switch_on(conn, settings)
        if reason:
            await _decide(conn, req, "skipped", reason, now)
            return _Plan([_result(req, "skipped", reason, now)])

        # 2. the claim
        claimed = await conn.fetchval(
            q.claim_request, req.request_id, req.hash_signature, req.solution_id, req.error_log_id,
            runtime.instance, now,
        )  # fmt: skip
        if claimed is None:
            reason = "request already claimed (redelivered, replayed, or handled by another executor)"
            await _decide(conn, req, "duplicate", reason, now)
            return _Plan([_result(req, "duplicate", reason, now)])

        # 3. one decision at a time per solution and hash, across every executor instance
        await conn.execute(q.lock_solution_hash, req.hash_signature, req.solution_id)
        solution = await conn.fetchrow(q.solution_state, req.solution_id)
        if solution is None:
            reason = f"solution {req.solution_id} does not exist"
            await _decide(conn, req, "denied", reason, now)
            await _finish(conn, req, "denied", now)
            return _Plan([_result(req, "denied", reason, now)])
        refused = _refusals(req, policy)
        if not req.commands:
            refused = [{"type": "", "command": "", "reason": "the request has no commands"}]
        if refused:
            reason = "refused by the execution policy: " + "; ".join(r["reason"] for r in refused)
            await _decide(conn, req, "denied", reason, now, details={"refused": refused})
            await _finish(conn, req, "denied", now)
            log.warning("request %s denied: %s", req.request_id, reason)
            return _Plan([_result(req, "denied", reason, now, details={"refused": refused})])

        # 4. replays never remediate
        if req.replay:
            reason = "replayed event: replays never run remediation"
            await _decide(conn, req, "skipped", reason, now)
            await _finish(conn, req, "skipped", now)
            return _Plan([_result(req, "skipped", reason, now)])

        # 5. needs a person?
        age = (now - utc_naive(req.event_time)).total_seconds()
        history: list[dict[str, Any]] = []
        approval_reason = None
        if age > settings.stale_after_s:
            approval_reason = f"stale event: {age:.0f}s old (stale_after_s={settings.stale_after_s:g})"
        elif req.decision == "approval":
            approval_reason = f"analysis requires approval: {req.reason}"
        elif not all(spec.safe for spec in req.commands):
            approval_reason = "a command is not flagged safe"
        elif solution["tripped_at"] is not None or solution["consecutive_failures"] >= settings.breaker_threshold:
            approval_reason = (
                f"circuit breaker open: {solution['consecutive_failures']} consecutive failed or unverified runs"
                f" (breaker_threshold={settings.breaker_threshold})"
            )
            history = await _history(conn, req.solution_id)
        if approval_reason:
            return await _ask_for_approval(conn, req, approval_reason, history, settings=settings, now=now)

        # 6. cooldown and hourly cap, over live runs (and, in dry-run mode, would-be runs too)
        slot = "dry_run" if settings.execution_mode == "dry-run" else "live"
        kinds = ["live", "dry_run"] if slot == "dry_run" else ["live"]
        recent = await conn.fetchrow(q.recent_slots, req.hash_signature, req.solution_id, kinds, now)
        reason = None
        if recent["last_at"] is not None and (now - recent["last_at"]).total_seconds() < settings.cooldown_s:
            reason = (
                f"cooldown: this solution ran for this error at {recent['last_at']:%H:%M:%S} UTC"
                f" (cooldown_s={settings.cooldown_s:g})"
            )
        elif recent["last_hour"] >= settings.max_runs_per_hour:
            reason = f"rate limit: {recent['last_hour']} runs in the last hour (max_runs_per_hour={settings.max_runs_per_hour})"
        if reason:
            await _decide(conn, req, "skipped", reason, now)
            await _finish(conn, req, "skipped", now)
            return _Plan([_result(req, "skipped", reason, now)])

        # 7. dry run
        if slot == "dry_run":
            await conn.execute(q.take_slot, req.request_id, "dry_run", now, "done")
            return _Plan([await _record_dry_run(conn, req, policy, now, by=AUTO)])

        # 8. live: the slot is committed before anything runs
        await conn.execute(q.take_slot, req.request_id, "live", now, "running")
        return _Plan([], run=True)


async def _ask_for_approval(
    conn: asyncpg.Connection,
    req: ExecutionRequest,
    reason: str,
    history: list[dict[str, Any]],
    *,
    settings: Settings,
    now: datetime,
) -> _Plan:
    q = queries()
    pending = await conn.fetchval(q.pending_approval_for, req.hash_signature, req.solution_id, now)
    if pending is not None:
        why = f"approval {pending} for this solution and error is already pending ({reason})"
        await _decide(conn, req, "skipped", why, now)
        await _finish(conn, req, "skipped", now)
        return _Plan([_result(req, "skipped", why, now)])
    expires = now + timedelta(seconds=settings.approval_ttl_s)
    row = await conn.fetchrow(
        q.insert_approval, req.request_id, req.hash_signature, req.solution_id,
        req.model_dump(mode="json"), reason, now, expires,
    )  # fmt: skip
    await conn.execute(q.await_approval, req.request_id)
    event = ApprovalEvent(
        approval_id=row["id"], request_id=req.request_id, hash_signature=req.hash_signature,
        solution_id=req.solution_id, status="pending", reason=reason, expires_at=_aware(row["expires_at"]),
        history=history,
    )  # fmt: skip
    details = {"approval_id": row["id"], "approval": event.model_dump(mode="json")}
    await _decide(conn, req, "pending_approval", reason, now, details={"approval_id": row["id"], "history": history})
    return _Plan([_result(req, "pending_approval", reason, now, details=details)])


async def _record_dry_run(
    conn: asyncpg.Connection, req: ExecutionRequest, policy: ExecutionPolicy, now: datetime, *, by: str
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
    req: ExecutionRequest,
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
                executed_by, req.request_id,
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
    hash_signature: str,
    event_time: datetime,
    *,
    pool: asyncpg.Pool,
    settings: Settings,
    now: datetime | None = None,
    request_id: str | None = None,
) -> list[ExecutionResult]:
    """The error ``hash_signature`` happened at ``event_time``: a pending verification whose run
    finished before that, and whose window covers it, is ``recurred``."""
    now = utc_naive(now)
    evidence = f"the error recurred at {utc_naive(event_time):%Y-%m-%d %H:%M:%S} UTC"
    if request_id:
        evidence += f" (request {request_id})"
    async with pool.acquire() as conn, conn.transaction():
        rows = await conn.fetch(queries().recurred_by_request, hash_signature, utc_naive(event_time), now, evidence)
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
    policy: ExecutionPolicy,
    now: datetime | None = None,
    runtime: Runtime | None = None,
) -> tuple[ApprovalEvent, list[ExecutionResult]]:
    """Approve and run the request (in dry-run mode: record what would run). ``by`` becomes
    ``executed_by``. A person's approval overrides staleness, the analysis decision, the breaker
    and the cooldown; it does not override the kill switch, ``off`` or the policy."""
    now = utc_naive(now)
    runtime = runtime or Runtime()
    by = (by or "").strip()[:50]
    if not by:
        raise ApprovalError("an approver name is required")
    q = queries()
    async with pool.acquire() as conn, conn.transaction():
        if settings.execution_mode == "off":
            raise ApprovalError("execution_mode is off: nothing can run; the approval stays pending")
        killed, why = await kill_switch_on(conn, settings)
        if killed:
            raise ApprovalError(f"{why}: the approval stays pending")
        row = await conn.fetchrow(q.approval_decide, approval_id, "approved", by, now, None)
        if row is None:
            raise ApprovalError(await _why_not_pending(conn, approval_id, now))
        req = ExecutionRequest.model_validate(row["request"])
        event = _approval_event(row)
        await conn.execute(q.lock_solution_hash, req.hash_signature, req.solution_id)
        if await conn.fetchval(q.start_approved_run, req.request_id, "running") is None:
            raise ApprovalError(f"request {req.request_id} is not waiting for approval")
        refused = _refusals(req, policy)
        if refused:
            reason = "refused by the execution policy: " + "; ".join(r["reason"] for r in refused)
            await _decide(conn, req, "denied", reason, now, details={"refused": refused}, by=by)
            await _finish(conn, req, "denied", now)
            return event, [_result(req, "denied", reason, now, executed_by=by, details={"refused": refused})]
        if settings.execution_mode == "dry-run":
            await conn.execute(q.take_slot, req.request_id, "dry_run", now, "done")
            return event, [await _record_dry_run(conn, req, policy, now, by=by)]
        await conn.execute(q.take_slot, req.request_id, "live", now, "running")
    result = await _run_and_record(
        req, pool=pool, settings=settings, policy=policy, now=now, runtime=runtime, executed_by=by, approved=True
    )
    return event, [result]


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
        req = ExecutionRequest.model_validate(row["request"])
        why = f"rejected by {by}" + (f": {reason}" if reason else "")
        await _decide(conn, req, "denied", why, now, details={"approval_id": approval_id}, by=by)
        await _finish(conn, req, "denied", now)
    return _approval_event(row), [_result(req, "denied", why, now, executed_by=by)]


async def expire_approvals(
    *, pool: asyncpg.Pool, now: datetime | None = None
) -> tuple[list[ApprovalEvent], list[ExecutionResult]]:
    """Deny every pending approval past its expiry."""
    now = utc_naive(now)
    events, results = [], []
    async with pool.acquire() as conn, conn.transaction():
        for row in await conn.fetch(queries().approvals_expire, now):
            req = ExecutionRequest.model_validate(row["request"])
            why = f"approval {row['id']} expired undecided at {row['expires_at']:%Y-%m-%d %H:%M:%S} UTC"
            await _decide(conn, req, "denied", why, now, details={"approval_id": row["id"], "expired": True})
            await _finish(conn, req, "denied", now)
            events.append(_approval_event(row))
            results.append(_result(req, "denied", why, now))
    return events, results


async def set_kill_switch(on: bool, by: str, *, pool: asyncpg.Pool, now: datetime | None = None) -> dict[str, Any]:
    row = await pool.fetchrow(queries().kill_switch_set, on, (by or "unknown")[:50], utc_naive(now))
    return dict(row)


async def get_kill_switch(*, pool: asyncpg.Pool) -> dict[str, Any]:
    row = await pool.fetchrow(queries().kill_switch_get)
    return dict(row) if row else {"kill_switch": False, "updated_by": None, "updated_at": None}
