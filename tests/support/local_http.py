"""The base of the stand-in HTTP servers (Elasticsearch, Logstash/Kibana, the Kubernetes API):
every request goes to the subclass's ``_dispatch``, on 127.0.0.1 at a free port (``self.url``)."""

from __future__ import annotations

from typing import Self

from aiohttp import web


class LocalHttpServer:
    url = ""
    _runner: web.AppRunner | None = None

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.url = f"http://127.0.0.1:{self._runner.addresses[0][1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
