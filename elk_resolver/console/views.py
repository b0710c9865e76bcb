"""The console's pages and forms; each handler reads or calls :mod:`elk_resolver.operations`.

Every page shares one layout (``base.html``: the navigation, who is signed in, a footer), an
unknown address gets that layout with a way back (not a bare 404), and the lists a page marks
``data-live`` are kept current by ``static/console.js`` (it polls ``/api/changes``). The JSON
API is :mod:`elk_resolver.console.api`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from importlib import resources
from typing import Any
from urllib.parse import urlencode, urlsplit

import jinja2
from aiohttp import web

from elk_resolver.console import charts
from elk_resolver.console.api import ROUTES, Api, as_json, openapi_document, parse_when
from elk_resolver.console.auth import SEED_COOKIE, SESSION_COOKIE, Gate, LoginBusy, TooManyAttempts, safe_next
from elk_resolver.operations import approvals, audit, controls, effect, people, reading, triage
from elk_resolver.operations.times import parse_until
from elk_resolver.settings import Settings
from handlers.execute import utc_naive

log = logging.getLogger("elk_resolver.console")

PERSON = web.RequestKey("console_person", object)
SEED = web.RequestKey("console_csrf_seed", str)
HERE = resources.files("elk_resolver.console")
# the pages' navigation; /incidents lists the systemic holds
NAV = (("/", "Overview"), ("/errors", "Errors"), ("/incidents", "Incidents"), ("/objects", "Objects"),
       ("/approvals", "Approvals"), ("/runs", "Runs"), ("/patterns", "Patterns"), ("/playbooks", "Playbooks"), ("/audit", "Audit"))
# the service's own endpoints (streams.app): not console pages, answered as they are
SERVICE_PATHS = ("/health", "/ready", "/metrics", "/asyncapi", "/asyncapi.json")
SECURITY_HEADERS = {
    # scripts only from the console's own static files (no inline script), fetches only to itself
    "Content-Security-Policy": "default-src 'none'; style-src 'self'; img-src 'self' data:; script-src 'self';"
                               " connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def _when(value: Any) -> str:
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M:%S}"
    return "" if value is None else str(value)


def _ago(value: Any) -> str:
    if not isinstance(value, datetime):
        return ""
    seconds = (utc_naive() - value).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if abs(seconds) >= size:
            return f"{seconds / size:.0f}{unit} ago" if seconds > 0 else f"in {-seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s ago" if seconds >= 0 else f"in {-seconds:.0f}s"


def _duration(value: Any) -> str:
    return f"{value.total_seconds():.2f}s" if isinstance(value, timedelta) else ""


def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(HERE / "templates")),
        autoescape=jinja2.select_autoescape(["html"], default=True),
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(when=_when, ago=_ago, duration=_duration,
                       pretty=lambda v: json.dumps(v, indent=2, default=str, ensure_ascii=False),
                       timeline=reading.timeline_href)
    return env


class Console:
    def __init__(
        self,
        settings: Settings,
        pool: Callable[[], Any],
        *,
        publish: approvals.Publisher | None = None,
        asyncapi: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.settings = settings
        self._pool = pool
        self.publish = publish
        self.asyncapi = asyncapi
        self.gate = Gate.from_settings(settings, pool)
        self.env = environment()
        self.static_versions = {
            name: hashlib.sha256((HERE / "static" / name).read_bytes()).hexdigest()[:10]
            for name in ("console.css", "console.js")
        }  # fmt: skip
        self.env.globals["static"] = lambda name: f"/static/{name}?v={self.static_versions.get(name, '')}"
        self.env.globals["nav"] = NAV

    @property
    def pool(self):
        pool = self._pool()
        if pool is None:
            raise web.HTTPServiceUnavailable(text="the database pool is not open")
        return pool

    # -- plumbing -----------------------------------------------------------------------------
    @web.middleware
    async def middleware(self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]):
        if not self._is_console(request.path):
            return await handler(request)
        person = await self.gate.person(request)
        request[PERSON] = person
        seed, new_seed = self.gate.seed(request)
        request[SEED] = seed
        open_paths = ("/login", "/static/")
        api = request.path.startswith("/api/") or request.path == "/openapi.json"
        if not request.path.startswith(open_paths) and not self.gate.may_read(request, person):
            if api:
                return as_json({"error": "sign in first: send Authorization: Bearer TOKEN (elk-resolver console "
                                         "new-token NAME), or a session cookie"}, status=401)
            if request.method == "GET":
                raise web.HTTPSeeOther("/login?" + urlencode({"next": request.path_qs}))
            return self._refuse(request, 401, "sign in first")
        if request.method == "POST":
            form = await request.post()
            why = self.gate.same_site_post(request, form.get("csrf")) if person is None or person.via != "token" else None
            if why is None and person is None and request.path != "/login":
                why = "every change needs an authenticated person: sign in"
            if why is not None:
                log.warning("console refused %s %s from %s: %s", request.method, request.path, request.remote, why)
                return self._refuse(request, 403, why)
        try:
            response = await handler(request)
        except web.HTTPNotFound as exc:
            if api:
                response = as_json({"error": exc.text or "not found"}, status=404)
            else:
                response = self.not_found(request, exc.text if exc.text and not exc.text.startswith("404") else None)
        if new_seed:
            response.set_cookie(SEED_COOKIE, seed, **self.gate.cookie_options(request))
        for k, v in SECURITY_HEADERS.items():
            response.headers.setdefault(k, v)
        return response

    @staticmethod
    def _is_console(path: str) -> bool:
        """Every path but the service's own endpoints: unknown ones too, so they get the
        console's layout and a way back."""
        return path not in SERVICE_PATHS

    def _refuse(self, request: web.Request, status: int, why: str) -> web.Response:
        return self.render(request, "message.html", {"title": "Refused", "text": why, "back": self._back(request)},
                           status=status)

    @staticmethod
    def _back(request: web.Request) -> str:
        """The page the person came from, when it is one of the console's, else the overview."""
        came_from = urlsplit(request.headers.get("Referer", ""))
        if not came_from.path or (came_from.netloc and came_from.netloc != request.host):
            return "/"
        return safe_next(came_from.path + (f"?{came_from.query}" if came_from.query else ""))

    def not_found(self, request: web.Request, text: str | None = None) -> web.Response:
        """An unknown page: the layout, what was asked for, and ways back."""
        path = request.path
        parent = path.rstrip("/").rsplit("/", 1)[0] or "/"
        up = None
        for href, label in NAV:
            if href != "/" and (parent == href or parent.startswith(href + "/")):
                up = {"href": href, "label": f"{label}: the list"}
        text = text or f"There is no page at {path}."
        return self.render(request, "not_found.html", {"text": text, "up": up}, status=404)

    def render(self, request: web.Request, template: str, ctx: dict[str, Any], *, status: int = 200) -> web.Response:
        seed = request.get(SEED) or self.gate.seed(request)[0]
        person = request.get(PERSON)
        base = {
            "person": person, "csrf": self.gate.csrf_token(seed), "path": request.path,
            "may_decide": people.may_decide(self.settings, person), "login_enabled": bool(self.settings.console_users),
            "settings": self.settings,
        }  # fmt: skip
        body = self.env.get_template(template).render(**base, **ctx)
        return web.Response(text=body, content_type="text/html", status=status)

    @staticmethod
    def int_param(request: web.Request, name: str, default: int = 1) -> int:
        try:
            return max(1, int(request.query.get(name, default)))
        except ValueError:
            return default

    @staticmethod
    def _query(request: web.Request, **change: Any) -> str:
        params = {**request.query, **{k: v for k, v in change.items()}}
        return "?" + urlencode({k: v for k, v in params.items() if v not in (None, "")})

    # -- reading ------------------------------------------------------------------------------
    async def overview(self, request: web.Request) -> web.Response:
        data = await reading.overview(self.pool, self.settings)
        return self.render(request, "overview.html", {**data, "chart_data": charts.hourly(data["trend"])})

    async def errors(self, request: web.Request) -> web.Response:
        kind, text = request.query.get("type") or None, (request.query.get("q") or "").strip() or None
        state = request.query.get("state") if request.query.get("state") in triage.STATES else None
        data = await reading.errors(self.pool, error_type=kind, text=text, state=state,
                                    page=self.int_param(request, "page"))
        return self.render(request, "errors.html", {**data, "type": kind or "", "q": text or "", "state": state or "",
                                                    "states": triage.STATES,
                                                    "link": lambda **c: self._query(request, **c)})

    async def error(self, request: web.Request) -> web.Response:
        error_id = int(request.match_info["id"])
        data = await reading.error_detail(self.pool, self.settings, error_id)
        if data is None:
            raise web.HTTPNotFound(text=f"There is no error {error_id} (retention may have deleted it).")
        return self.render(request, "error.html", {**data, "chart_data": charts.hourly(data["trend"], labels=8),
                                                   "done": request.query.get("done", "")[:200]})

    async def error_state(self, request: web.Request) -> web.Response:
        """Acknowledge, resolve, snooze (for a chosen time), mute or reopen an error."""
        form = await request.post()
        error_id = int(request.match_info["id"])
        state = str(form.get("state", ""))
        try:
            until = parse_until(str(form.get("snooze_for") or "1h")) if state == "snoozed" else None
            row = await triage.set_state(self.pool, error_id, state, request[PERSON], until=until)
        except (people.Refused, ValueError) as exc:
            return self._refuse(request, 400 if isinstance(exc, ValueError) else 403, str(exc))
        raise web.HTTPSeeOther(f"/errors/{error_id}?" + urlencode({"done": f"{row['state']} by {row['changed_by']}"}))

    async def error_owner(self, request: web.Request) -> web.Response:
        form = await request.post()
        error_id = int(request.match_info["id"])
        try:
            row = await triage.set_owner(self.pool, error_id, str(form.get("owner", "")), request[PERSON])
        except people.Refused as exc:
            return self._refuse(request, 403, str(exc))
        raise web.HTTPSeeOther(f"/errors/{error_id}?" + urlencode({"done": f"owner: {row['owner'] or 'nobody'}"}))

    async def error_note(self, request: web.Request) -> web.Response:
        form = await request.post()
        error_id = int(request.match_info["id"])
        try:
            await triage.add_note(self.pool, error_id, str(form.get("text", "")), request[PERSON])
        except people.Refused as exc:
            return self._refuse(request, 400, str(exc))
        raise web.HTTPSeeOther(f"/errors/{error_id}?" + urlencode({"done": "note added"}) + "#notes")

    async def approvals(self, request: web.Request) -> web.Response:
        status = request.query.get("status", "pending")
        status = None if status == "all" else status
        paging = reading.pages(0, 1)
        rows, total = await approvals.list_approvals(self.pool, status=status, limit=paging["per_page"],
                                                      offset=(self.int_param(request, "page") - 1) * paging["per_page"])
        paging = reading.pages(total, self.int_param(request, "page"))
        groups = reading.by_error(rows) if status == "pending" else []
        holds = await approvals.list_incidents(self.pool, status="pending" if status == "pending" else None, limit=20)
        return self.render(request, "approvals.html", {
            "rows": rows, "groups": groups, "holds": holds, "status": status or "all", "paging": paging,
            "link": lambda **c: self._query(request, **c)})  # fmt: skip

    async def approval(self, request: web.Request) -> web.Response:
        approval_id = int(request.match_info["id"])
        data = await reading.approval_detail(self.pool, approval_id, self.settings)
        if data is None:
            raise web.HTTPNotFound(text=f"There is no approval {approval_id}.")
        return self.render(request, "approval.html", {**data, "done": request.query.get("done", "")})

    async def incident(self, request: web.Request) -> web.Response:
        incident_id = int(request.match_info["id"])
        data = await approvals.incident_detail(self.pool, incident_id)
        if data is None:
            raise web.HTTPNotFound(text=f"There is no systemic hold {incident_id}.")
        return self.render(request, "incident.html", {**data, "done": request.query.get("done", "")})

    async def incidents(self, request: web.Request) -> web.Response:
        data = await reading.incidents(self.pool)
        return self.render(request, "incidents.html", data)

    async def objects(self, request: web.Request) -> web.Response:
        rows = await reading.objects(self.pool)
        return self.render(request, "objects.html", {"rows": rows})

    async def object_timeline(self, request: web.Request) -> web.Response:
        key = (request.query.get("key") or "").strip()
        if not key:
            raise web.HTTPSeeOther("/objects")
        rows = await reading.object_timeline(self.pool, key)
        return self.render(request, "object.html", {"key": key, "rows": rows})

    async def decide_hold(self, request: web.Request) -> web.Response:
        """A systemic hold: approve every object, or the selected ones (the rest are rejected), or reject it."""
        form = await request.post()
        incident_id = int(request.match_info["id"])
        person = request[PERSON]
        try:
            if form.get("action") == "approve":
                chosen = None if form.get("scope") == "all" else [str(v) for v in form.getall("objects", [])]
                if chosen == []:
                    return self._refuse(request, 400, "no object selected")
                decision = await approvals.approve_incident(self.pool, self.settings, incident_id, person, chosen,
                                                             publish=self.publish)
            else:
                decision = await approvals.reject_incident(self.pool, self.settings, incident_id, person,
                                                            (form.get("reason") or "").strip() or None,
                                                            publish=self.publish)
        except people.Refused as exc:
            return self._refuse(request, 403, str(exc))
        raise web.HTTPSeeOther(f"/incidents/{incident_id}?done={decision.status}")

    async def patterns(self, request: web.Request, *, message: str = "", test: Any = None,
                       problem: str | None = None) -> web.Response:
        rows = await controls.list_patterns(self.pool)
        return self.render(request, "patterns.html", {"rows": rows, "message": message, "test": test,
                                                      "problem": problem})

    async def test_pattern(self, request: web.Request) -> web.Response:
        """What ingest would make of a pasted line. A POST: the line stays out of the address,
        so out of browser history and access logs (it may hold what masking is there for)."""
        form = await request.post()
        message = str(form.get("message") or "").strip()
        test, problem = None, None
        if message:
            try:
                test = await controls.test_message(self.pool, self.settings, message,
                                                     error_type=str(form.get("error_type") or "") or None)
            except people.Refused as exc:
                problem = str(exc)
        return await self.patterns(request, message=test.message if test else "", test=test, problem=problem)

    async def playbooks(self, request: web.Request) -> web.Response:
        return self.render(request, "playbooks.html", {"rows": await controls.playbooks(self.pool, self.settings)})

    async def toggle_playbook(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            await controls.switch_playbook(self.pool, self.settings, request.match_info["name"],
                                             form.get("enable") == "1", request[PERSON])
        except people.Refused as exc:
            return self._refuse(request, 403, str(exc))
        raise web.HTTPSeeOther("/playbooks")

    async def playbook_effect(self, request: web.Request) -> web.Response:
        """Did the fix help? A playbook's cases acted on and left alone, and its trial (issue 25)."""
        data = await effect.playbook(self.pool, self.settings, request.match_info["name"])
        return self.render(request, "effect.html", data)

    async def playbook_trial(self, request: web.Request) -> web.Response:
        form = await request.post()
        name = request.match_info["name"]
        try:
            fraction = None if form.get("stop") == "1" else float(str(form.get("fraction", "")))
            await effect.set_trial(self.pool, self.settings, name, fraction, request[PERSON])
        except ValueError as exc:
            return self._refuse(request, 400, f"a trial's fraction is a number above 0 and at most 1 ({exc})")
        except people.Refused as exc:
            return self._refuse(request, 403, str(exc))
        raise web.HTTPSeeOther(f"/playbooks/{name}/effect")

    def audit_filters(self, request: web.Request) -> dict[str, Any]:
        """The audit page's (and API's) filters from the query; a bad time raises ValueError."""
        q = request.query
        return {"person": q.get("person") or None, "obj": q.get("object") or None,
                "since": parse_when(q.get("since")), "until": parse_when(q.get("until")),
                "people_only": q.get("people") in ("1", "on", "true")}

    async def audit(self, request: web.Request) -> web.Response:
        problem = None
        try:
            filters = self.audit_filters(request)
        except ValueError as exc:
            filters, problem = {}, str(exc)
        data = await audit.trail(self.pool, page=self.int_param(request, "page"), **filters)
        shown = {k: request.query.get(k, "") for k in ("person", "object", "since", "until")}
        shown["people"] = request.query.get("people") in ("1", "on", "true")
        return self.render(request, "audit.html", {**data, "filters": shown, "problem": problem,
                                                   "actors": await audit.actors(self.pool),
                                                   "link": lambda **c: self._query(request, **c)})

    async def api_html(self, request: web.Request) -> web.Response:
        return self.render(request, "api.html", {"routes": ROUTES})

    async def openapi_json(self, request: web.Request) -> web.Response:
        return as_json(openapi_document())

    async def runs(self, request: web.Request) -> web.Response:
        status = request.query.get("status") or None
        data = await reading.runs(self.pool, status=status, page=self.int_param(request, "page"))
        switch = await controls.kill_switch(self.pool, self.settings)
        return self.render(request, "runs.html", {**data, "status": status or "", "kill_switch": switch,
                                                  "link": lambda **c: self._query(request, **c)})

    async def asyncapi_html(self, request: web.Request) -> web.Response:
        document = self.asyncapi() if self.asyncapi else {"channels": {}, "components": {}}
        return self.render(request, "asyncapi.html", asyncapi_view(document))

    # -- changing -------------------------------------------------------------------------------
    async def decide(self, request: web.Request) -> web.Response:
        form = await request.post()
        approval_id = int(request.match_info["id"])
        person = request[PERSON]
        try:
            if form.get("action") == "approve":
                decision = await approvals.approve(self.pool, self.settings, approval_id, person, publish=self.publish)
            else:
                decision = await approvals.reject(self.pool, self.settings, approval_id, person,
                                                   (form.get("reason") or "").strip() or None, publish=self.publish)
        except people.Refused as exc:
            return self._refuse(request, 403, str(exc))
        raise web.HTTPSeeOther(f"/approvals/{approval_id}?done={decision.status}")

    async def decide_incident(self, request: web.Request) -> web.Response:
        form = await request.post()
        person = request[PERSON]
        field = "all_ids" if form.get("scope") == "all" else "ids"
        ids = [int(v) for v in form.getall(field, []) if str(v).isdigit()]
        if not ids:
            return self._refuse(request, 400, "no approval selected")
        try:
            decisions = await approvals.decide_many(
                self.pool, self.settings, ids, person, approve_them=form.get("action") == "approve",
                reason=(form.get("reason") or "").strip() or None, publish=self.publish)  # fmt: skip
        except people.Refused as exc:
            return self._refuse(request, 403, str(exc))
        return self.render(request, "decided.html", {"decisions": decisions})

    async def toggle_pattern(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            await controls.set_pattern_enabled(self.pool, int(request.match_info["id"]), form.get("enable") == "1",
                                                 request[PERSON])
        except people.Refused as exc:
            return self._refuse(request, 403, str(exc))
        raise web.HTTPSeeOther("/patterns")

    async def pattern_auto_resolve(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            await controls.set_pattern_auto_resolve(self.pool, self.settings, int(request.match_info["id"]),
                                                      form.get("on") == "1", request[PERSON])
        except people.Refused as exc:
            return self._refuse(request, 403, str(exc))
        raise web.HTTPSeeOther("/patterns")

    async def set_kill_switch(self, request: web.Request) -> web.Response:
        form = await request.post()
        try:
            await controls.set_kill_switch(self.pool, self.settings, form.get("state") == "on",
                                             request[PERSON])
        except people.Refused as exc:
            return self._refuse(request, 403, str(exc))
        raise web.HTTPSeeOther("/runs")

    # -- signing in -------------------------------------------------------------------------------
    async def login_form(self, request: web.Request) -> web.Response:
        return self.render(request, "login.html", {"next": safe_next(request.query.get("next")), "problem": None})

    async def login(self, request: web.Request) -> web.Response:
        form = await request.post()
        target = safe_next(str(form.get("next") or "/"))
        name = str(form.get("username", ""))
        # a failed sign-in keeps the name typed (never the password): only the password is retyped
        again = {"next": target, "username": name[:100]}
        try:
            person = await self.gate.login(name, str(form.get("password", "")), request.remote)
        except TooManyAttempts as exc:
            response = self.render(request, "login.html", {**again, "problem": str(exc)}, status=429)
            response.headers["Retry-After"] = str(max(1, round(exc.wait_s)))
            return response
        except LoginBusy:
            return self.render(request, "login.html", {**again, "problem": "too many sign-ins at once: "
                                                       "try again in a moment"}, status=503)
        if person is None:
            return self.render(request, "login.html", {**again, "problem": "wrong name or password"}, status=401)
        response = web.HTTPSeeOther(target)
        token = await self.gate.start_session(person, request)
        response.set_cookie(SESSION_COOKIE, token, max_age=int(self.settings.console_session_s),
                            **self.gate.cookie_options(request))
        raise response

    async def logout(self, request: web.Request) -> web.Response:
        person = request[PERSON]
        await self.gate.end_session(request.cookies.get(SESSION_COOKIE), person.name if person else "logout")
        response = web.HTTPSeeOther("/")
        response.del_cookie(SESSION_COOKIE, path="/")
        raise response

    # -- sessions (approvers) ----------------------------------------------------------------------
    def _approver(self, request: web.Request) -> web.Response | None:
        person = request[PERSON]
        if person is None or not people.may_decide(self.settings, person):
            return self._refuse(request, 403, "only an approver sees and ends sessions")
        return None

    async def sessions(self, request: web.Request) -> web.Response:
        refused = self._approver(request)
        if refused is not None:
            return refused
        return self.render(request, "sessions.html", {"sessions": await self.gate.active_sessions()})

    async def end_session(self, request: web.Request) -> web.Response:
        refused = self._approver(request)
        if refused is not None:
            return refused
        ended = await self.gate.end_session_by_id(int(request.match_info["id"]), request[PERSON].name)
        log.warning("console session %s of %s ended by %s", request.match_info["id"], ended, request[PERSON].name)
        raise web.HTTPSeeOther("/sessions")


def asyncapi_view(document: dict[str, Any]) -> dict[str, Any]:
    """The AsyncAPI document as tables: each topic with its producers, consumers and message, and
    each schema with its fields."""
    topics: dict[str, dict[str, Any]] = {}
    messages = document.get("components", {}).get("messages", {})
    for name, channel in document.get("channels", {}).items():
        t = topics.setdefault(channel.get("address", name), {"address": channel.get("address", name), "producers": [],
                                                             "consumers": [], "about": "", "payload": None})
        (t["producers"] if name.startswith("to_") else t["consumers"]).append(channel.get("description", ""))
        t["about"] = t["about"] or channel.get("description", "").split(": ", 1)[-1]
        for ref in channel.get("messages", {}).values():
            message = messages.get(ref.get("$ref", "").rsplit("/", 1)[-1], {})
            payload = message.get("payload", {}).get("$ref", "")
            if payload:
                t["payload"] = payload.rsplit("/", 1)[-1]
    schemas = []
    for name, schema in document.get("components", {}).get("schemas", {}).items():
        required = set(schema.get("required", []))
        fields = []
        for field, spec in (schema.get("properties") or {}).items():
            kinds = spec.get("type") or [s.get("type") or s.get("$ref", "").rsplit("/", 1)[-1]
                                         for s in spec.get("anyOf", []) if s] or spec.get("$ref", "").rsplit("/", 1)[-1]
            fields.append({"name": field, "type": kinds if isinstance(kinds, str) else " | ".join(map(str, kinds)),
                           "required": field in required, "description": spec.get("description", "")})
        schemas.append({"name": name, "description": schema.get("description", ""), "fields": fields})
    return {"info": document.get("info", {}), "topics": sorted(topics.values(), key=lambda t: t["address"]),
            "schemas": schemas}


def install(
    app: web.Application,
    settings: Settings,
    *,
    pool: Callable[[], Any],
    publish: approvals.Publisher | None = None,
    asyncapi: Callable[[], dict[str, Any]] | None = None,
) -> Console:
    """Add the console's routes and middleware to an aiohttp application."""
    console = Console(settings, pool, publish=publish, asyncapi=asyncapi)
    app.middlewares.append(console.middleware)
    r = app.router
    r.add_get("/", console.overview)
    r.add_get("/errors", console.errors)
    r.add_get("/errors/{id:\\d+}", console.error)
    r.add_post("/errors/{id:\\d+}/state", console.error_state)
    r.add_post("/errors/{id:\\d+}/owner", console.error_owner)
    r.add_post("/errors/{id:\\d+}/notes", console.error_note)
    r.add_get("/approvals", console.approvals)
    r.add_get("/approvals/{id:\\d+}", console.approval)
    r.add_post("/approvals/{id:\\d+}/decide", console.decide)
    r.add_post("/approvals/decide", console.decide_incident)
    r.add_get("/incidents", console.incidents)
    r.add_get("/incidents/{id:\\d+}", console.incident)
    r.add_get("/objects", console.objects)
    r.add_get("/objects/timeline", console.object_timeline)
    r.add_post("/incidents/{id:\\d+}/decide", console.decide_hold)
    r.add_get("/patterns", console.patterns)
    r.add_post("/patterns/test", console.test_pattern)
    r.add_post("/patterns/{id:\\d+}/toggle", console.toggle_pattern)
    r.add_post("/patterns/{id:\\d+}/auto-resolve", console.pattern_auto_resolve)
    r.add_get("/playbooks", console.playbooks)
    r.add_post("/playbooks/{name}/toggle", console.toggle_playbook)
    r.add_get("/playbooks/{name}/effect", console.playbook_effect)
    r.add_post("/playbooks/{name}/trial", console.playbook_trial)
    r.add_get("/audit", console.audit)
    r.add_get("/runs", console.runs)
    r.add_post("/kill-switch", console.set_kill_switch)
    r.add_get("/login", console.login_form)
    r.add_post("/login", console.login)
    r.add_post("/logout", console.logout)
    r.add_get("/sessions", console.sessions)
    r.add_post("/sessions/{id:\\d+}/end", console.end_session)
    r.add_get("/asyncapi.html", console.asyncapi_html)
    r.add_get("/api.html", console.api_html)
    r.add_get("/openapi.json", console.openapi_json)
    Api(console).install(r)
    r.add_static("/static/", str(HERE / "static"), append_version=True)
    return console
