"""A real OpenAI-compatible chat-completions server for tests, scripted per test.

    async with LLMStub() as stub:
        stub.script(Reply(content='{"solution_type": ...}'), Reply(status=500))
        client = LLMClient(base_url=stub.base_url, ...)
        ...
        assert len(stub.requests) == 2

Each request takes the next scripted reply; when the script is used up, ``default`` answers
(an HTTP 500 unless set), so a test that calls more often than it expects sees it fail.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    content: str | None = None  # the assistant message; None with status 200 sends `body`
    status: int = 200
    model: str | None = "stub-model-1"
    delay_s: float = 0.0
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None  # raw JSON body for non-200 replies (or 200 without content)


@dataclass
class SeenRequest:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]
    at: float

    @property
    def prompt(self) -> str:
        return "\n".join(str(m.get("content", "")) for m in self.body.get("messages", []))


def completion(content: str, model: str | None = "stub-model-1") -> dict[str, Any]:
    body: dict[str, Any] = {
        "id": "chatcmpl-stub",
        "object": "chat.completion",
        "created": int(time.time()),
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
    }
    if model is not None:
        body["model"] = model
    return body


class LLMStub:
    def __init__(self, default: Reply | None = None) -> None:
        self.requests: list[SeenRequest] = []
        self.default = default or Reply(status=500, body={"error": {"message": "script exhausted"}})
        self._script: deque[Reply] = deque()
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def script(self, *replies: Reply) -> None:
        self._script.extend(replies)

    async def _chat(self, request: web.Request) -> web.StreamResponse:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = {"_unparseable": await request.text()}
        self.requests.append(SeenRequest(request.path, dict(request.headers), body, time.monotonic()))
        reply = self._script.popleft() if self._script else self.default
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        if reply.status == 200 and reply.content is not None:
            payload: Any = completion(reply.content, reply.model)
        else:
            payload = reply.body if reply.body is not None else {"error": {"message": f"status {reply.status}"}}
        return web.json_response(payload, status=reply.status, headers=reply.headers)

    async def __aenter__(self) -> LLMStub:
        app = web.Application()
        app.router.add_post("/v1/chat/completions", self._chat)
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self.base_url = f"http://127.0.0.1:{port}/v1"
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
