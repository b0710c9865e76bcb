"""What the pages and the report show: the overview, errors, runs (dry runs included: in the
default mode they are all the service does), one approval, the system status with each row's
age, and the design document's example queries."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from elk_resolver.actions.effect import Effect
from elk_resolver.actions.ranking import wilson_lower_bound
from elk_resolver.operations import solution_view
from elk_resolver.operations.controls import catalogue, kill_switch
from elk_resolver.operations.solution_view import bound_object
from elk_resolver.store.db import queries
from handlers.execute import utc_naive

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings


PAGE = 50


REPORTS = (
    ("report_error_stats", "Error statistics by type (last 7 days)"),
    ("report_solution_ranking", "Solution success ranking"),
    ("report_recent_executions", "Executions in the last 24 hours"),
    ("report_recent_dry_runs", "Dry runs in the last 24 hours (recorded in decision_log: nothing ran)"),
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


def would_run(plan: Any) -> list[str]:
    """The commands a dry run recorded (``decision_log.details.would_run``) as a person reads
    them: the argument list that would have run, else the command as written (an
    Elasticsearch action's plan is a structure, its command says it)."""
    out = []
    for w in plan if isinstance(plan, list) else []:
        if isinstance(w, dict):
            text = w.get("would_run") if isinstance(w.get("would_run"), str) and w.get("would_run") else w.get("command")
            out.append(str(text or ""))
    return out


def run_row(row: Any) -> dict[str, Any]:
    """A run or dry run as the pages and the API show it: a dry run's output says what would
    have run (the execute stage's plan), and that nothing ran."""
    r = dict(row)
    r["dry_run"] = r.get("kind") == "dry_run"
    if r["dry_run"]:
        r["execution_output"] = "dry run, nothing ran\n" + "\n".join(f"would run: {w}" for w in would_run(r.get("would_run")))
    return r


async def system_status(pool: asyncpg.Pool | asyncpg.Connection, settings: Settings) -> list[dict[str, Any]]:
    """Every ``system_status`` row with its age; a row the monitor has not written for longer
    than twice its interval is ``stale`` whatever it last said (the service may have stopped:
    nobody is checking any more, so "healthy" would be a claim nobody stands behind)."""
    stale_after = stale_after_s(settings)
    now = utc_naive()
    out = []
    for row in await pool.fetch(queries().system_status_all):
        r = dict(row)
        r["age_s"] = max(0.0, (now - r["last_check"]).total_seconds()) if r["last_check"] else None
        r["stale"] = r["age_s"] is None or r["age_s"] > stale_after
        r["shown_status"] = "stale" if r["stale"] else r["status"]
        out.append(r)
    return out


def stale_after_s(settings: Settings) -> float:
    """How old a ``system_status`` row may be before it is stale: two monitor intervals."""
    return 2 * settings.monitor_interval_s


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
        runs = [run_row(r) for r in await conn.fetch(q.console_runs, None, 10, 0)]
        status = await system_status(conn, settings)
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
                 state: str | None = None, page: int = 1, per_page: int = PAGE) -> dict[str, Any]:
    """One page of errors; ``text`` is looked for in the message, the source and the objects the
    error names (its event's pod, deployment, container, host, service; its requests' objects)."""
    q = queries()
    total = await pool.fetchval(q.console_errors_count, error_type or None, text or None, state or None)
    paging = pages(total, page, per_page)
    rows = await pool.fetch(q.console_errors, error_type or None, text or None, per_page, paging["offset"],
                            state or None)
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
    """One error as a person reads it: its state, owner and notes, its objects, its solutions
    filled with its values, its runs and dry runs, approvals and decisions."""
    q = queries()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(q.console_error, error_id)
        if row is None:
            return None
        error = dict(row)
        h = error["hash_signature"]
        since = utc_naive() - timedelta(days=2)
        trend = [dict(r) for r in await conn.fetch(q.console_trend, since, h)]
        requests = [dict(r) for r in await conn.fetch(q.error_latest_requests, h, 200)]
        playbooks = _catalogue(settings)
        solutions = []
        for s in await conn.fetch(q.console_error_solutions, h):
            s = dict(s)
            s["lower_bound"] = round(100 * wilson_lower_bound(s["success_count"] or 0, s["execution_count"] or 0), 1)
            s["view"] = solution_view.view(s, error=error, requests=requests, catalogue=playbooks)
            solutions.append(s)
        runs = [run_row(r) for r in await conn.fetch(q.console_error_runs, error_id, 50, h)]
        decisions = [dict(r) for r in await conn.fetch(q.console_error_decisions, h, 50)]
        approvals = [dict(r) for r in await conn.fetch(q.console_error_approvals, h, 20)]
        bound = [r["target_key"] for r in await conn.fetch(q.error_objects, h, 50)]
        notes = [dict(r) for r in await conn.fetch(q.error_notes, error_id)]
    return {"error": error, "trend": _bars(trend, since, 48), "solutions": solutions, "runs": runs,
            "decisions": decisions, "approvals": approvals, "objects": affected_objects(error, bound),
            "notes": notes, "kibana": kibana_link(settings, error)}


def _catalogue(settings: Settings | None) -> Any:
    if settings is None:
        return None
    try:
        return catalogue(settings)
    except ValueError:  # a broken playbooks_dir stops the analysis stage; here: no playbook values
        return None


def affected_objects(error: dict[str, Any], bound: list[str]) -> list[str]:
    """The objects this error names: its source and its event's Kubernetes context, then the
    objects its requests were bound to (``k8s:ns/kind/name``, ``es:index/name``)."""
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
    for key in bound:
        seen[key] = None
    return list(seen)[:50]


async def runs(pool: asyncpg.Pool, *, status: str | None = None, page: int = 1, per_page: int = PAGE) -> dict[str, Any]:
    q = queries()
    total = await pool.fetchval(q.console_runs_count, status or None)
    paging = pages(total, page, per_page)
    rows = await pool.fetch(q.console_runs, status or None, per_page, paging["offset"])
    return {"rows": [run_row(r) for r in rows], "paging": paging}


async def approval_detail(pool: asyncpg.Pool, approval_id: int, settings: Settings | None = None) -> dict[str, Any] | None:
    """An approval as a decider sees it: what would run on which object and why, the error,
    the solution's record, and what came of it."""
    q = queries()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(q.console_approval, approval_id)
        if row is None:
            return None
        a = dict(row)
        # what would run and on which object come from one place: the stored request (the row
        # the execute stage loads), never from the event or a copy of the commands
        request = a.get("stored_request") or a.get("request") or {}
        runs_of_request = [dict(r) for r in await conn.fetch(q.console_request_runs, a["request_id"])]
        decisions = [{**dict(r), "would_run": would_run((r["details"] or {}).get("would_run"))}
                     for r in await conn.fetch(q.console_request_decisions, a["request_id"])]
        history = [dict(r) for r in await conn.fetch(q.console_solution_runs, a["solution_id"], 10)]
        measured = await conn.fetchrow(q.effect_of_solution, a["solution_id"])
    solution = None
    if a.get("solution_row_id") is not None:
        solution = solution_view.view(
            {"id": a["solution_id"], "solution_commands": a.get("solution_commands"), "playbook_name": a.get("playbook_name"),
             "solution_description": a.get("solution_description"), "execution_count": a.get("execution_count")},
            error=a, requests=[{"solution_id": a["solution_id"], "request": request}],
            catalogue=_catalogue(settings))  # fmt: skip
    return {"approval": a, "commands": request.get("commands") or [], "object": bound_object(request), "solution": solution,
            "runs": runs_of_request, "decisions": decisions, "outcome": outcome(a, runs_of_request, decisions),
            "history": history, "pending": a["status"] == "pending" and a["expires_at"] > utc_naive(),
            "effect": Effect.from_row(measured).describe() if measured is not None else None}


FINAL_DECISIONS = ("dry_run", "denied", "skipped", "refused", "lost")


def outcome(approval: dict[str, Any], runs_of_request: list[dict[str, Any]], decisions: list[dict[str, Any]]) -> dict[str, Any]:
    """What came of an approval, in one line: waiting for a person, handed to the execute stage
    and not carried out yet, a run (its status), a dry run (what would have run; nothing ran),
    or a denial or skip (why)."""
    if runs_of_request:
        run = runs_of_request[-1]
        return {"state": run["execution_status"], "text": f"run {run['id']}: {run['execution_status']}"
                f" (by {run['executed_by']})", "final": True}
    final = [d for d in decisions if d["decision"] in FINAL_DECISIONS and d["decided_at"] >= (approval.get("decided_at") or d["decided_at"])]
    if final:
        d = final[-1]
        if d["decision"] == "dry_run":
            would = "; ".join(d.get("would_run") or would_run((d.get("details") or {}).get("would_run")))
            return {"state": "dry_run", "final": True,
                    "text": f"dry run (execution mode dry-run): nothing ran; would have run: {would or 'nothing'}"}
        return {"state": d["decision"], "text": f"{d['decision']}: {d['reason']}", "final": True}
    if approval["status"] == "approved":
        return {"state": "approved", "final": False,
                "text": "approved: the service's execute stage carries it out; this page shows the outcome when it is recorded"}
    if approval["status"] == "pending":
        return {"state": "pending", "final": False, "text": "waiting for a person"}
    return {"state": approval["status"], "final": True, "text": approval["status"]}


def by_error(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pending approvals grouped by error: one error on several objects, decided for some or all."""
    groups: dict[str, dict[str, Any]] = {}
    for r in rows:
        g = groups.setdefault(r["hash_signature"], {"hash": r["hash_signature"], "error_type": r.get("error_type"),
                                                    "error_message": r.get("error_message"),
                                                    "error_log_id": r.get("error_log_id"), "approvals": []})
        request = r.get("stored_request") or r.get("request") or {}
        g["approvals"].append({**r, "object": bound_object(request), "commands": request.get("commands") or []})
    return list(groups.values())


async def incidents(pool: asyncpg.Pool, *, limit: int = PAGE) -> dict[str, Any]:
    """Open and past holds (systemic, node), each with its objects and what they share."""
    from handlers.execute import list_incidents

    rows = await list_incidents(pool=pool, status=None, limit=limit)
    now = utc_naive()
    for row in rows:
        row["kind"] = "node" if row["action"].startswith("node:") else "systemic"
        row["open"] = row["status"] == "pending" and row["expires_at"] > now
    return {"open": [r for r in rows if r["open"]], "past": [r for r in rows if not r["open"]]}


async def objects(pool: asyncpg.Pool, *, hours: int = 24, limit: int = 200) -> list[dict[str, Any]]:
    """The objects errors came from in the last ``hours``, newest first."""
    rows = await pool.fetch(queries().console_objects, utc_naive() - timedelta(hours=hours), limit)
    return [{**dict(r), "href": "/objects/timeline?" + urlencode({"key": r["subject"]})} for r in rows]


async def object_timeline(pool: asyncpg.Pool, key: str, *, limit: int = 300) -> list[dict[str, Any]]:
    """One object's events, requests, decisions, runs and holds, newest first."""
    return [dict(r) for r in await pool.fetch(queries().console_object_timeline, key, limit)]


def timeline_href(key: str | None) -> str:
    return "/objects/timeline?" + urlencode({"key": key or ""})
