"""Run solution commands under the execution policy: ``process`` (kubectl, shell), ``http``
and ``elasticsearch`` executors.

Child processes get a scrubbed environment (:func:`~elk_resolver.actions.policy.child_environment`), and
``kubectl scale`` is bounded by the replica count read right before it (:mod:`.scale`).

:func:`run_commands` evaluates every command again right before it runs: the stored ``safe``
flag is never trusted, so a row edited after analysis, or a policy narrowed since, still wins.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from elk_resolver.actions.executors.result import CommandResult, Status, bound_text
from elk_resolver.actions.policy import Command, ExecutionPolicy, Verdict, child_environment, evaluate

if TYPE_CHECKING:
    import httpx
    from elasticsearch import AsyncElasticsearch

__all__ = ["CommandResult", "Status", "run_command", "run_commands"]


def _not_run(raw: Command | Mapping[str, Any], verdict: Verdict, *, dry_run: bool, limit: int) -> CommandResult:
    command = raw.command if isinstance(raw, Command) else str(raw.get("command", ""))
    type_ = raw.type if isinstance(raw, Command) else str(raw.get("type", ""))
    critical = raw.critical if isinstance(raw, Command) else raw.get("critical") is True
    if verdict.allowed:  # dry run
        what = " ".join(verdict.argv) if verdict.argv else repr(verdict.action)
        return CommandResult(
            type=type_, command=command, status="success", exit_code=None,
            output=bound_text(f"dry-run: would run {what}", limit), duration_s=0.0,
            critical=critical, dry_run=True, reason=verdict.reason,
        )  # fmt: skip
    return CommandResult(
        type=type_, command=command, status="failed", exit_code=None,
        output=bound_text(f"refused by policy: {verdict.reason}", limit), duration_s=0.0,
        critical=critical, refused=True, dry_run=dry_run, reason=verdict.reason,
    )  # fmt: skip


async def run_command(
    cmd: Command,
    verdict: Verdict,
    *,
    policy: ExecutionPolicy,
    elasticsearch: AsyncElasticsearch | None = None,
    http_client: httpx.AsyncClient | None = None,
    env: Mapping[str, str] | None = None,
) -> CommandResult:
    """Run one command the policy has allowed (``verdict`` from :func:`evaluate`)."""
    timeout_s = verdict.timeout_s or policy.default_timeout_s
    limit = policy.output_limit_bytes
    if cmd.type == "kubectl" and policy.kubernetes_executor == "api":
        from elk_resolver.actions.executors import kubernetes_api

        return await kubernetes_api.run(cmd, verdict, policy=policy, timeout_s=timeout_s, output_limit=limit)
    if cmd.type in ("kubectl", "shell"):
        from elk_resolver.actions.executors import process

        # Never the service's own environment: its secrets stay in this process.
        child_env = child_environment(os.environ if env is None else env, policy.child_env_allowlist)
        if verdict.type == "kubectl" and verdict.action and verdict.action.get("verb") == "scale":
            from elk_resolver.actions.executors import scale

            argv, refusal = await scale.bounded_argv(cmd, verdict, policy, timeout_s=timeout_s, env=child_env)
            if argv is None:
                return _not_run(cmd, Verdict(allowed=False, reason=refusal, type="kubectl"), dry_run=False, limit=limit)
            verdict = replace(verdict, argv=argv)
        return await process.run(cmd, verdict, timeout_s=timeout_s, output_limit=limit, env=child_env)
    if cmd.type == "http":
        from elk_resolver.actions.executors import http

        return await http.run(cmd, verdict, timeout_s=timeout_s, output_limit=limit, client=http_client)
    if cmd.type == "elasticsearch":
        from elk_resolver.actions.executors import elasticsearch as es

        return await es.run(cmd, verdict, timeout_s=timeout_s, output_limit=limit, client=elasticsearch)
    raise ValueError(f"unknown command type {cmd.type!r}")


async def run_commands(
    commands: Iterable[Command | Mapping[str, Any]],
    policy: ExecutionPolicy,
    *,
    dry_run: bool,
    elasticsearch: AsyncElasticsearch | None = None,
    http_client: httpx.AsyncClient | None = None,
    env: Mapping[str, str] | None = None,
) -> list[CommandResult]:
    """Run ``commands`` in order; return one result per command attempted.

    A refused command is a ``failed`` result with ``refused=True`` and is never run. The first
    ``critical`` command that fails, times out or is refused stops the run: the commands after
    it get no result. With ``dry_run`` nothing runs; every command is evaluated and reported
    (``dry_run=True``), and a refused critical command still stops the list, as it would live.
    """
    results: list[CommandResult] = []
    for raw in commands:
        verdict = evaluate(dict(raw) if isinstance(raw, Mapping) else raw, policy)
        if not verdict.allowed or dry_run:
            result = _not_run(raw, verdict, dry_run=dry_run, limit=policy.output_limit_bytes)
        else:
            cmd = raw if isinstance(raw, Command) else Command.model_validate(dict(raw))
            started = time.monotonic()
            try:
                result = await run_command(
                    cmd, verdict, policy=policy, elasticsearch=elasticsearch, http_client=http_client, env=env
                )
            except ValueError as exc:  # an executor refused the verdict: a bug, but never run it
                result = CommandResult(
                    type=cmd.type, command=cmd.command, status="failed", exit_code=None,
                    output=str(exc), duration_s=time.monotonic() - started, critical=cmd.critical,
                )  # fmt: skip
        results.append(result)
        if result.critical and result.status != "success":
            break
    return results
