"""kubectl and (opt-in) allowlisted binaries: the argv the policy built, run as a child
process, never through a shell, bounded in time and output. Both command types differ only
in what the policy lets through, so one executor serves them."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Mapping

from elk_resolver.actions.executors.result import CAPTURE_MARGIN, CommandResult, bound_output
from elk_resolver.actions.policy import Command, Verdict

_CHUNK = 65536


def _kill_group(proc: asyncio.subprocess.Process) -> None:
    # The child leads its own session (start_new_session=True), so its pid is the group id and
    # killing the group also reaches grandchildren that would otherwise keep the pipe open.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()


async def run_argv(
    cmd: Command,
    argv: list[str],
    *,
    timeout_s: float,
    output_limit: int,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    started = time.monotonic()
    captured = bytearray()
    total = 0

    def result(status: str, exit_code: int | None, extra: str = "") -> CommandResult:
        output = bound_output(bytes(captured), output_limit, total=total)
        return CommandResult(
            type=cmd.type,
            command=cmd.command,
            status=status,  # type: ignore[arg-type]
            exit_code=exit_code,
            output=output + extra,
            duration_s=time.monotonic() - started,
            critical=cmd.critical,
        )

    try:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,  # one stream keeps stdout and stderr interleaved
            env=dict(env) if env is not None else None,
            start_new_session=True,
        )
    except OSError as exc:  # not found, not executable
        return CommandResult(
            type=cmd.type,
            command=cmd.command,
            status="failed",
            exit_code=None,
            output=f"cannot start {argv[0]}: {exc.strerror or exc}",
            duration_s=time.monotonic() - started,
            critical=cmd.critical,
        )

    async def drain() -> int:
        nonlocal total
        assert proc.stdout is not None
        while chunk := await proc.stdout.read(_CHUNK):
            total += len(chunk)
            room = output_limit + CAPTURE_MARGIN - len(captured)
            if room > 0:
                captured.extend(chunk[:room])
        return await proc.wait()

    try:
        async with asyncio.timeout(timeout_s):
            exit_code = await drain()
    except TimeoutError:
        _kill_group(proc)
        await proc.wait()
        return result("timeout", proc.returncode, f"\n[killed after {timeout_s:g}s timeout]")
    finally:
        if proc.returncode is None:  # cancelled: never leave the child running
            _kill_group(proc)
            with contextlib.suppress(ProcessLookupError):
                await asyncio.shield(proc.wait())
    return result("success" if exit_code == 0 else "failed", exit_code)


async def run(
    cmd: Command,
    verdict: Verdict,
    *,
    timeout_s: float,
    output_limit: int,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    if not verdict.allowed or verdict.type != cmd.type or not verdict.argv:
        raise ValueError(f"not an allowed {cmd.type} verdict: {verdict.reason}")
    return await run_argv(cmd, verdict.argv, timeout_s=timeout_s, output_limit=output_limit, env=env)
