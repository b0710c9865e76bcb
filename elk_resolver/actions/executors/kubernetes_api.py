"""The built-in kubectl actions through the Kubernetes API (lightkube), so the image needs no
kubectl binary. The policy evaluates the command exactly as for kubectl; this executor then
acts on the one object the allowed command names, and refuses a command that names none or
several (a selector, a kind without a name):

    rollout restart  PATCH the workload: spec.template.metadata.annotations
                     kubectl.kubernetes.io/restartedAt = now (what kubectl does)
    rollout undo     deployments: GET it, list its ReplicaSets, PATCH the template back to the
                     previous revision's (or --to-revision's)
    scale            GET the scale subresource, refuse a move outside the policy's bounds from
                     that count (and a --current-replicas that differs), PATCH it with its
                     resourceVersion, so a change in between fails instead of racing
    delete pod       DELETE the one named pod

Credentials: the configured kubeconfig and context (ELK_RESOLVER_KUBECTL_KUBECONFIG,
ELK_RESOLVER_KUBECTL_CONTEXT), else the pod's in-cluster service account; never a default found
lying around (~/.kube/config), so the identity is always the one the operator chose.
"""

from __future__ import annotations

import asyncio
import os
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from elk_resolver.actions.executors.result import CommandResult, bound_text
from elk_resolver.actions.kubernetes.objects import NotOneObject, Target, target_of
from elk_resolver.actions.policy import Command, ExecutionPolicy, ScaleBounds, Verdict

if TYPE_CHECKING:
    from lightkube import AsyncClient

SERVICE_ACCOUNT = Path("/var/run/secrets/kubernetes.io/serviceaccount")
RESTARTED_AT = "kubectl.kubernetes.io/restartedAt"
REVISION = "deployment.kubernetes.io/revision"


class NoIdentity(RuntimeError):
    """Neither a configured kubeconfig/context nor an in-cluster service account."""


def make_client(policy: ExecutionPolicy, *, timeout_s: float, service_account: Path = SERVICE_ACCOUNT) -> AsyncClient:
    import httpx2
    from lightkube import AsyncClient, KubeConfig

    if policy.kubectl_kubeconfig or policy.kubectl_context:
        # a context alone names one in the kubeconfig kubectl would read (never the service account)
        default = (os.environ.get("KUBECONFIG") or "").split(os.pathsep)[0] or Path.home() / ".kube" / "config"
        config = KubeConfig.from_file(policy.kubectl_kubeconfig or default)
        single = config.get(context_name=policy.kubectl_context) if policy.kubectl_context else config.get()
        if single is None:
            raise NoIdentity(f"context {policy.kubectl_context!r} is not in the kubeconfig")
    elif (service_account / "token").exists():
        single = KubeConfig.from_service_account(service_account).get()
    else:
        raise NoIdentity("no kubeconfig or context is configured (ELK_RESOLVER_KUBECTL_KUBECONFIG, "
                         "ELK_RESOLVER_KUBECTL_CONTEXT) and there is no in-cluster service account")
    return AsyncClient(single, timeout=httpx2.Timeout(timeout_s), trust_env=False, field_manager="elk-resolver")


def _resource(kind: str) -> Any:
    from lightkube.resources.apps_v1 import DaemonSet, Deployment, ReplicaSet, StatefulSet
    from lightkube.resources.core_v1 import Pod

    return {"deployment": Deployment, "statefulset": StatefulSet, "daemonset": DaemonSet,
            "replicaset": ReplicaSet, "pod": Pod}[kind]


async def _restart(client: AsyncClient, t: Target) -> str:
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    body = {"spec": {"template": {"metadata": {"annotations": {RESTARTED_AT: now}}}}}
    await client.patch(_resource(t.kind), t.name, body, namespace=t.namespace)
    return f"{t.kind}.apps/{t.name} restarted"


async def _scale(client: AsyncClient, t: Target, bounds: ScaleBounds | None = None) -> str:
    from lightkube.types import PatchType

    if t.replicas is None:
        raise NotOneObject("scale needs --replicas")
    scale = _resource(t.kind).Scale
    # Always read the current count: the policy's bounds are relative to it, and its
    # resourceVersion makes the write fail if the count moved in between.
    current = await client.get(scale, t.name, namespace=t.namespace)
    if t.current_replicas is not None and current.spec.replicas != t.current_replicas:
        raise Precondition(f"expected {t.current_replicas} replicas, {t} has {current.spec.replicas}")
    problem = bounds.problem(current.spec.replicas or 0, t.replicas) if bounds is not None else None
    if problem:
        raise Precondition(f"refused by policy: {problem}")
    body: dict[str, Any] = {"spec": {"replicas": t.replicas},
                            "metadata": {"resourceVersion": current.metadata.resourceVersion}}
    await client.patch(scale, t.name, body, namespace=t.namespace, patch_type=PatchType.MERGE)
    return f"{t.kind}.apps/{t.name} scaled"


async def _undo(client: AsyncClient, t: Target) -> str:
    from lightkube.resources.apps_v1 import Deployment, ReplicaSet
    from lightkube.types import PatchType

    if t.kind != "deployment":
        raise NotOneObject(f"rollout undo of a {t.kind} needs the kubectl executor (ELK_RESOLVER_KUBERNETES_EXECUTOR=kubectl)")
    deployment = await client.get(Deployment, t.name, namespace=t.namespace)
    selector = deployment.spec.selector
    if selector.matchExpressions or not selector.matchLabels:
        raise NotOneObject(f"{t} selects its pods with expressions; roll it back with kubectl")
    owned = [
        rs async for rs in client.list(ReplicaSet, namespace=t.namespace, labels=selector.matchLabels)
        if any(o.uid == deployment.metadata.uid and o.controller for o in rs.metadata.ownerReferences or [])
    ]

    def revision(obj: Any) -> int:
        return int((obj.metadata.annotations or {}).get(REVISION, "0") or 0)

    current = revision(deployment)
    if t.to_revision:
        chosen = [rs for rs in owned if revision(rs) == t.to_revision]
    else:
        older = [rs for rs in owned if revision(rs) < current] if current else owned[:-1]
        chosen = sorted(older, key=revision)[-1:]
    if not chosen:
        raise Precondition(f"{t} has no {'revision ' + str(t.to_revision) if t.to_revision else 'previous revision'}")
    template = chosen[0].spec.template.to_dict()
    template.get("metadata", {}).get("labels", {}).pop("pod-template-hash", None)
    patch = [{"op": "replace", "path": "/spec/template", "value": template}]
    await client.patch(Deployment, t.name, patch, namespace=t.namespace, patch_type=PatchType.JSON)
    return f"deployment.apps/{t.name} rolled back to revision {revision(chosen[0])}"


async def _delete(client: AsyncClient, t: Target) -> str:
    await client.delete(_resource("pod"), t.name, namespace=t.namespace, grace_period=t.grace_period)
    return f'pod "{t.name}" deleted'


ACTIONS = {"rollout restart": _restart, "rollout undo": _undo, "scale": _scale, "delete pod": _delete}


class Precondition(RuntimeError):
    """The object is not in the state the command expects; nothing was changed."""


async def run(
    cmd: Command,
    verdict: Verdict,
    *,
    policy: ExecutionPolicy,
    timeout_s: float,
    output_limit: int,
    client: AsyncClient | None = None,
) -> CommandResult:
    import httpx2
    from lightkube import ApiError

    started = time.monotonic()

    def result(status: str, code: int | None, text: str) -> CommandResult:
        return CommandResult(
            type="kubectl", command=cmd.command, status=status,  # type: ignore[arg-type]
            exit_code=code, output=bound_text(text, output_limit),
            duration_s=time.monotonic() - started, critical=cmd.critical,
        )  # fmt: skip

    try:
        target = target_of(verdict)
    except NotOneObject as exc:
        return result("failed", None, f"refused by the Kubernetes API executor: {exc}")
    owned = client is None
    try:
        if client is None:
            client = make_client(policy, timeout_s=timeout_s)
    except (NoIdentity, OSError, ValueError) as exc:
        return result("failed", None, f"Kubernetes API: {exc}")
    try:
        async with asyncio.timeout(timeout_s):
            if target.verb == "scale":
                text = await _scale(client, target, policy.scale_bounds)
            else:
                text = await ACTIONS[target.verb](client, target)
    except TimeoutError:
        return result("timeout", None, f"{target}: no answer from the Kubernetes API within {timeout_s:g}s")
    except ApiError as exc:
        code = exc.status.code
        return result("failed", code, f"{target}: HTTP {code} {exc.status.reason}: {exc.status.message}")
    except (NotOneObject, Precondition) as exc:
        return result("failed", None, f"{target}: {exc}")
    except httpx2.HTTPError as exc:
        return result("failed", None, f"{target}: {type(exc).__name__}: {exc}")
    finally:
        if owned and client is not None:
            await client.close()
    return result("success", 200, text)
