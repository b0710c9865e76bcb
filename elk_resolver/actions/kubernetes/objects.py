"""The Kubernetes objects a policy-allowed kubectl command acts on, for the RBAC generator (what
to grant) and the API executor (what to call). Which verbs, kinds and flags are allowed is the
policy's (elk_resolver.actions.policy); this module only knows how the API names those kinds."""

from __future__ import annotations

from dataclasses import dataclass

from elk_resolver.actions.policy import Verdict

# the policy's canonical kinds -> (API group, resource)
RESOURCES: dict[str, tuple[str, str]] = {
    "deployment": ("apps", "deployments"),
    "statefulset": ("apps", "statefulsets"),
    "daemonset": ("apps", "daemonsets"),
    "replicaset": ("apps", "replicasets"),
    "pod": ("", "pods"),
}


def policy_verb(entry: str) -> str:
    """An entry of ``kubectl_verbs`` as the policy names the verb (``delete`` has always meant
    ``delete pod``)."""
    words = entry.split()
    return "delete pod" if words == ["delete"] else " ".join(words)


@dataclass(frozen=True)
class Target:
    """One named object and what to do to it."""

    verb: str
    kind: str
    name: str
    namespace: str
    replicas: int | None = None
    current_replicas: int | None = None
    to_revision: int | None = None
    grace_period: int | None = None

    def __str__(self) -> str:
        return f"{self.kind}/{self.name} -n {self.namespace}"


class NotOneObject(ValueError):
    """The command does not name exactly one object the API executor can act on."""


def _flag(argv: list[str], name: str) -> int | None:
    """The value of a numeric flag the policy has already validated (``--f=N`` or ``--f N``)."""
    for i, token in enumerate(argv):
        if token == name and i + 1 < len(argv):
            return int(argv[i + 1])
        if token.startswith(name + "="):
            return int(token.partition("=")[2])
    return None


def target_of(verdict: Verdict) -> Target:
    """The one object an allowed kubectl verdict names: the policy binds kind, name and namespace
    (and refuses selectors, lists and missing names), so this only reads them."""
    if not verdict.allowed or verdict.type != "kubectl" or not verdict.argv or not verdict.action:
        raise ValueError(f"not an allowed kubectl verdict: {verdict.reason}")
    action = verdict.action
    if not action.get("kind") or not action.get("name"):
        raise NotOneObject("the command names no single object (kind/name)")
    if action["kind"] not in RESOURCES:
        raise NotOneObject(f"no API mapping for kind {action['kind']!r}")
    return Target(
        verb=action["verb"], kind=action["kind"], name=action["name"], namespace=action["namespace"],
        replicas=action.get("replicas"), current_replicas=action.get("current_replicas"),
        to_revision=_flag(verdict.argv, "--to-revision"), grace_period=_flag(verdict.argv, "--grace-period"),
    )  # fmt: skip
