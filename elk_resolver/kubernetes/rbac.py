"""The Role and RoleBinding per allowlisted namespace that grant what the policy allows, no more.

Read from the :class:`~elk_resolver.policy.ExecutionPolicy` the service runs with (its
namespaces, kubectl verbs and the kinds each verb may act on), so the grant follows the
policy: drop a verb from ``ELK_RESOLVER_KUBECTL_VERBS`` and its rules disappear from the next
``elk-resolver kubernetes rbac``. A verb this module has no mapping for is an error, never a
wider grant. Every rule names its resources; none grants ``*``, secrets or anything
cluster-wide.

What each verb does on the API server (kubectl and the API executor alike):

=================  =======================================================================
rollout restart    get, patch the workload (the pod template's restartedAt annotation)
rollout undo       get, patch the workload; list its ReplicaSets (deployments) or
                   ControllerRevisions (statefulsets, daemonsets) to find the previous one
scale              get the workload (kubectl reads it first); get, patch its ``scale``
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

from elk_resolver import policy as policy_module
from elk_resolver.kubernetes.objects import KINDS, VERB_KINDS, kind_name, policy_verb
from elk_resolver.policy import ExecutionPolicy

ROLE_NAME = "elk-resolver-remediation"
LABELS = {"app.kubernetes.io/name": "elk-resolver", "app.kubernetes.io/component": "remediation"}

_HISTORY = {"deployment": ("apps", "replicasets"), "statefulset": ("apps", "controllerrevisions"),
            "daemonset": ("apps", "controllerrevisions")}


class RbacError(ValueError):
    """The policy cannot be turned into a grant (no namespaces, a verb without a mapping)."""


@dataclass(frozen=True)
class Grant:
    group: str
    resource: str
    verb: str


def verb_kinds(policy: ExecutionPolicy, verb: str) -> tuple[str, ...]:
    """The kinds the policy lets ``verb`` act on: its per-verb allowlist where it has one,
    otherwise every kind kubectl accepts for the verb."""
    allowed = VERB_KINDS[verb]
    per_verb = getattr(policy, "kubectl_kinds", None)
    if isinstance(per_verb, dict):
        named = per_verb.get(verb)
        if named is None:
            return ()
        return tuple(k for k in allowed if k in {kind_name(n) for n in named})
    return allowed


def grants(policy: ExecutionPolicy) -> list[Grant]:
    out: list[Grant] = []
    for entry in policy.kubectl_verbs:
        if not entry.strip():
            continue
        verb = policy_verb(entry)
        if verb not in VERB_KINDS:
            raise RbacError(
                f"the policy allows kubectl verb {entry!r}, which has no RBAC mapping; "
                f"remove it from ELK_RESOLVER_KUBECTL_VERBS (known: {', '.join(VERB_KINDS)})"
            )
        for kind in verb_kinds(policy, verb):
            group, resource = KINDS[kind]
            if verb == "delete pod":
                out.append(Grant(group, resource, "delete"))
            elif verb.startswith("rollout "):
                out += [Grant(group, resource, "get"), Grant(group, resource, "patch")]
                if verb == "rollout undo":
                    out.append(Grant(*_HISTORY[kind], "list"))
            elif verb == "scale":
                out += [Grant(group, resource, "get"), Grant(group, f"{resource}/scale", "get"),
                        Grant(group, f"{resource}/scale", "patch")]
                if "--current-replicas" in policy_module.KUBECTL_FLAGS:
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
