"""Webhook calls to allowlisted URLs. Redirects are never followed: a 3xx could point anywhere."""

from __future__ import annotations

import asyncio
import time

import httpx

from elk_resolver.actions.executors.result import CAPTURE_MARGIN, CommandResult, bound_output
from elk_resolver.actions.policy import Command, Verdict


async def run(
    cmd: Command,
    verdict: Verdict,
    *,
    timeout_s: float,
    output_limit: int,
    client: httpx.AsyncClient | None = None,
) -> CommandResult:
    if not verdict.allowed or verdict.type != "http" or not verdict.action:
        raise ValueError(f"not an allowed http verdict: {verdict.reason}")
    action = verdict.action
    started = time.monotonic()
    captured = bytearray()
    total = 0

    def result(status: str, code: int | None, prefix: str) -> CommandResult:
        from elk_resolver.events.masking import mask_text

        body = bound_output(bytes(captured), output_limit, total=total)
        prefix = mask_text(prefix)  # an error message may quote the URL and its query
        return CommandResult(
            type="http",
            command=cmd.command,
            status=status,  # type: ignore[arg-type]
            exit_code=code,
            output=prefix + body,
            duration_s=time.monotonic() - started,
            critical=cmd.critical,
        )

    owned = client is None
    if client is None:
        client = httpx.AsyncClient(timeout=timeout_s, follow_redirects=False)
    code: int | None = None
    try:
        # httpx's timeout is per operation; this bounds the whole call, body included.
        async with asyncio.timeout(timeout_s):
            request = client.build_request(
                action["method"],
                action["url"],
                json=action.get("body"),
                timeout=timeout_s,
            )
            response = await client.send(request, stream=True, follow_redirects=False)
            code = response.status_code
            try:
                async for chunk in response.aiter_bytes():
                    total += len(chunk)
                    room = output_limit + CAPTURE_MARGIN - len(captured)
                    if room > 0:
                        captured.extend(chunk[:room])
            finally:
                await response.aclose()
    except (TimeoutError, httpx.TimeoutException):
        return result("timeout", code, f"HTTP timeout after {timeout_s:g}s\n")
    except httpx.HTTPError as exc:
        return result("failed", code, f"HTTP error: {type(exc).__name__}: {exc}\n")
    finally:
        if owned:
            await client.aclose()
    status = "success" if 200 <= code < 300 else "failed"
    return result(status, code, f"HTTP {code}\n")

