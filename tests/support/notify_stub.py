"""A local HTTP server standing in for notification endpoints (Slack, Teams, a webhook ...).

    async with NotifyStub() as hooks:
        settings = make_settings(notify_webhook_url=hooks.url + "/hook", notify_urls=[hooks.apprise_json("/chat")])
        ...
        assert len(hooks.received("/hook")) == 1

``fail_first`` answers 500 to that many requests before answering 200 (retries).
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiohttp import web


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> dict:
        return orjson.loads(self.body)


class NotifyStub:
    def __init__(self, *, fail_first: int = 0) -> None:
        self.fail_first = fail_first
        self.requests: list[Received] = []
        self.url = ""
        self.port = 0
        self._runner: web.AppRunner | None = None

    def apprise_json(self, path: str) -> str:
        """apprise's generic JSON channel pointing at this stub."""
        return f"json://127.0.0.1:{self.port}{path}"

    def received(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    async def _handle(self, request: web.Request) -> web.Response:
        self.requests.append(Received(request.path, dict(request.headers), await request.read()))
        if self.fail_first > 0:
            self.fail_first -= 1
            return web.Response(status=500, text="down for a moment")
        return web.Response(status=200, text="ok")

    async def __aenter__(self) -> NotifyStub:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", 0).start()
        self.port = self._runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
