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

Documents for point-in-time searches (``backfill-es``):

    es.serve_documents([{"_id": "a", "_source": {"@timestamp": "...", "message": "..."}}, ...])
    es.fail_searches_after(2)  # the third and later searches answer 500 until cleared (None)

``POST /<index>/_pit`` opens a point in time, ``DELETE /_pit`` closes it, ``POST /_search``
with ``pit`` answers pages sorted by ``[@timestamp, _shard_doc]`` (``search_after``, ``size``,
``track_total_hits``), filtering on ``bool.filter`` ranges over ``@timestamp`` (ISO or
``epoch_millis``) and ``query_string`` ``field:value`` terms joined by AND.
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

from tests.support.local_http import LocalHttpServer


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


def _epoch_ms(value: Any, fmt: str | None = None) -> int:
    if fmt == "epoch_millis" or isinstance(value, int | float):
        return int(value)
    from datetime import UTC, datetime

    when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return int(when.timestamp() * 1000)


def _field(source: dict[str, Any], path: str) -> Any:
    if path in source:
        return source[path]
    value: Any = source
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _matches(source: dict[str, Any], clause: dict[str, Any]) -> bool:
    if "bool" in clause:
        return all(_matches(source, c) for c in clause["bool"].get("filter", []) + clause["bool"].get("must", []))
    if "range" in clause:
        for field_name, bounds in clause["range"].items():
            ts = _epoch_ms(_field(source, field_name))
            fmt = bounds.get("format")
            if "gte" in bounds and ts < _epoch_ms(bounds["gte"], fmt):
                return False
            if "gt" in bounds and ts <= _epoch_ms(bounds["gt"], fmt):
                return False
            if "lte" in bounds and ts > _epoch_ms(bounds["lte"], fmt):
                return False
            if "lt" in bounds and ts >= _epoch_ms(bounds["lt"], fmt):
                return False
        return True
    if "query_string" in clause:
        for term in re.split(r"\s+AND\s+", clause["query_string"]["query"]):
            name, _, wanted = term.partition(":")
            if str(_field(source, name.strip())) != wanted.strip().strip('"'):
                return False
        return True
    if "match_all" in clause:
        return True
    raise ValueError(f"es_stub cannot evaluate {clause}")


class EsStub(LocalHttpServer):
    def __init__(self) -> None:
        self.requests: list[SeenRequest] = []
        self._routes: list[tuple[str, re.Pattern[str], Handler]] = []
        self._scripted: deque[Reply] = deque()
        self.route("GET", r"/", _info)
        self.route("GET", r"/_cluster/health(/[^/]+)?", _cluster_health)
        self.route("PUT", r"/(?P<index>[^/_][^/]*)/_settings", _acknowledged)
        self.route("POST", r"/_cluster/reroute", _acknowledged)
        self.route("POST", r"/(?P<index>[^/_][^/]*)/_ilm/retry", _acknowledged)
        self.documents: list[dict[str, Any]] = []
        self.open_pits: set[str] = set()
        self.searches = 0
        self._fail_after: int | None = None
        self.route("POST", r"/(?P<index>[^/_][^/]*)/_pit", self._open_pit)
        self.route("DELETE", r"/_pit", self._close_pit)
        self.route("POST", r"/_search", self._search)
        self.route("GET", r"/_search", self._search)

    # -- point-in-time searches ---------------------------------------------------------------
    def serve_documents(self, docs: list[dict[str, Any]]) -> None:
        """Documents (``_id``, ``_source``) the PIT searches page through; order = _shard_doc."""
        self.documents = list(docs)

    def fail_searches_after(self, n: int | None) -> None:
        """Searches after the first ``n`` (counted from now) answer 500; ``None`` heals."""
        self._fail_after = None if n is None else self.searches + n

    def _open_pit(self, req: SeenRequest, match: re.Match[str]) -> Reply:
        pit = f"pit-{len(self.requests)}-{match['index']}"
        self.open_pits.add(pit)
        return Reply(body={"id": pit})

    def _close_pit(self, req: SeenRequest, _: re.Match[str]) -> Reply:
        pit = (req.body or {}).get("id")
        freed = 1 if pit in self.open_pits else 0
        self.open_pits.discard(pit)
        return Reply(body={"succeeded": True, "num_freed": freed})

    def _search(self, req: SeenRequest, _: re.Match[str]) -> Reply:
        body = req.body or {}
        if self._fail_after is not None and self.searches >= self._fail_after:
            return error_reply(500, "stub_failure", "scripted search failure")
        self.searches += 1
        pit = (body.get("pit") or {}).get("id")
        if pit is not None and pit not in self.open_pits:
            return error_reply(404, "search_context_missing_exception", f"No search context found for id [{pit}]")
        query = body.get("query") or {"match_all": {}}
        hits = []
        for shard_doc, doc in enumerate(self.documents):
            if _matches(doc["_source"], query):
                hits.append(((_epoch_ms(doc["_source"]["@timestamp"]), shard_doc), doc))
        hits.sort(key=lambda h: h[0])
        total = len(hits)
        after = body.get("search_after")
        if after is not None:
            hits = [h for h in hits if h[0] > tuple(after)]
        page = hits[: int(body.get("size", 10))]
        answer: dict[str, Any] = {
            "took": 1,
            "timed_out": False,
            "hits": {
                "total": {"value": total, "relation": "eq"} if body.get("track_total_hits", True) else None,
                "hits": [
                    {"_index": "logs", "_id": doc["_id"], "_score": None, "_source": doc["_source"], "sort": list(key)}
                    for key, doc in page
                ],
            },
        }
        if answer["hits"]["total"] is None:
            del answer["hits"]["total"]
        if pit is not None:
            answer["pit_id"] = pit
        return Reply(body=answer)

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
