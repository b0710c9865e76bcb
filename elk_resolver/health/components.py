"""Health checks of the ELK components and of the service itself, for ``system_status``.

Each check returns a :class:`ComponentStatus` (``healthy``, ``warning`` or ``error`` with the
details that explain it); :func:`record` upserts one row per component. A component with no
URL configured is not checked and not reported: absent is not broken.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx

from elk_resolver.kafka.offsets import group_lag
from elk_resolver.kafka.security import client_options
from elk_resolver.settings import Settings
from elk_resolver.store.db import queries

log = logging.getLogger("elk_resolver.monitor")

HEALTHY, WARNING, ERROR = "healthy", "warning", "error"
HTTP_TIMEOUT_S = 5.0
DB_SLOW_S = 1.0
QUEUE_FULL_WARNING = 0.8  # persistent queue fill ratio
WORKER_UTILIZATION_WARNING = 95.0  # percent: the pipeline's workers are saturated

_ES_STATUS = {"green": HEALTHY, "yellow": WARNING, "red": ERROR}
_KIBANA_LEVEL = {"available": HEALTHY, "degraded": WARNING, "unavailable": ERROR, "critical": ERROR}


@dataclass
class ComponentStatus:
    component: str
    status: str
    details: dict[str, Any] = field(default_factory=dict)


def _worst(*statuses: str) -> str:
    order = {HEALTHY: 0, WARNING: 1, ERROR: 2}
    return max(statuses, key=order.__getitem__, default=HEALTHY)


def _unreachable(component: str, url: str, exc: BaseException) -> ComponentStatus:
    return ComponentStatus(component, ERROR, {"url": url, "error": f"{type(exc).__name__}: {exc}"[:500]})


def _es_headers(settings: Settings) -> tuple[dict[str, str], httpx.BasicAuth | None]:
    if settings.elasticsearch_api_key:
        return {"Authorization": f"ApiKey {settings.elasticsearch_api_key}"}, None
    if settings.elasticsearch_username:
        return {}, httpx.BasicAuth(settings.elasticsearch_username, settings.elasticsearch_password or "")
    return {}, None


async def check_elasticsearch(settings: Settings, client: httpx.AsyncClient) -> ComponentStatus:
    url = settings.elasticsearch_url.rstrip("/")  # type: ignore[union-attr]
    headers, auth = _es_headers(settings)
    started = time.monotonic()
    try:
        reply = await client.get(f"{url}/_cluster/health", headers=headers, auth=auth)
        body = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        return _unreachable("elasticsearch", url, exc)
    latency_ms = round((time.monotonic() - started) * 1000, 1)
    if reply.status_code != 200 or not isinstance(body, dict) or "status" not in body:
        return ComponentStatus("elasticsearch", ERROR, {"url": url, "http_status": reply.status_code, "body": str(body)[:500]})
    keep = (
        "cluster_name", "status", "number_of_nodes", "active_shards", "relocating_shards",
        "initializing_shards", "unassigned_shards", "active_shards_percent_as_number",
    )
    details = {k: body[k] for k in keep if k in body}
    details.update(url=url, latency_ms=latency_ms)
    return ComponentStatus("elasticsearch", _ES_STATUS.get(str(body["status"]), ERROR), details)


def _pipeline_summary(name: str, p: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    events = p.get("events") or {}
    flow = p.get("flow") or {}
    reloads = p.get("reloads") or {}
    queue = p.get("queue") or {}
    status = HEALTHY
    reasons = []
    summary: dict[str, Any] = {
        "events_in": events.get("in"),
        "events_out": events.get("out"),
        "events_filtered": events.get("filtered"),
        "reload_failures": reloads.get("failures", 0),
        "queue_type": queue.get("type"),
        "queue_events": queue.get("events_count", queue.get("events")),
    }
    for key in ("input_throughput", "output_throughput", "worker_utilization", "queue_backpressure"):
        value = (flow.get(key) or {}).get("current") if isinstance(flow.get(key), dict) else None
        if value is not None:
            summary[key] = value
    last_failure = reloads.get("last_failure_timestamp")
    last_success = reloads.get("last_success_timestamp")
    if reloads.get("last_error") and (last_success is None or (last_failure and last_failure > last_success)):
        status = WARNING
        err = reloads["last_error"]
        reasons.append(f"last reload failed: {err.get('message') if isinstance(err, dict) else err}")
    capacity = queue.get("capacity") or {}
    used, limit = capacity.get("queue_size_in_bytes"), capacity.get("max_queue_size_in_bytes")
    if used is not None and limit:
        summary["queue_fill"] = round(used / limit, 3)
        if used / limit >= QUEUE_FULL_WARNING:
            status = WARNING
            reasons.append(f"persistent queue {used / limit:.0%} full")
    utilization = summary.get("worker_utilization")
    if isinstance(utilization, int | float) and utilization >= WORKER_UTILIZATION_WARNING:
        status = WARNING
        reasons.append(f"workers {utilization:.0f}% busy")
    if reasons:
        summary["reasons"] = reasons
    return status, summary


async def check_logstash(settings: Settings, client: httpx.AsyncClient) -> ComponentStatus:
    url = settings.logstash_url.rstrip("/")  # type: ignore[union-attr]
    try:
        reply = await client.get(f"{url}/_node/stats/pipelines")
        body = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        return _unreachable("logstash", url, exc)
    if reply.status_code != 200 or not isinstance(body, dict):
        return ComponentStatus("logstash", ERROR, {"url": url, "http_status": reply.status_code})
    status = _ES_STATUS.get(str(body.get("status", "green")), WARNING)
    pipelines = {}
    for name, p in (body.get("pipelines") or {}).items():
        p_status, pipelines[name] = _pipeline_summary(name, p if isinstance(p, dict) else {})
        status = _worst(status, p_status)
    if not pipelines:
        status = _worst(status, WARNING)
    details = {"url": url, "node_status": body.get("status"), "version": body.get("version"), "pipelines": pipelines}
    return ComponentStatus("logstash", status, details)


async def check_kibana(settings: Settings, client: httpx.AsyncClient) -> ComponentStatus:
    url = settings.kibana_url.rstrip("/")  # type: ignore[union-attr]
    try:
        reply = await client.get(f"{url}/api/status")
        body = reply.json()
    except (httpx.HTTPError, ValueError) as exc:
        return _unreachable("kibana", url, exc)
    overall = ((body.get("status") or {}).get("overall") or {}) if isinstance(body, dict) else {}
    if "level" in overall:  # Kibana 7.16+
        status = _KIBANA_LEVEL.get(str(overall["level"]), ERROR)
        details = {"level": overall["level"], "summary": overall.get("summary")}
    elif "state" in overall:  # older Kibana: green / yellow / red
        status = _ES_STATUS.get(str(overall["state"]), ERROR)
        details = {"state": overall["state"], "summary": overall.get("title") or overall.get("nickname")}
    else:
        status, details = ERROR, {"http_status": reply.status_code, "body": str(body)[:500]}
    version = (body.get("version") or {}).get("number") if isinstance(body, dict) else None
    return ComponentStatus("kibana", status, {"url": url, "version": version, **details})


async def check_kafka(settings: Settings) -> ComponentStatus:
    servers = settings.kafka_bootstrap_servers or ""
    groups = {
        "ingest": (settings.group_ingest, settings.topic_raw),
        "analyze": (settings.group_analyze, settings.topic_analysis),
        "execute": (settings.group_execute, settings.topic_execution),
    }
    lag: dict[str, Any] = {}
    try:
        for stage, (group, topic) in groups.items():
            per_partition = await asyncio.wait_for(group_lag(client_options(settings), group, topic), 20)
            lag[stage] = {"group": group, "topic": topic, "lag": sum(per_partition.values())}
    except Exception as exc:  # noqa: BLE001 - any failure to talk to the broker is the finding
        return _unreachable("kafka", servers, exc)
    threshold = settings.monitor_lag_warning
    behind = [s for s, v in lag.items() if v["lag"] > threshold]
    status = WARNING if behind else HEALTHY
    details: dict[str, Any] = {"bootstrap_servers": servers, "consumer_lag": lag}
    if behind:
        details["reason"] = f"lag above {threshold} records: {', '.join(behind)}"
    return ComponentStatus("kafka", status, details)


async def check_postgresql(pool: asyncpg.Pool) -> ComponentStatus:
    started = time.monotonic()
    try:
        async with asyncio.timeout(10):
            async with pool.acquire() as conn:
                await conn.fetchval("SELECT 1")
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return ComponentStatus("postgresql", ERROR, {"error": f"{type(exc).__name__}: {exc}"[:500]})
    latency = time.monotonic() - started
    status = WARNING if latency > DB_SLOW_S else HEALTHY
    return ComponentStatus(
        "postgresql", status, {"latency_ms": round(latency * 1000, 1), "pool_size": pool.get_size()}
    )


async def check_executions(pool: asyncpg.Pool, settings: Settings) -> ComponentStatus:
    """Runs that died after their claim (issue 10 item 7): those the reaper recorded as lost in
    the last 24 hours, and live runs past ``run_lost_after_s`` it has not recorded yet. Either
    is a warning: nothing re-runs them, a person has to look."""
    try:
        async with asyncio.timeout(10):
            row = await pool.fetchrow(queries().monitor_lost_runs, settings.run_lost_after_s)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError, TimeoutError) as exc:
        return ComponentStatus("executions", ERROR, {"error": f"{type(exc).__name__}: {exc}"[:500]})
    details: dict[str, Any] = {"lost_last_24h": row["lost"], "overdue_running": row["overdue"]}
    if row["last_reason"]:
        details["last_lost"] = row["last_reason"][:500]
    status = WARNING if row["lost"] or row["overdue"] else HEALTHY
    if status == WARNING:
        details["reason"] = (
            f"{row['lost']} run(s) recorded lost in 24 h, {row['overdue']} running past run_lost_after_s;"
            " lost runs are never re-run without a decision"
        )
    return ComponentStatus("executions", status, details)


def instance_name() -> str:
    """This copy of the service in ``system_status``: ``host:pid``, the host cut so that
    ``stage.<name>@<instance>`` fits the 50-character column."""
    return f"{socket.gethostname()[:24]}:{os.getpid()}"


def check_stages(stages: Iterable[Any], causes: dict[str, str] | None = None) -> list[ComponentStatus]:
    """The service's own stages in this process, one row per stage *and copy*
    (``stage.ingest@host:pid``), so a failing copy is not hidden by a healthy one: ready is
    healthy; started but not ready, or stalled (``causes`` names why), a warning; stopped an
    error."""
    instance = {"host": socket.gethostname(), "pid": os.getpid()}
    causes = causes or {}
    found = []
    for stage in stages:
        ready = bool(getattr(stage, "ready", False))
        started = bool(getattr(stage, "started", True))
        cause = causes.get(stage.name)
        status = HEALTHY if ready and cause is None else (WARNING if started else ERROR)
        details = {**instance, "ready": ready and cause is None, "started": started}
        if cause:
            details["cause"] = cause
        found.append(ComponentStatus(f"stage.{stage.name}@{instance_name()}", status, details))
    return found


async def run_checks(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    stages: Iterable[Any] = (),
    causes: dict[str, str] | None = None,
    client: httpx.AsyncClient | None = None,
) -> list[ComponentStatus]:
    """Every configured check, concurrently."""
    own_client = client is None
    client = client or httpx.AsyncClient(timeout=HTTP_TIMEOUT_S, follow_redirects=False)
    try:
        checks: list[Awaitable[ComponentStatus]] = [check_postgresql(pool), check_executions(pool, settings)]
        if settings.kafka_bootstrap_servers:
            checks.append(check_kafka(settings))
        if settings.elasticsearch_url:
            checks.append(check_elasticsearch(settings, client))
        if settings.logstash_url:
            checks.append(check_logstash(settings, client))
        if settings.kibana_url:
            checks.append(check_kibana(settings, client))
        results = list(await asyncio.gather(*checks))
    finally:
        if own_client:
            await client.aclose()
    return results + check_stages(stages, causes)


async def record(pool: asyncpg.Pool, results: Iterable[ComponentStatus], *, silent_after_s: float = 90.0) -> None:
    """Upsert the rows, and mark as ``error`` the stage rows of copies that have not reported
    for ``silent_after_s`` (a copy that was killed cannot say so itself)."""
    q = queries()
    async with pool.acquire() as conn, conn.transaction():
        # one order for every copy of the service: concurrent upserts cannot deadlock
        for result in sorted(results, key=lambda r: r.component):
            await conn.execute(q.upsert_system_status, result.component[:50], result.status, result.details)
        await conn.execute(q.system_status_mark_silent_copies, silent_after_s)


async def check_and_record(settings: Settings, pool: asyncpg.Pool, **kwargs: Any) -> list[ComponentStatus]:
    results = await run_checks(settings, pool, **kwargs)
    await record(pool, results, silent_after_s=max(90.0, 3 * settings.monitor_interval_s))
    return results


OnResults = Callable[[list[ComponentStatus]], None]
