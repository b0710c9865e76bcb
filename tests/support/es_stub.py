"""A real HTTP server on 127.0.0.1 that speaks the few Elasticsearch APIs the service calls.

    async with EsStub() as es:
        client = AsyncElasticsearch(es.url)
        ...
        assert es.calls("PUT") == [("PUT", "/logs-1/_settings")]
        assert es.requests[0].body == {"index.blocks.read_only_allow_delete": None}

Every request is recorded. Routes are (method, path regex) -> handler; a handler gets the
:class:`SeenRequest` and the regex match and returns a :class:`Reply`. Add routes with
``es.route("GET", r"/_cluster/health", handler)`` (later routes win), or script the next replies
of any path with ``es.script(Reply(...))``. Every response carries ``X-Elastic-Product:
Elasticsearch`` and a JSON content type, which the official client checks.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    body: Any = field(default_factory=lambda: {"acknowledged": True})
    status: int = 200
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class SeenRequest:
    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


Handler = Callable[[SeenRequest, re.Match[str]], Reply | Awaitable[Reply]]


def error_reply(status: int, type_: str, reason: str) -> Reply:
    return Reply(status=status, body={"error": {"type": type_, "reason": reason}, "status": status})


def _info(_: SeenRequest, __: re.Match[str]) -> Reply:
    return Reply(
        body={
            "name": "es-stub",
            "cluster_name": "stub",
            "version": {"number": "9.0.0", "build_flavor": "default"},
            "tagline": "You Know, for Search",
        }
    )


def _acknowledged(_: SeenRequest, __: re.Match[str]) -> Reply:
    return Reply(body={"acknowledged": True})


def _cluster_health(_: SeenRequest, __: re.Match[str]) -> Reply:
    return Reply(
        body={
            "cluster_name": "stub",
            "status": "green",
            "number_of_nodes": 1,
            "active_shards": 1,
            "unassigned_shards": 0,
            "relocating_shards": 0,
            "initializing_shards": 0,
        }
    )


class EsStub:
    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._scripted: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.url = ""
        self.route("GET", r"/", _info)
        self.route("GET", r"/_cluster/health(/[^/]+)?", _cluster_health)
        self.route("PUT", r"/(?P<index>[^/_][^/]*)/_settings", _acknowledged)
        self.route("POST", r"/_cluster/reroute", _acknowledged)
        self.route("POST", r"/(?P<index>[^/_][^/]*)/_ilm/retry", _acknowledged)

    def route(self, method: str, pattern: str, handler: Handler) -> None:
        """Answer ``method`` requests whose whole path matches ``pattern``; later routes win."""
        self._routes.insert(0, (method.upper(), re.compile(pattern), handler))

    def script(self, *replies: Reply) -> None:
        """The next requests (any route) get these replies, in order, before the routes answer."""
        self._scripted.extend(replies)

    def calls(self, method: str | None = None) -> list[tuple[str, str]]:
        return [(r.method, r.path) for r in self.requests if method is None or r.method == method]

    async def _dispatch(self, request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = raw.decode("utf-8", "replace")
        seen = SeenRequest(
            method=request.method,
            path=request.path,
            query=dict(request.query),
            body=body,
            headers=dict(request.headers),
        )
        self.requests.append(seen)
        if self._scripted:
            reply = self._scripted.popleft()
        else:
            reply = None
            for method, pattern, handler in self._routes:
                match = pattern.fullmatch(request.path)
                if method == request.method and match:
                    reply = handler(seen, match)
                    if asyncio.iscoroutine(reply):
                        reply = await reply
                    break
            if reply is None:
                reply = error_reply(404, "stub_no_route", f"no stub route for {request.method} {request.path}")
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        return web.Response(
            status=reply.status,
            body=json.dumps(reply.body).encode(),
            headers={
                "Content-Type": "application/json",
                "X-Elastic-Product": "Elasticsearch",
                **reply.headers,
            },
        )

    async def __aenter__(self) -> EsStub:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
