"""Allowlisted binaries (off unless shell_enabled): despite the name, no shell is involved;
the policy tokenised the line into an argv and this runs it as a process."""

from __future__ import annotations

from collections.abc import Mapping

from elk_resolver.executors.process import run_argv
from elk_resolver.executors.result import CommandResult
from elk_resolver.policy import Command, Verdict


async def run(
    cmd: Command,
    verdict: Verdict,
    *,
    timeout_s: float,
    output_limit: int,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    if not verdict.allowed or verdict.type != "shell" or not verdict.argv:
        raise ValueError(f"not an allowed shell verdict: {verdict.reason}")
    return await run_argv(cmd, verdict.argv, timeout_s=timeout_s, output_limit=output_limit, env=env)
