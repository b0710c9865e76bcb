"""The Role and RoleBinding per allowlisted namespace that grant what the policy allows, no more.

Read from the :class:`~elk_resolver.actions.policy.ExecutionPolicy` the service runs with (its
namespaces, kubectl verbs and ``verb_kinds``, the kinds each verb may act on), so the grant follows the
policy: drop a verb from ``ELK_RESOLVER_KUBECTL_VERBS`` and its rules disappear from the next
``elk-resolver kubernetes rbac``. A verb this module has no mapping for is an error, never a
wider grant. Every rule names its resources; none grants ``*``, secrets or anything
cluster-wide.

What each verb does on the API server (kubectl and the API executor alike):

=================  =======================================================================
rollout restart    get, patch the workload (the pod template's restartedAt annotation)
rollout undo       get, patch the workload; list its ReplicaSets (deployments) or
                   ControllerRevisions (statefulsets, daemonsets) to find the previous one
scale              get the workload (the kubectl executor reads the current count with
                   ``kubectl get`` to apply the scale bounds); get, patch its ``scale``
                   subresource (update too while the policy lets ``--current-replicas`` through:
                   kubectl then writes the scale with a precondition)
delete pod         delete pods (one named pod; kubectl's default ``--wait`` would also need get
                   and watch, so the playbooks and the API executor do not wait)
=================  =======================================================================
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import yaml

from elk_resolver.actions import policy as policy_module
from elk_resolver.actions.kubernetes.objects import RESOURCES, policy_verb
from elk_resolver.actions.policy import ExecutionPolicy

ROLE_NAME = "elk-resolver-remediation"
LABELS = {"app.kubernetes.io/name": "elk-resolver", "app.kubernetes.io/component": "remediation"}

_HISTORY = {"deployment": ("apps", "replicasets"), "statefulset": ("apps", "controllerrevisions"),
            "daemonset": ("apps", "controllerrevisions")}
# What kubectl itself accepts per verb: a kind the policy names beyond these could never be
# acted on, so it is never granted.
_KUBECTL_CAN = {"rollout restart": set(_HISTORY), "rollout undo": set(_HISTORY),
                "scale": {"deployment", "statefulset", "replicaset"}, "delete pod": {"pod"}}


class RbacError(ValueError):
    """The policy cannot be turned into a grant (no namespaces, a verb without a mapping)."""


@dataclass(frozen=True)
class Grant:
    group: str
    resource: str
    verb: str


def grants(policy: ExecutionPolicy) -> list[Grant]:
    out: list[Grant] = []
    for entry in policy.kubectl_verbs:
        if not entry.strip():
            continue
        verb = policy_verb(entry)
        if verb not in policy_module.VERB_FLAGS:
            raise RbacError(
                f"the policy allows kubectl verb {entry!r}, which has no RBAC mapping; "
                f"remove it from ELK_RESOLVER_KUBECTL_VERBS (known: {', '.join(policy_module.VERB_FLAGS)})"
            )
        for kind in policy.verb_kinds(verb):
            if kind not in _KUBECTL_CAN.get(verb, ()):
                continue
            group, resource = RESOURCES[kind]
            if verb == "delete pod":
                out.append(Grant(group, resource, "delete"))
            elif verb.startswith("rollout "):
                out += [Grant(group, resource, "get"), Grant(group, resource, "patch")]
                if verb == "rollout undo":
                    out.append(Grant(*_HISTORY[kind], "list"))
            elif verb == "scale":
                out += [Grant(group, resource, "get"), Grant(group, f"{resource}/scale", "get"),
                        Grant(group, f"{resource}/scale", "patch")]
                if "--current-replicas" in policy_module.VERB_FLAGS["scale"]:
                    out.append(Grant(group, f"{resource}/scale", "update"))
    return out


_VERB_ORDER = ("get", "list", "watch", "create", "update", "patch", "delete")


def rules(policy: ExecutionPolicy) -> list[dict[str, Any]]:
    """PolicyRules: one per (group, set of verbs), resources sorted, so the output is stable."""
    by_resource: dict[tuple[str, str], set[str]] = {}
    for g in grants(policy):
        by_resource.setdefault((g.group, g.resource), set()).add(g.verb)
    by_verbs: dict[tuple[str, tuple[str, ...]], list[str]] = {}
    for (group, resource), verbs in sorted(by_resource.items()):
        ordered = tuple(v for v in _VERB_ORDER if v in verbs)
        by_verbs.setdefault((group, ordered), []).append(resource)
    return [
        {"apiGroups": [group], "resources": resources, "verbs": list(verbs)}
        for (group, verbs), resources in sorted(by_verbs.items())
    ]


def manifests(
    policy: ExecutionPolicy,
    *,
    service_account: str = "elk-resolver-execute",
    service_namespace: str = "elk-resolver",
) -> list[dict[str, Any]]:
    """A Role and a RoleBinding (to the execute stage's service account) per allowlisted namespace."""
    if not policy.kubectl_namespaces:
        raise RbacError("no namespaces are allowlisted: set ELK_RESOLVER_KUBECTL_NAMESPACES (e.g. shop,payments)")
    role_rules = rules(policy)
    if not role_rules:
        raise RbacError("the policy allows no kubectl verb, so nothing needs granting (ELK_RESOLVER_KUBECTL_VERBS)")
    verbs = ", ".join(policy_verb(v) for v in policy.kubectl_verbs if v.strip())
    docs: list[dict[str, Any]] = []
    for namespace in policy.kubectl_namespaces:
        meta = {
            "name": ROLE_NAME,
            "namespace": namespace,
            "labels": dict(LABELS),
            "annotations": {"elk-resolver/policy-verbs": verbs},
        }
        docs.append({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": meta,
                     "rules": role_rules})
        docs.append({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "RoleBinding",
            "metadata": {k: v for k, v in meta.items() if k != "annotations"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": ROLE_NAME},
            "subjects": [{"kind": "ServiceAccount", "name": service_account, "namespace": service_namespace}],
        })
    return docs


def to_yaml(docs: Iterable[dict[str, Any]]) -> str:
    return "---\n".join(yaml.safe_dump(d, sort_keys=False, default_flow_style=False) for d in docs)
