"""The Kubernetes objects a policy-allowed kubectl command acts on, shared by the RBAC generator
(what to grant) and the API executor (what to call)."""

from __future__ import annotations

from dataclasses import dataclass

from elk_resolver.policy import KUBECTL_FLAGS, Verdict

# kubectl's names for a kind -> (API group, resource)
KINDS: dict[str, tuple[str, str]] = {
    "deployment": ("apps", "deployments"),
    "statefulset": ("apps", "statefulsets"),
    "daemonset": ("apps", "daemonsets"),
    "replicaset": ("apps", "replicasets"),
    "pod": ("", "pods"),
}
_ALIASES = {"deploy": "deployment", "sts": "statefulset", "ds": "daemonset", "rs": "replicaset", "po": "pod"}

# The kinds kubectl itself accepts for each verb; a policy's per-verb kinds narrow them.
VERB_KINDS: dict[str, tuple[str, ...]] = {
    "rollout restart": ("deployment", "statefulset", "daemonset"),
    "rollout undo": ("deployment", "statefulset", "daemonset"),
    "scale": ("deployment", "statefulset", "replicaset"),
    "delete pod": ("pod",),
}


def kind_name(text: str) -> str:
    """``deployments``, ``deploy``, ``Deployment`` and ``deployment.apps`` all name ``deployment``."""
    name = text.strip().lower().split(".", 1)[0]
    name = _ALIASES.get(name, name)
    if name not in KINDS and name.endswith("s") and name[:-1] in KINDS:
        name = name[:-1]
    return name


def policy_verb(entry: str) -> str:
    """A verb of ``kubectl_verbs`` in the form of :data:`VERB_KINDS` (``delete`` means ``delete pod``:
    the policy allows deleting pods only)."""
    words = entry.split()
    if words and words[0] == "delete":
        return "delete pod"
    return " ".join(words)


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
    """The command does not name exactly one object of a kind its verb acts on."""


def _int(flags: dict[str, str], *names: str) -> int | None:
    for name in names:
        if name in flags:
            try:
                return int(flags[name])
            except ValueError:
                raise NotOneObject(f"{name} needs a whole number, not {flags[name]!r}") from None
    return None


def target_of(verdict: Verdict) -> Target:
    """The object an allowed kubectl verdict acts on, read from the argv the policy built.

    Raises :class:`NotOneObject` unless the command names exactly one object by kind and name,
    without a selector: the API executor never acts on a set of objects.
    """
    if not verdict.allowed or verdict.type != "kubectl" or not verdict.argv or not verdict.action:
        raise ValueError(f"not an allowed kubectl verdict: {verdict.reason}")
    positionals: list[str] = []
    flags: dict[str, str] = {}
    args = verdict.argv[1:]
    i = 0
    while i < len(args):
        token = args[i]
        i += 1
        if not token.startswith("-"):
            positionals.append(token)
            continue
        name, has_value, value = token.partition("=")
        if not has_value and KUBECTL_FLAGS.get(name, name in ("--kubeconfig", "--context")):
            value, i = (args[i] if i < len(args) else ""), i + 1
        flags[name] = value
    if "-l" in flags or "--selector" in flags:
        raise NotOneObject("a selector names a set of objects; name one object (kind/name)")
    verb = policy_verb(" ".join(positionals[:2]) if positionals[:1] == ["rollout"] else positionals[0])
    resources = positionals[2:] if positionals[:1] == ["rollout"] else positionals[1:]
    objects: list[tuple[str, str]] = []
    if resources and "/" not in resources[0]:
        objects = [(resources[0], name) for name in resources[1:]]
    else:
        objects = [tuple(r.split("/", 1)) for r in resources]  # type: ignore[misc]
    if len(objects) != 1:
        raise NotOneObject(f"the command names {len(objects)} objects; the API executor acts on exactly one")
    kind, name = kind_name(objects[0][0]), objects[0][1]
    allowed = VERB_KINDS.get(verb, ())
    if kind not in allowed:
        raise NotOneObject(f"{verb} acts on {', '.join(allowed) or 'nothing'}, not {objects[0][0]!r}")
    return Target(
        verb=verb, kind=kind, name=name, namespace=verdict.action["namespace"],
        replicas=_int(flags, "--replicas"), current_replicas=_int(flags, "--current-replicas"),
        to_revision=_int(flags, "--to-revision"), grace_period=_int(flags, "--grace-period"),
    )  # fmt: skip
