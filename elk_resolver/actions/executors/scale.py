"""``kubectl scale`` bounded by the current replica count, read right before the change.

The policy can only judge ``--replicas`` alone (never 0 unless allowed, never above the
ceiling). How far one command may move a workload depends on how many replicas it has now, so
the executor reads that with ``kubectl get`` (same binary, identity and scrubbed environment)
and judges :meth:`~elk_resolver.actions.policy.ScaleBounds.problem`. The count it read goes on the
command as ``--current-replicas``: kubectl then refuses the change if the count moved in
between, so the bound cannot be raced.
"""

from __future__ import annotations

from collections.abc import Mapping

from elk_resolver.actions.executors import process
from elk_resolver.actions.policy import Command, ExecutionPolicy, Verdict

READ_LIMIT = 256


async def current_replicas(
    cmd: Command, verdict: Verdict, policy: ExecutionPolicy, *, timeout_s: float, env: Mapping[str, str]
) -> tuple[int | None, str]:
    """(count, "") or (None, why it could not be read)."""
    action = verdict.action or {}
    target = f"{action['kind']}/{action['name']}"
    argv = [
        policy.kubectl_path, "get", target, "-n", action["namespace"],
        "-o", "jsonpath={.spec.replicas}", *policy.kubectl_identity_args(),
    ]  # fmt: skip
    read = await process.run_argv(cmd, argv, timeout_s=timeout_s, output_limit=READ_LIMIT, env=env)
    text = read.output.strip()
    if read.status != "success" or not text.isdigit():
        return None, f"cannot read the current replica count of {target} ({read.status}: {text[:200]!r})"
    return int(text), ""


async def bounded_argv(
    cmd: Command, verdict: Verdict, policy: ExecutionPolicy, *, timeout_s: float, env: Mapping[str, str]
) -> tuple[list[str] | None, str]:
    """(argv to run, "") or (None, the refusal reason)."""
    action = verdict.action or {}
    current, problem = await current_replicas(cmd, verdict, policy, timeout_s=timeout_s, env=env)
    if current is None:
        return None, problem
    expected = action.get("current_replicas")
    if expected is not None and expected != current:
        return None, f"the command expects {expected} current replicas, {action['kind']}/{action['name']} has {current}"
    problem = policy.scale_bounds.problem(current, action["replicas"])
    if problem:
        return None, problem
    argv = list(verdict.argv or ())
    if expected is None:
        argv.append(f"--current-replicas={current}")
    return argv, ""
