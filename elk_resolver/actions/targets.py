"""The one object an action touches, bound from the event being remediated.

Every remediation acts on exactly one object, named by a :class:`Target`: a Kubernetes object
(kind, name, namespace), an Elasticsearch index or the cluster, or an HTTP URL. Its ``key``
identifies the object across errors, solutions and executor copies: cooldowns, hourly caps,
the fleet budget, the systemic hold and verification are all counted per key.

Where the name comes from (:func:`workload_of`): the event's own structured fields, in this
order: ``kubernetes.deployment.name``; ``kubernetes.pod.name`` resolved to its owner the way
Kubernetes names pods; nothing else. Pod names:

* Deployment pod: ``<deployment>-<pod-template-hash>-<suffix>``; the hash is 6-10 characters
  and the suffix 5, both from ``bcdfghjklmnpqrstvwxz2456789`` (Kubernetes' SafeEncodeString
  alphabet: no vowels, no 0/1/3), so a hash may hold no digit at all.
* CronJob pod: ``<cronjob>-<scheduled time in unix minutes>-<suffix>``: the middle part is all
  digits (8 or more; today's minutes are 8 digits), which a pod-template hash practically never
  is.
* Job pod: ``<job>-<suffix>``.
* StatefulSet pod: ``<statefulset>-<ordinal>``.

A pod name that fits none of these is a bare pod: its owner is unknown and nothing is bound.
Names are checked against Kubernetes' DNS-1123 rules before they are used.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from elk_resolver.actions.policy import (
    DNS1123_LABEL,
    DNS1123_SUBDOMAIN,
    SCOPE_FLAGS,
    flag_takes_value,
    kind_of,
    split_flag,
)

__all__ = ["Target", "Workload", "dns1123_problem", "subject_key", "subject_of", "target_of_command", "workload_of"]

_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"
_NAME = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?"
_DEPLOYMENT_POD = re.compile(rf"^(?P<name>{_NAME})-[{_ALPHABET}]{{6,10}}-[{_ALPHABET}]{{5}}$")
_CRONJOB_POD = re.compile(rf"^(?P<name>{_NAME})-(?P<minutes>[0-9]{{8,}})-[{_ALPHABET}]{{5}}$")
_JOB_POD = re.compile(rf"^(?P<name>{_NAME})-[{_ALPHABET}]{{5}}$")
_STATEFULSET_POD = re.compile(rf"^(?P<name>{_NAME})-(?P<ordinal>0|[1-9][0-9]{{0,5}})$")

# kinds a target may name beyond those the policy knows (kind_of): commands on them are refused
# by the policy, but the object is still named in what is recorded
_BATCH_KINDS = {"job": "job", "jobs": "job", "cronjob": "cronjob", "cronjobs": "cronjob", "cj": "cronjob"}
_VERBS = (("rollout", "restart"), ("rollout", "undo"), ("scale",), ("delete",))


def dns1123_problem(value: str | None, *, label: bool = False) -> str | None:
    """Why ``value`` is not a Kubernetes name (a label for namespaces); None when it is."""
    if not value:
        return "empty name"
    rx = DNS1123_LABEL if label else DNS1123_SUBDOMAIN
    return None if len(value) <= 253 and rx.match(value) else f"{value[:80]!r} is not a Kubernetes (DNS-1123) name"


@dataclass(frozen=True, slots=True)
class Workload:
    kind: str
    name: str
    how: str
    """Which field or pod-name rule bound it (for the decision log)."""


@lru_cache(maxsize=65_536)
def owner_of_pod(pod: str) -> Workload | None:
    """The workload that owns ``pod``, read from how Kubernetes names pods (module doc)."""
    if not pod or dns1123_problem(pod):
        return None
    if m := _CRONJOB_POD.match(pod):
        return Workload("cronjob", m.group("name"), "pod name <cronjob>-<minutes>-<suffix>")
    if m := _DEPLOYMENT_POD.match(pod):
        return Workload("deployment", m.group("name"), "pod name <deployment>-<hash>-<suffix>")
    if m := _STATEFULSET_POD.match(pod):
        return Workload("statefulset", m.group("name"), "pod name <statefulset>-<ordinal>")
    if m := _JOB_POD.match(pod):
        return Workload("job", m.group("name"), "pod name <job>-<suffix>")
    return None


def workload_of(context: Mapping[str, Any]) -> Workload | None:
    """The workload the event came from, from its own structured fields only."""
    deployment = context.get("deployment")
    if isinstance(deployment, str) and deployment and not dns1123_problem(deployment):
        return Workload("deployment", deployment, "kubernetes.deployment.name")
    pod = context.get("pod")
    if isinstance(pod, str) and pod:
        return owner_of_pod(pod)
    return None


def subject_key(context: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """What groups events of one error by the object an action could be bound to (ingest): the
    namespace and the owning workload, else the bare pod, else the Elasticsearch index the
    event names. Hosts and services are not split on: no shipped action is bound to them, and
    splitting would multiply the analysis events of a fleet-wide error for nothing."""
    namespace = context.get("namespace")
    workload = workload_of(context)
    if workload is not None:
        return namespace, f"{workload.kind}/{workload.name}"
    if context.get("pod"):
        return namespace, f"pod/{context['pod']}"
    if context.get("index"):
        return namespace, f"index/{context['index']}"
    return namespace, None


def subject_of(context: Mapping[str, Any]) -> str | None:
    """The object an event came from, keyed as :attr:`Target.key` keys objects: its workload
    (``k8s:shop/deployment/checkout``), else its bare pod, else the index it names, else the
    service or host that logged it; None when the event names none. What a request answers
    for when no object could be bound, and what the console's timeline of an object reads."""
    namespace, what = subject_key(context)
    if what is not None:
        return f"es:{what}" if what.startswith("index/") else f"k8s:{namespace}/{what}"
    for field in ("service", "host"):
        value = context.get(field)
        if isinstance(value, str) and value:
            return f"{field}:{value}"
    return None


@dataclass(frozen=True, slots=True)
class Target:
    """The one object an action touches."""

    type: str
    """kubectl, elasticsearch, http or shell"""
    kind: str
    name: str
    namespace: str | None = None

    @property
    def key(self) -> str:
        if self.type == "kubectl":
            return f"k8s:{self.namespace}/{self.kind}/{self.name}"
        if self.type == "elasticsearch":
            return f"es:{self.kind}/{self.name}"
        return f"{self.type}:{self.name}"

    def label(self) -> str:
        if self.type == "kubectl":
            return f"{self.kind}/{self.name} -n {self.namespace}"
        return self.key

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "key": self.key}


def _kubectl_target(command: str) -> tuple[Target | None, str, str]:
    """``(target, verb, problem)`` of a kubectl command line."""
    try:
        tokens = shlex.split(command, posix=True)
    except ValueError as exc:
        return None, "", f"cannot tokenise: {exc}"
    if not tokens or tokens[0] != "kubectl":
        return None, "", "not a kubectl command"
    # flags read as the policy reads them (one parser: ``-nshop`` is a namespace, ``-lapp=x`` a
    # selector), so the object bound here is the object the policy judged
    args, positionals, namespace = tokens[1:], [], None
    i = 0
    while i < len(args):
        token = args[i]
        if token.startswith("-") and len(token) > 1:
            name, value = split_flag(token)
            if name in SCOPE_FLAGS:
                return None, "", f"{name} acts on many objects"
            if value is None and flag_takes_value(name) and i + 1 < len(args):
                value = args[i + 1]
                i += 1
            if name in ("-n", "--namespace"):
                namespace = value
        else:
            positionals.append(token)
        i += 1
    verb = next((v for v in _VERBS if tuple(positionals[: len(v)]) == v), None)
    if verb is None:
        return None, "", f"unknown verb in {' '.join(positionals[:2])!r}"
    objects = positionals[len(verb) :]
    if len(objects) == 1 and "/" in objects[0]:
        kind, _, name = objects[0].partition("/")
    elif len(objects) == 2 and "/" not in objects[0]:
        kind, name = objects
    elif len(objects) == 1:
        return None, " ".join(verb), f"names the kind {objects[0]!r} but no object (it would act on all of them)"
    else:
        return None, " ".join(verb), f"names {max(len(objects) - 1, 0)} objects, an action names exactly one"
    canonical = kind_of(kind) or _BATCH_KINDS.get(kind.lower())
    if canonical is None:
        return None, " ".join(verb), f"unknown kind {kind!r}"
    if not namespace:
        return None, " ".join(verb), "no namespace (-n): an action names its namespace"
    for value, is_ns in ((namespace, True), (name, False)):
        problem = dns1123_problem(value, label=is_ns)
        if problem:
            return None, " ".join(verb), problem
    return Target("kubectl", canonical, name, namespace), " ".join(verb), ""


def target_of_command(command: Mapping[str, Any]) -> tuple[Target | None, str, str]:
    """``(target, action, problem)``: the object a rendered command touches, the action's kind
    (``kubectl:rollout restart:deployment``), and why there is no single object (else "")."""
    type_ = command.get("type")
    text = str(command.get("command") or "")
    if type_ == "kubectl":
        target, verb, problem = _kubectl_target(text)
        if target is None:
            return None, f"kubectl:{verb}", problem
        return target, f"kubectl:{verb}:{target.kind}", ""
    if type_ == "elasticsearch":
        action, *rest = text.split() or [""]
        index = command.get("index")
        for part in rest:
            key, _, value = part.partition("=")
            if key == "index":
                index = value
        if index:
            return Target("elasticsearch", "index", str(index)), f"elasticsearch:{action}", ""
        return Target("elasticsearch", "cluster", "cluster"), f"elasticsearch:{action}", ""
    if type_ == "http":
        url = command.get("url") or (text.split()[-1] if text.split() else "")
        return Target("http", "url", str(url)), "http", ""
    return Target(str(type_), "host", text), str(type_), ""
