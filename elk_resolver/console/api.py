"""The console's JSON API under ``/api/``: what the pages show, as JSON, read through the same
operations and behind the same sign-in (an API token, ``Authorization: Bearer ...``, is the
usual way for a program; a session cookie or the trusted proxy work too; reading is open from
loopback as for the pages).

One table, :data:`ROUTES`, gives both the routes and the OpenAPI document the service serves at
``/openapi.json`` (and as a page at ``/api.html``), so the document cannot drift from the API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import orjson
from aiohttp import web

from elk_resolver.operations import approvals, audit, controls, reading
from elk_resolver.operations.triage import STATES


@dataclass(frozen=True)
class Param:
    name: str
    description: str
    where: str = "query"
    type: str = "string"
    enum: tuple[str, ...] = ()


@dataclass(frozen=True)
class Route:
    path: str  # as aiohttp routes it
    method: str  # Api's method
    summary: str
    page: str  # the page that shows the same
    params: tuple[Param, ...] = ()

    @property
    def openapi_path(self) -> str:
        return self.path.replace("{id:\\d+}", "{id}")


ID = Param("id", "the id", where="path", type="integer")
PAGE = Param("page", "page number (50 rows a page)", type="integer")

ROUTES = (
    Route("/api/overview", "overview", "Errors that want attention in the last 24 h with their hourly trend, "
          "approvals waiting, recent runs and dry runs, system status, execution mode and kill switch", "/"),
    Route("/api/errors", "errors", "One page of errors, newest first, with state and owner", "/errors",
          (Param("type", "error type (exact)"),
           Param("q", "text in the message or source, or an object the error names (pod, deployment, host, "
                      "service, index, or a bound object such as k8s:ns/pod/name)"),
           Param("state", "only errors in this state", enum=STATES), PAGE)),
    Route("/api/errors/{id:\\d+}", "error", "One error: state, owner, notes, objects, hourly trend, solutions "
          "filled with its values, runs and dry runs, approvals, decisions", "/errors/{id}", (ID,)),
    Route("/api/approvals", "approvals", "One page of approvals", "/approvals",
          (Param("status", "approval status (default pending)", enum=("pending", "approved", "rejected", "expired", "all")),
           PAGE)),
    Route("/api/approvals/{id:\\d+}", "approval", "One approval: what would run, on which (bound) object, why, and "
          "what came of it (a run, a dry run, a denial)", "/approvals/{id}", (ID,)),
    Route("/api/incidents", "incidents", "Systemic holds: every held object and the signs they share", "/incidents",
          (Param("status", "hold status (default pending)", enum=("pending", "decided", "expired", "all")),)),
    Route("/api/incidents/{id:\\d+}", "incident", "One systemic hold with its objects and what came of each",
          "/incidents/{id}", (ID,)),
    Route("/api/runs", "runs", "One page of runs and dry runs, newest first", "/runs",
          (Param("status", "a run status, or dry_run for the dry runs only",
                 enum=("dry_run", "success", "failed", "timeout", "unknown")), PAGE)),
    Route("/api/patterns", "patterns", "Every error pattern in match order with its state and auto-resolve", "/patterns"),
    Route("/api/playbooks", "playbooks", "Every available playbook and its state", "/playbooks"),
    Route("/api/audit", "audit", "The audit log: every decision a person or the service made, newest first", "/audit",
          (Param("person", "who (any case; service for the stages)"),
           Param("object", "part of an object's name, or error:ID"),
           Param("since", "from (ISO-8601, or 2h / 7d ago)"), Param("until", "until (ISO-8601, or 2h / 7d ago)"),
           Param("people", "1: leave the service's own decisions out", type="integer"), PAGE)),
    Route("/api/status", "status", "system_status with each row's age; a row not checked for twice the monitor "
          "interval is stale", "/"),
    Route("/api/kill-switch", "kill_switch", "The kill switch and the execution mode", "/runs"),
    Route("/api/changes", "changes", "A fingerprint of what the lists show: poll it, reload when it changes "
          "(the pages' live refresh does)", "(every list)"),
)


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "total_seconds"):
        return value.total_seconds()
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    if hasattr(value, "__dict__"):
        return {k: v for k, v in vars(value).items() if not k.startswith("_")}
    return str(value)


def as_json(data: Any, *, status: int = 200) -> web.Response:
    """JSON with times as ISO-8601 UTC (the database's times are naive UTC)."""
    body = orjson.dumps(data, default=_default, option=orjson.OPT_NAIVE_UTC | orjson.OPT_NON_STR_KEYS)
    return web.Response(body=body, status=status, content_type="application/json")


def not_found(what: str) -> web.Response:
    return as_json({"error": f"no such {what}"}, status=404)


class Api:
    def __init__(self, console: Any) -> None:
        """``console``: the :class:`elk_resolver.console.views.Console` whose pool, settings and
        filters the API shares."""
        self.c = console

    def _page(self, request: web.Request) -> int:
        return self.c.int_param(request, "page")

    async def overview(self, request: web.Request) -> web.Response:
        return as_json(await reading.overview(self.c.pool, self.c.settings))

    async def errors(self, request: web.Request) -> web.Response:
        q = request.query
        state = q.get("state") if q.get("state") in STATES else None
        return as_json(await reading.errors(self.c.pool, error_type=q.get("type") or None, text=(q.get("q") or "").strip() or None,
                                            state=state, page=self._page(request)))

    async def error(self, request: web.Request) -> web.Response:
        data = await reading.error_detail(self.c.pool, self.c.settings, int(request.match_info["id"]))
        if data is None:
            return not_found("error")
        data["error"].pop("raw_log_data", None)  # the stored event is for the page's facts, not an export
        return as_json(data)

    async def approvals(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "pending")
        page = self._page(request)
        rows, total = await approvals.list_approvals(self.c.pool, status=None if status == "all" else status,
                                                     limit=reading.PAGE, offset=(page - 1) * reading.PAGE)
        return as_json({"rows": [self._approval_row(r) for r in rows], "paging": reading.pages(total, page)})

    @staticmethod
    def _approval_row(row: dict[str, Any]) -> dict[str, Any]:
        request = row.pop("stored_request", None) or row.get("request") or {}
        return {**row, "object": reading.bound_object(request), "commands": request.get("commands") or []}

    async def approval(self, request: web.Request) -> web.Response:
        data = await reading.approval_detail(self.c.pool, int(request.match_info["id"]), self.c.settings)
        if data is None:
            return not_found("approval")
        data["approval"].pop("raw_log_data", None)
        return as_json(data)

    async def incidents(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "pending")
        rows = await approvals.list_incidents(self.c.pool, status=None if status == "all" else status, limit=reading.PAGE)
        return as_json({"rows": rows})

    async def incident(self, request: web.Request) -> web.Response:
        data = await approvals.incident_detail(self.c.pool, int(request.match_info["id"]))
        return not_found("incident") if data is None else as_json(data)

    async def runs(self, request: web.Request) -> web.Response:
        return as_json(await reading.runs(self.c.pool, status=request.query.get("status") or None, page=self._page(request)))

    async def patterns(self, request: web.Request) -> web.Response:
        return as_json({"rows": await controls.list_patterns(self.c.pool)})

    async def playbooks(self, request: web.Request) -> web.Response:
        return as_json({"rows": await controls.playbooks(self.c.pool, self.c.settings)})

    async def audit(self, request: web.Request) -> web.Response:
        try:
            filters = self.c.audit_filters(request)
        except ValueError as exc:
            return as_json({"error": str(exc)}, status=400)
        return as_json(await audit.trail(self.c.pool, page=self._page(request), **filters))

    async def status(self, request: web.Request) -> web.Response:
        return as_json({"rows": await reading.system_status(self.c.pool, self.c.settings),
                        "stale_after_s": reading.stale_after_s(self.c.settings)})

    async def kill_switch(self, request: web.Request) -> web.Response:
        return as_json(await controls.kill_switch(self.c.pool, self.c.settings))

    async def changes(self, request: web.Request) -> web.Response:
        return as_json({"version": await audit.changes(self.c.pool)})

    async def unknown(self, request: web.Request) -> web.Response:
        return as_json({"error": f"no API at {request.path}: see /openapi.json"}, status=404)

    def install(self, router: web.UrlDispatcher) -> None:
        for route in ROUTES:
            router.add_get(route.path, getattr(self, route.method))
        router.add_get("/api/{tail:.*}", self.unknown)


def openapi_document(version: str = "0.1.0") -> dict[str, Any]:
    """OpenAPI 3.1 of :data:`ROUTES`."""
    paths: dict[str, Any] = {}
    for route in ROUTES:
        params = []
        for p in route.params:
            schema: dict[str, Any] = {"type": p.type}
            if p.enum:
                schema["enum"] = list(p.enum)
            params.append({"name": p.name, "in": p.where, "required": p.where == "path", "description": p.description,
                           "schema": schema})
        responses: dict[str, Any] = {
            "200": {"description": f"what {route.page} shows", "content": {"application/json": {"schema": {"type": "object"}}}},
            "401": {"description": "not signed in (from an address other than loopback)"},
        }
        if any(p.where == "path" for p in route.params):
            responses["404"] = {"description": "no such object"}
        paths[route.openapi_path] = {"get": {"operationId": route.method, "summary": route.summary,
                                             "description": f"The page: {route.page}", "parameters": params,
                                             "responses": responses}}
    return {
        "openapi": "3.1.0",
        "info": {"title": "ELK Auto Resolver console API", "version": version,
                 "description": "Read-only JSON of what the console's pages show. Times are UTC (ISO-8601)."},
        "servers": [{"url": "/"}],
        "components": {"securitySchemes": {
            "token": {"type": "http", "scheme": "bearer",
                      "description": "an API token from `elk-resolver console new-token NAME` (ELK_RESOLVER_CONSOLE_TOKENS)"},
            "session": {"type": "apiKey", "in": "cookie", "name": "elk_console_session",
                        "description": "the console's sign-in session"}}},
        "security": [{"token": []}, {"session": []}],
        "paths": paths,
    }


def parse_when(text: str | None) -> datetime | None:
    """An audit filter's time: ISO-8601 or a duration ago (2h, 7d, now-30m); None when empty."""
    from elk_resolver.operations.times import parse_time

    if not text or not text.strip():
        return None
    return parse_time(text)
