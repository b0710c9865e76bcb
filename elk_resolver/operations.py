"""The operations a person performs, for every face: the CLI and the web console both call these
and hold no logic of their own (list, approve, reject, incident-wide decisions, patterns, the
kill switch, the report, and the console's read views).

Who decides is a :class:`Person`; :func:`may_decide` is the approver allowlist
(``console_approvers``: user names or ``group:NAME``; empty lets any authenticated person
decide). The decider's name is what the execution records carry (``executed_by``,
``decision_log.decided_by``).
"""

from __future__ import annotations

import getpass
import math
import os
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from elk_resolver.db import queries
from elk_resolver.ranking import wilson_lower_bound
from handlers.execute import ApprovalError, get_kill_switch, kill_switch_on, reject as reject_request
from handlers.execute import approve as approve_request
from handlers.execute import approve_incident as approve_incident_request
from handlers.execute import list_incidents as list_incident_rows
from handlers.execute import reject_incident as reject_incident_request
from handlers.execute import list_playbook_controls, set_playbook_enabled
from handlers.execute import set_kill_switch as store_kill_switch
from handlers.execute import utc_naive

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings
    from streams.contracts import ApprovalEvent, ExecutionRequest, ExecutionResult

# (results, approval events[, pointers at approved requests for the execution topic])
Publisher = Callable[..., Awaitable[None]]
PAGE = 50


class Refused(Exception):
    """The operation was not carried out: not allowed, or not possible (the text says why)."""


@dataclass(frozen=True)
class Person:
    name: str
    groups: frozenset[str] = frozenset()
    via: str = "cli"  # cli, login, token, proxy

    def __str__(self) -> str:
        return self.name


@dataclass
class Decision:
    approval_id: int
    status: str
    by: str
    results: list[Any] = field(default_factory=list)
    error: str | None = None
    handed_over: list[str] = field(default_factory=list)
    """request ids handed to the execute stage (an approval runs there, not here)"""


def may_decide(settings: Settings, person: Person | None) -> bool:
    if person is None or not person.name:
        return False
    allowed = set(settings.console_approvers)
    if not allowed:
        return True
    return person.name in allowed or any(f"group:{g}" in allowed for g in person.groups)


def _require(settings: Settings, person: Person | None, what: str) -> Person:
    if person is None or not person.name:
        raise Refused(f"{what} needs an authenticated person")
    if not may_decide(settings, person):
        raise Refused(f"{person.name} is not on the approver list (console_approvers), so may not {what}")
    return person


def cli_person(settings: Settings, explicit: str | None = None) -> tuple[Person | None, str]:
    """Who the CLI decides as, and where that name came from (said back to the user)."""
    if explicit and explicit.strip():
        return Person(explicit.strip()[:50]), "--by"
    if settings.operator:
        return Person(settings.operator.strip()[:50]), "ELK_RESOLVER_OPERATOR"
    for var in ("USER", "LOGNAME"):
        if os.environ.get(var):
            return Person(os.environ[var][:50]), f"${var}"
    try:
        return Person(getpass.getuser()[:50]), "the login name"
    except (KeyError, OSError):
        return None, ""


# --- approvals --------------------------------------------------------------------------------


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
    person = _require(settings, person, "approve")

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
    person = _require(settings, person, "approve")

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
    person = _require(settings, person, "reject")

    async def decide() -> tuple[Any, list, list]:
        return (*await reject_incident_request(incident_id, person.name, reason, pool=pool), [])

    return await _decided(incident_id, person, decide, publish)


async def reject(pool: asyncpg.Pool, settings: Settings, approval_id: int, person: Person | None,
                 reason: str | None = None, *, publish: Publisher | None = None) -> Decision:
    person = _require(settings, person, "reject")

    async def decide() -> tuple[Any, list, list]:
        return (*await reject_request(approval_id, person.name, reason, pool=pool), [])

    return await _decided(approval_id, person, decide, publish)


async def decide_many(pool: asyncpg.Pool, settings: Settings, approval_ids: Sequence[int], person: Person | None,
                      *, approve_them: bool, reason: str | None = None,
                      publish: Publisher | None = None) -> list[Decision]:
    """An incident-wide decision: the same answer for some or all of its approvals. Each one is
    decided on its own (one that someone else decided meanwhile is reported, not retried)."""
    person = _require(settings, person, "approve" if approve_them else "reject")
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


async def playbook_controls(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    return await list_playbook_controls(pool=pool)


async def switch_playbook(pool: asyncpg.Pool, settings: Settings, name: str, enabled: bool,
                          person: Person | None) -> dict[str, Any]:
    """Off means off: a disabled playbook's stored solutions stop running automatically in every
    executor copy at their next decision."""
    person = _require(settings, person, "enable or disable a playbook")
    return await set_playbook_enabled(name, enabled, person.name, pool=pool)


# --- the kill switch ----------------------------------------------------------------------------


async def kill_switch(pool: asyncpg.Pool, settings: Settings) -> dict[str, Any]:
    row = await get_kill_switch(pool=pool)
    async with pool.acquire() as conn:
        on, why = await kill_switch_on(conn, settings)
    return {**row, "effective": on, "why": why, "setting": settings.kill_switch,
            "execution_mode": settings.execution_mode}


async def set_kill_switch(pool: asyncpg.Pool, settings: Settings, on: bool, person: Person | None) -> dict[str, Any]:
    """Stopping everything needs only an authenticated person; letting it run again needs a decider."""
    if on:
        if person is None or not person.name:
            raise Refused("turning the kill switch on needs an authenticated person")
    else:
        _require(settings, person, "turn the kill switch off")
    await store_kill_switch(on, person.name, pool=pool)  # type: ignore[union-attr]
    return await kill_switch(pool, settings)


# --- patterns -----------------------------------------------------------------------------------


async def list_patterns(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    from elk_resolver.classify import PatternSet

    rows = await pool.fetch(queries().patterns_all)
    invalid = dict(PatternSet(r for r in rows if r["disabled_at"] is None).invalid)
    return [
        {**dict(r), "state": "disabled" if r["disabled_at"] else ("invalid" if r["id"] in invalid else "enabled"),
         "invalid_reason": invalid.get(r["id"])}
        for r in rows
    ]


async def set_pattern_enabled(pool: asyncpg.Pool, pattern_id: int, enabled: bool, person: Person | None) -> str:
    if person is None or not person.name:
        raise Refused("changing a pattern needs an authenticated person")
    name = await pool.fetchval(queries().patterns_set_disabled, pattern_id, not enabled)
    if name is None:
        raise Refused(f"no pattern with id {pattern_id}")
    return name


async def add_pattern(pool: asyncpg.Pool, person: Person | None, name: str, regex: str, category: str,
                      priority: int, auto_resolve: bool, *, fingerprint_fields: list[str] | None = None) -> int:
    from elk_resolver.classify import PatternRow, PatternSet

    if person is None or not person.name:
        raise Refused("adding a pattern needs an authenticated person")
    probe = PatternSet([PatternRow(0, name, regex, category, priority)])
    if probe.invalid:
        raise Refused(f"regex refused: {probe.invalid[0][1]}")
    async with pool.acquire() as conn, conn.transaction():
        new_id = await conn.fetchval(queries().patterns_add, name, regex, category, priority, auto_resolve)
        if fingerprint_fields:
            await conn.execute(queries().patterns_set_fingerprint_fields, new_id, fingerprint_fields)
    return new_id


async def set_pattern_fingerprint_fields(pool: asyncpg.Pool, pattern_id: int, fields: list[str] | None,
                                         person: Person | None) -> str:
    if person is None or not person.name:
        raise Refused("changing a pattern needs an authenticated person")
    name = await pool.fetchval(queries().patterns_set_fingerprint_fields, pattern_id, fields)
    if name is None:
        raise Refused(f"no pattern with id {pattern_id}")
    return name


@dataclass
class PatternTest:
    pattern: dict[str, Any] | None
    error_type: str
    message: str
    template: str
    own_hash: str
    hash: str  # where it counts: its own hash, or the stored error a learned alias sends it to
    fingerprint_version: str


async def test_message(pool: asyncpg.Pool, settings: Settings, message: str, *, error_type: str | None = None,
                       fingerprint: str | None = None) -> PatternTest:
    """What the ingest stage would make of a message: the same prepare step it runs."""
    import orjson

    from elk_resolver.alias_cache import AliasCache
    from elk_resolver.classify import PatternSet
    from elk_resolver.masking import SecretMasker
    from handlers.ingest import IngestConfig, RawRecord, prepare_batch

    rows = [r for r in await pool.fetch(queries().patterns_all) if r["disabled_at"] is None]
    event: dict[str, Any] = {"message": message, "log": {"level": "error"}}
    if error_type:
        event["error"] = {"type": error_type}
    config = IngestConfig.from_settings(settings)
    if fingerprint:
        config = IngestConfig(config.max_record_bytes, fingerprint, config.id_field, config.id_header)
    aliases = AliasCache(pool, merge_every_s=None)
    await aliases.refresh()
    batch = prepare_batch([RawRecord(orjson.dumps(event))], patterns=PatternSet(rows),
                          masker=SecretMasker(settings.mask_extra_patterns), config=config, aliases=aliases.current)
    if batch.dead_letters:
        raise Refused(f"the message cannot be an event: {batch.dead_letters[0].reason}")
    error = next(iter(batch.errors.values()))
    p = error.pattern
    pattern = None if p is None else {"id": p.id, "name": p.pattern_name, "regex": p.pattern_regex,
                                      "priority": p.priority, "auto_resolve": p.auto_resolve}
    return PatternTest(pattern, error.error_type, error.message, error.template, error.own_hash, error.hash,
                       error.version)


# --- reports and views --------------------------------------------------------------------------

REPORTS = (
    ("report_error_stats", "Error statistics by type (last 7 days)"),
    ("report_solution_ranking", "Solution success ranking"),
    ("report_recent_executions", "Executions in the last 24 hours"),
    ("report_system_status", "System status"),
)


async def report(pool: asyncpg.Pool) -> list[tuple[str, str, list[dict[str, Any]]]]:
    """The design document's example queries: (name, title, rows) each."""
    q = queries()
    async with pool.acquire() as conn:
        return [(name.removeprefix("report_"), title, [dict(r) for r in await conn.fetch(q[name])])
                for name, title in REPORTS]


def pages(total: int, page: int, per_page: int = PAGE) -> dict[str, int]:
    last = max(1, math.ceil(total / per_page))
    page = min(max(1, page), last)
    return {"page": page, "last": last, "total": total, "offset": (page - 1) * per_page, "per_page": per_page}


async def overview(pool: asyncpg.Pool, settings: Settings, *, hours: int = 24) -> dict[str, Any]:
    q = queries()
    since = utc_naive() - timedelta(hours=hours)
    async with pool.acquire() as conn:
        errors = [dict(r) for r in await conn.fetch(q.console_open_errors, since, 15)]
        by_hash: dict[str, list[dict[str, Any]]] = {}
        for r in await conn.fetch(q.console_trend_by_hash, since, [e["hash_signature"] for e in errors]):
            by_hash.setdefault(r["hash_signature"], []).append({"hour": r["hour"], "n": r["n"]})
        for e in errors:
            e["trend"] = _bars(by_hash.get(e["hash_signature"], []), since, hours)
        counts = dict(await conn.fetchrow(q.console_open_errors_count, since))
        trend = [dict(r) for r in await conn.fetch(q.console_trend, since, None)]
        pending = [dict(r) for r in await conn.fetch(q.console_approvals, "pending", 10, 0)]
        pending_total = await conn.fetchval(q.console_approvals_count, "pending")
        runs = [dict(r) for r in await conn.fetch(q.console_runs, None, 10, 0)]
        status = [dict(r) for r in await conn.fetch(q.system_status_all)]
    return {"errors": errors, "counts": counts, "trend": _bars(trend, since, hours), "pending": pending,
            "pending_total": pending_total, "runs": runs, "components": status,
            "kill_switch": await kill_switch(pool, settings), "hours": hours}


def _bars(rows: list[dict[str, Any]], since, hours: int) -> list[dict[str, Any]]:
    """One bar per hour (empty hours included), heights in percent of the busiest hour."""
    by_hour = {r["hour"]: r["n"] for r in rows}
    start = since.replace(minute=0, second=0, microsecond=0)
    hours_list = [start + timedelta(hours=i) for i in range(hours + 1)]
    top = max(by_hour.values(), default=0) or 1
    return [{"hour": h, "n": by_hour.get(h, 0), "pct": round(100 * by_hour.get(h, 0) / top)} for h in hours_list]


async def errors(pool: asyncpg.Pool, *, error_type: str | None = None, text: str | None = None,
                 page: int = 1, per_page: int = PAGE) -> dict[str, Any]:
    q = queries()
    total = await pool.fetchval(q.console_errors_count, error_type or None, text or None)
    paging = pages(total, page, per_page)
    rows = await pool.fetch(q.console_errors, error_type or None, text or None, per_page, paging["offset"])
    types = [r["error_type"] for r in await pool.fetch(q.console_error_types)]
    return {"rows": [dict(r) for r in rows], "paging": paging, "types": types}


def kibana_link(settings: Settings, error: dict[str, Any]) -> str | None:
    """Kibana Discover around this error's first and last sighting, filtered to it."""
    if not settings.kibana_url:
        return None

    def rison(text: str) -> str:
        return "'" + text.replace("!", "!!").replace("'", "!'") + "'"

    if error.get("elasticsearch_id"):
        kql = f'_id:"{error["elasticsearch_id"]}"'
    else:
        words = " ".join(str(error.get("error_message") or "").split()[:12]).replace('"', "")
        kql = f'message:"{words}"'
    first = (error.get("timestamp") or error.get("created_at") or utc_naive()) - timedelta(minutes=15)
    last = (error.get("last_seen_at") or utc_naive()) + timedelta(minutes=15)
    g = f"(time:(from:{rison(first.isoformat() + 'Z')},to:{rison(last.isoformat() + 'Z')}))"
    view = f"dataSource:(dataViewId:{rison(settings.kibana_data_view)},type:dataView)," if settings.kibana_data_view else ""
    a = f"({view}query:(language:kuery,query:{rison(kql)}))"
    safe = "():,'!*-_.~"
    return f"{settings.kibana_url.rstrip('/')}/app/discover#/?_g={quote(g, safe=safe)}&_a={quote(a, safe=safe)}"


async def error_detail(pool: asyncpg.Pool, settings: Settings, error_id: int) -> dict[str, Any] | None:
    q = queries()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(q.console_error, error_id)
        if row is None:
            return None
        error = dict(row)
        h = error["hash_signature"]
        since = utc_naive() - timedelta(days=2)
        trend = [dict(r) for r in await conn.fetch(q.console_trend, since, h)]
        solutions = []
        for s in await conn.fetch(q.console_error_solutions, h):
            s = dict(s)
            s["lower_bound"] = round(100 * wilson_lower_bound(s["success_count"] or 0, s["execution_count"] or 0), 1)
            solutions.append(s)
        runs = [dict(r) for r in await conn.fetch(q.console_error_runs, error_id, 50)]
        decisions = [dict(r) for r in await conn.fetch(q.console_error_decisions, h, 50)]
        approvals = [dict(r) for r in await conn.fetch(q.console_error_approvals, h, 20)]
    return {"error": error, "trend": _bars(trend, since, 48), "solutions": solutions, "runs": runs,
            "decisions": decisions, "approvals": approvals, "objects": affected_objects(error, approvals),
            "kibana": kibana_link(settings, error)}


def affected_objects(error: dict[str, Any], approvals: list[dict[str, Any]]) -> list[str]:
    """The objects this error names: its source and Kubernetes context, and the objects its
    requests would act on."""
    seen: dict[str, None] = {}
    if error.get("source_system"):
        seen[error["source_system"]] = None
    raw = error.get("raw_log_data") or {}
    kube = raw.get("kubernetes") if isinstance(raw, dict) else None
    if isinstance(kube, dict):
        ns = kube.get("namespace") if isinstance(kube.get("namespace"), str) else None
        for key in ("pod", "deployment"):
            value = kube.get(key)
            name = value.get("name") if isinstance(value, dict) else kube.get(f"{key}.name")
            if name:
                seen[f"{ns + '/' if ns else ''}{key}/{name}"] = None
    for a in approvals:
        for c in (a.get("request") or {}).get("commands") or []:
            words = str(c.get("command", "")).split()
            target = next((w for w in words if "/" in w and not w.startswith("-")), None)
            ns = words[words.index("-n") + 1] if "-n" in words[:-1] else None
            if target:
                seen[f"{ns + '/' if ns else ''}{target}"] = None
    return list(seen)[:50]


async def runs(pool: asyncpg.Pool, *, status: str | None = None, page: int = 1, per_page: int = PAGE) -> dict[str, Any]:
    q = queries()
    total = await pool.fetchval(q.console_runs_count, status or None)
    paging = pages(total, page, per_page)
    rows = await pool.fetch(q.console_runs, status or None, per_page, paging["offset"])
    return {"rows": [dict(r) for r in rows], "paging": paging}


async def approval_detail(pool: asyncpg.Pool, approval_id: int) -> dict[str, Any] | None:
    """An approval as a decider sees it: what would run on which object and why, the error,
    the solution's record, and what came of it."""
    q = queries()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(q.console_approval, approval_id)
        if row is None:
            return None
        a = dict(row)
        request = a.get("request") or {}
        runs_of_request = [dict(r) for r in await conn.fetch(q.console_request_runs, a["request_id"])]
        decisions = [dict(r) for r in await conn.fetch(q.console_request_decisions, a["request_id"])]
        history = [dict(r) for r in await conn.fetch(q.console_solution_runs, a["solution_id"], 10)]
    error = {"source_system": a.get("source_system"), "raw_log_data": a.get("raw_log_data")}
    return {"approval": a, "commands": request.get("commands") or [], "objects": affected_objects(error, [a]),
            "runs": runs_of_request, "decisions": decisions, "history": history,
            "pending": a["status"] == "pending" and a["expires_at"] > utc_naive()}


def by_error(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pending approvals grouped by error: one error on several objects, decided for some or all."""
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault(r["hash_signature"], {"hash": r["hash_signature"], "error_type": r.get("error_type"),
                                                    "error_message": r.get("error_message"),
                                                    "error_log_id": r.get("error_log_id"), "approvals": []})
        g["approvals"].append({**r, "objects": affected_objects({"source_system": r.get("source_system")}, [r])})
    return list(groups.values())
