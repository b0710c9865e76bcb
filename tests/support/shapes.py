"""Incident shapes for the property tests: objects, namespaces, kubelet lines and their order.

One description of an incident (:class:`Shape`: which deployments of which namespaces log which
errors, how often, with which pods, in which order) and two ways to draw one: Hypothesis
strategies (:func:`shapes`, shrinkable, for the pure parts) and a seeded generator
(:func:`shape_from_seed`, for the few end-to-end seeds on the real broker and PostgreSQL). The
records are kubelet lines as Filebeat ships them: no ``event.hash``, the pod's namespace and
name in ``kubernetes``, messages that name the pod and its uid, pods named as ReplicaSets name
them. An object's own deployment is read from its pod name independently of the service
(:func:`tests.support.incident.own_object`).
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from hypothesis import strategies as st

from tests.support.incident import ALPHABET, kubelet_line, object_of

NAMESPACES = ("shop", "payments", "dev")
DEPLOYMENTS = ("checkout", "payments", "search", "cart", "ledger", "api", "web", "worker")
BARE_PODS = ("toolbox", "debug", "migrate")  # fit no owner's naming rule
KINDS = ("crashloop", "oom")


@dataclass(frozen=True)
class Line:
    """One event of the incident: which object, which error, which pod."""

    kind: str
    namespace: str
    deployment: str | None
    """None: a bare pod (no owner a pod name can tell), which no action can be bound to."""
    pod: str
    uid: uuid.UUID
    offset_ms: int

    def record(self, start: datetime) -> bytes:
        return kubelet_line(self.kind, self.namespace, self.pod, self.uid, start + timedelta(milliseconds=self.offset_ms))

    @property
    def object(self) -> str:
        return object_of(self.namespace, self.pod)


@dataclass
class Shape:
    lines: list[Line]
    start: datetime = field(default_factory=lambda: datetime.now(UTC))

    def records(self) -> list[bytes]:
        return [line.record(self.start) for line in self.lines]

    @property
    def objects(self) -> set[str]:
        return {line.object for line in self.lines}


def _pod(deployment: str, rs_hash: str, suffix: str) -> str:
    return f"{deployment}-{rs_hash}-{suffix}"


# -- Hypothesis -----------------------------------------------------------------------------------

_rs_hashes = st.text(ALPHABET, min_size=6, max_size=10)
_suffixes = st.text(ALPHABET, min_size=5, max_size=5)


@st.composite
def shapes(draw, *, max_objects: int = 8, max_namespaces: int = 3, max_lines_per_object: int = 6, kinds=KINDS,
           bare_pods: bool = True) -> Shape:  # fmt: skip
    """Objects 1..max_objects across 1..max_namespaces (deployments, and bare pods when
    ``bare_pods``), each logging 1..max_lines_per_object lines of one or more error kinds from
    one or two ReplicaSets' pods, in any order."""
    namespaces = draw(st.lists(st.sampled_from(NAMESPACES), min_size=1, max_size=max_namespaces, unique=True))
    names = DEPLOYMENTS + BARE_PODS if bare_pods else DEPLOYMENTS
    objects = draw(
        st.lists(st.tuples(st.sampled_from(namespaces), st.sampled_from(names)),
                 min_size=1, max_size=max_objects, unique=True)
    )  # fmt: skip
    lines = []
    for namespace, deployment in objects:
        hashes = draw(st.lists(_rs_hashes, min_size=1, max_size=2, unique=True))
        for _ in range(draw(st.integers(1, max_lines_per_object))):
            if deployment in BARE_PODS:
                pod, deployment_ = deployment, None
            else:
                pod, deployment_ = _pod(deployment, draw(st.sampled_from(hashes)), draw(_suffixes)), deployment
            kind = draw(st.sampled_from(kinds))
            uid = uuid.UUID(int=draw(st.integers(0, 2**122)), version=4)
            lines.append(Line(kind, namespace, deployment_, pod, uid, draw(st.integers(0, 5_000))))
    return Shape(draw(st.permutations(lines)))


# -- seeded (end to end) ----------------------------------------------------------------------------


def shape_from_seed(seed: int, *, max_objects: int = 8, max_namespaces: int = 3, max_lines_per_object: int = 40) -> Shape:
    """The same kind of shape from a seed: objects 1..max_objects across 1..max_namespaces."""
    rng = random.Random(seed)
    namespaces = rng.sample(NAMESPACES, rng.randint(1, max_namespaces))
    pairs = sorted({(rng.choice(namespaces), d) for d in rng.sample(DEPLOYMENTS, rng.randint(1, max_objects))})
    lines = []
    for namespace, deployment in pairs:
        hashes = ["".join(rng.choice(ALPHABET) for _ in range(rng.choice((9, 10)))) for _ in range(rng.randint(1, 2))]
        kinds = rng.sample(KINDS, rng.randint(1, len(KINDS)))
        for _ in range(rng.randint(1, max_lines_per_object)):
            pod = _pod(deployment, rng.choice(hashes), "".join(rng.choice(ALPHABET) for _ in range(5)))
            uid = uuid.UUID(int=rng.getrandbits(128), version=4)
            lines.append(Line(rng.choice(kinds), namespace, deployment, pod, uid, rng.randrange(5_000)))
    rng.shuffle(lines)
    return Shape(lines)


def split(items: list, cuts: list[int]) -> list[list]:
    """``items`` cut into consecutive batches at the (sorted, deduplicated) positions ``cuts``."""
    points = sorted({c for c in cuts if 0 < c < len(items)})
    bounds = [0, *points, len(items)]
    return [items[a:b] for a, b in zip(bounds, bounds[1:])]
