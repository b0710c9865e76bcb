"""A tiny JSON HTTP server on 127.0.0.1 for stand-in Logstash and Kibana APIs.

    async with JsonStub({"/_node/stats/pipelines": (200, {...})}) as logstash:
        settings = make_settings(logstash_url=logstash.url)
        logstash.set("/_node/stats/pipelines", 200, {...})  # change the answer mid-test
"""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from tests.support.local_http import LocalHttpServer


class JsonStub(LocalHttpServer):
    def __init__(self, routes: dict[str, tuple[int, Any]] | None = None) -> None:
        self.routes: dict[str, tuple[int, Any]] = dict(routes or {})
        self.hits: list[str] = []

    def set(self, path: str, status: int, body: Any) -> None:
        self.routes[path] = (status, body)

    async def _dispatch(self, request: web.Request) -> web.Response:
        self.hits.append(request.path)
        status, body = self.routes.get(request.path, (404, {"error": "no stub route"}))
        return web.Response(status=status, body=json.dumps(body).encode(), content_type="application/json")


def logstash_stats(*, status: str = "green", reload_error: bool = False, utilization: float = 20.0) -> dict:
    """A Logstash 8 ``/_node/stats/pipelines`` answer for one pipeline."""
    reloads: dict[str, Any] = {"successes": 1, "failures": 0, "last_error": None,
                               "last_success_timestamp": "2024-05-01T10:00:00.000Z", "last_failure_timestamp": None}
    if reload_error:
        reloads.update(failures=1, last_error={"message": "Expected one of [ \\t\\r\\n], \"#\""},
                       last_failure_timestamp="2024-05-01T11:00:00.000Z")
    return {
        "host": "logstash-0", "version": "8.15.0", "http_address": "0.0.0.0:9600", "status": status,
        "pipelines": {
            "main": {
                "events": {"in": 1200, "out": 1190, "filtered": 1195, "duration_in_millis": 5300},
                "flow": {"input_throughput": {"current": 41.2, "lifetime": 39.0},
                         "worker_utilization": {"current": utilization, "lifetime": 11.0}},
                "plugins": {"outputs": [{"id": "kafka_out", "name": "kafka", "events": {"in": 1195, "out": 1190}}]},
                "reloads": reloads,
                "queue": {"type": "memory", "events_count": 0},
            }
        },
    }


def kibana_status(level: str = "available", *, legacy: bool = False) -> dict:
    if legacy:
        return {"version": {"number": "7.10.2"}, "status": {"overall": {"state": level, "title": level.title()}}}
    return {"version": {"number": "8.15.0"}, "status": {"overall": {"level": level, "summary": f"Kibana is {level}"}}}
