"""What the pages and the report show: the overview, errors, runs, one approval, and the design
document's example queries."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, urlencode

from elk_resolver.actions.ranking import wilson_lower_bound
from elk_resolver.operations.controls import kill_switch
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
