"""Incidents as they arrive: many events of a few workloads, pods named as Kubernetes names them,
published raw to the broker and carried through the ingest, analyze and execute stages in live
mode with a recording kubectl. Used by tests/test_right_object_once.py and by the demo
(``python -m tests.support.incident``), which prints the restarts and the decision log.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import re
import uuid
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import orjson
from aiokafka import AIOKafkaProducer

from streams.app import create_app
from tests.support.fake_kubectl import FakeKubectl

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings

ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # Kubernetes' SafeEncodeString alphabet


def rs_pod(deployment: str, rng: random.Random) -> str:
    """A pod name as a ReplicaSet names it: <deployment>-<9-10 char hash>-<5 char suffix>;
    a good share of them hold no digit at all."""
    rs = "".join(rng.choice(ALPHABET) for _ in range(rng.choice((9, 10))))
    return f"{deployment}-{rs}-{''.join(rng.choice(ALPHABET) for _ in range(5))}"


def event(message: str, *, namespace: str, pod: str | None = None, deployment: str | None = None,
          level: str = "error", when: datetime | None = None, **extra: Any) -> bytes:  # fmt: skip
    kubernetes: dict[str, Any] = {"namespace": namespace}
    if pod:
        kubernetes["pod"] = {"name": pod}
    if deployment:
        kubernetes["deployment"] = {"name": deployment}
    return orjson.dumps({
        "@timestamp": (when or datetime.now(UTC)).isoformat(), "message": message, "log": {"level": level},
        "event": {"hash": uuid.uuid4().hex}, "kubernetes": kubernetes, **extra,
    })  # fmt: skip


def crashloop(namespace: str, deployment: str, rng: random.Random) -> bytes:
    pod = rs_pod(deployment, rng)
    return event(
        f"CrashLoopBackOff: back-off 5m0s restarting failed container app in pod {pod} ({uuid.uuid4()})",
        namespace=namespace, pod=pod,
    )  # fmt: skip


NODES = ("node-1", "node-2", "node-3", "node-4")


def node_of(pod: str) -> str:
    """The node a generated pod runs on: pods of a workload spread over the nodes, as the
    scheduler spreads them (fixed per pod name)."""
    import zlib

    return NODES[zlib.crc32(pod.encode()) % len(NODES)]


def kubelet_event(message: str, *, namespace: str, pod: str, level: str = "error", when: datetime | None = None,
                  node: str | None = None) -> bytes:  # fmt: skip
    """An event as Filebeat ships a kubelet line: no ``event.hash`` (the record's bytes are its
    identity), the pod's namespace and name in ``kubernetes``, no deployment field, the node the
    pod runs on in ``host.name``."""
    return orjson.dumps({
        "@timestamp": (when or datetime.now(UTC)).isoformat(), "message": message, "log": {"level": level},
        "kubernetes": {"namespace": namespace, "pod": {"name": pod}, "container": {"name": "app"}},
        "host": {"name": node or node_of(pod)}, "service": {"name": "kubelet"},
    })  # fmt: skip


def kubelet_line(kind: str, namespace: str, pod: str, uid: uuid.UUID, when: datetime, node: str | None = None) -> bytes:
    """A kubelet line about ``pod`` as kubelet writes it (its message names the pod and its
    uid): ``crashloop`` (CrashLoopBackOff) or ``oom`` (a container OOMKilled)."""
    clock = when.strftime("%H:%M:%S.%f")
    if kind == "crashloop":
        message = (
            f'E1201 {clock}    2291 pod_workers.go:1298] "Error syncing pod, skipping" err="failed to'
            f' \\"StartContainer\\" for \\"app\\" with CrashLoopBackOff: \\"back-off 5m0s restarting failed'
            f' container=app pod={pod}_{namespace}({uid})\\"" pod="{namespace}/{pod}" podUID="{uid}"'
        )
    elif kind == "oom":
        message = (
            f'I1201 {clock}    2291 kubelet.go:2457] "Container terminated" reason="OOMKilled" exitCode=137'
            f' container="app" pod="{namespace}/{pod}" podUID="{uid}"'
        )
    else:
        raise ValueError(kind)
    return kubelet_event(message, namespace=namespace, pod=pod, when=when, node=node)


def kubelet_crashloop(namespace: str, deployment: str, rng: random.Random, pod: str | None = None,
                      when: datetime | None = None) -> bytes:  # fmt: skip
    """A kubelet CrashLoopBackOff line of a (random) pod of ``deployment``."""
    uid = uuid.UUID(int=rng.getrandbits(128), version=4)
    return kubelet_line("crashloop", namespace, pod or rs_pod(deployment, rng), uid, when or datetime.now(UTC))


def kubelet_oomkilled(namespace: str, deployment: str, rng: random.Random, pod: str | None = None,
                      when: datetime | None = None) -> bytes:  # fmt: skip
    """A kubelet line about a container of a (random) pod of ``deployment`` killed for memory."""
    uid = uuid.UUID(int=rng.getrandbits(128), version=4)
    return kubelet_line("oom", namespace, pod or rs_pod(deployment, rng), uid, when or datetime.now(UTC))


def interleaved(*streams: list[bytes]) -> list[bytes]:
    """The streams' events in turn (a, b, c, a, b, c, ...), as pods of several workloads log together."""
    out: list[bytes] = []
    for i in range(max(len(s) for s in streams)):
        out += [s[i] for s in streams if i < len(s)]
    return out


OOM_WORDINGS = (
    'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space',
    'Exception in thread "loader" java.lang.OutOfMemoryError: Metaspace',
    'Exception in thread "gc" java.lang.OutOfMemoryError: GC overhead limit exceeded',
    "Container app in pod was OOMKilled (exit code 137)",
)


def live_settings(settings: Settings, fake: FakeKubectl, **overrides: Any) -> Settings:
    return settings.model_copy(update={
        "execution_mode": "live", "kubectl_path": str(fake.path), "kubectl_context": "incident",
        "kubectl_namespaces": ["shop", "payments", "dev"], "command_timeout_s": 10.0,
        "execution_maintenance_interval_s": 0.3, **overrides,
    })  # fmt: skip


async def publish(settings: Settings, values: Iterable[bytes]) -> int:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
    await producer.start()
    try:
        futures = [await producer.send(settings.topic_raw, v) for v in values]
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


@dataclass
class Pipeline:
    settings: Settings
    pool: asyncpg.Pool
    app: Any
    copies: tuple[Any, ...] = ()
    """every copy of the service (``app`` is the first); one consumer group per stage."""

    async def drained(self, events: int) -> bool:
        """Every published event read, every analysis event handled, every pointer handled, no
        run in flight (the stages' own counters, summed over the copies: committed offsets cover
        records fetched but not handled yet, so they cannot say this)."""
        apps = self.copies or (self.app,)
        stages = [a.stages for a in apps]
        read = sum(s["ingest"].metrics.events_in for s in stages)
        # what ingest published: analysis events, and dead letters nobody here reads
        published = sum(s["ingest"].metrics.published - s["ingest"].metrics.dead_lettered for s in stages)
        if read < events or sum(s["analyze"].handled for s in stages) < published:
            return False
        if sum(s["execute"].handled for s in stages) < sum(s["analyze"].published for s in stages):
            return False
        running = await self.pool.fetchval("SELECT count(*) FROM execution_requests WHERE status = 'running'")
        return running == 0


@contextlib.asynccontextmanager
async def running(settings: Settings, pool: asyncpg.Pool, stages=("ingest", "analyze", "execute"),
                  copies: int = 1) -> AsyncIterator[Pipeline]:  # fmt: skip
    """The stages in ``copies`` copies of the service (one process, as many apps), started."""
    apps = [create_app(settings, stages=stages, serve_http=False) for _ in range(copies)]
    started = []
    try:
        for app in apps:
            await app.start()
            started.append(app)
        yield Pipeline(settings, pool, apps[0], tuple(apps))
    finally:
        for app in reversed(started):
            await app.stop()


async def explain(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """One line per stored request: the object it was bound to, and what became of it (a run,
    or the decision_log line that says why not)."""
    rows = await pool.fetch(
        """
        SELECT p.request_id, p.target_key, p.action, p.requested_at,
               h.execution_status, h.executed_by, d.decision, d.reason
        FROM planned_requests p
        LEFT JOIN execution_history h ON h.request_id = p.request_id
        LEFT JOIN LATERAL (SELECT decision, reason FROM decision_log dl WHERE dl.request_id = p.request_id
                           ORDER BY dl.id DESC LIMIT 1) d ON TRUE
        ORDER BY p.requested_at, p.request_id
        """
    )
    return [dict(r) for r in rows]


async def run_incident(
    settings: Settings, pool: asyncpg.Pool, values: list[bytes], *, backlog: bool = True, copies: int = 1,
    timeout: float = 180,
) -> list[bytes]:
    """Carry ``values``, published raw, through ingest, analyze and execute until drained;
    return what was sent (for :func:`unaccounted`). ``backlog``: published before the stages
    start, as when the service starts (or catches up) during an incident: ingest then reads them
    in a few large batches, each holding every object's events. Else published once every copy
    holds its partitions."""
    from tests.support.polling import wait_for

    n = await publish(settings, values) if backlog else 0
    async with running(settings, pool, copies=copies) as p:
        if not backlog:
            await wait_for(lambda: all(st.ready for a in p.copies for st in a.stages.values()), timeout=60,
                           what="every copy holding its partitions")  # fmt: skip
            n = await publish(settings, values)
        await wait_for(lambda: p.drained(n), timeout=timeout, interval=0.5, what="the pipeline to drain")
    return values


_RS_POD = re.compile(rf"^(?P<name>.+)-[{ALPHABET}]{{6,10}}-[{ALPHABET}]{{5}}$")


def object_of(namespace: str | None, pod: str | None = None, deployment: str | None = None) -> str:
    """The object an event is about, read the way a person reads it: the deployment field, else
    the pod name without its ReplicaSet hash and suffix, else the bare pod. Independent of the
    service's own binding (a test's own reading, to check the service's against)."""
    if deployment:
        return f"k8s:{namespace}/deployment/{deployment}"
    m = _RS_POD.match(pod or "")
    return f"k8s:{namespace}/deployment/{m['name']}" if m else f"k8s:{namespace}/pod/{pod}"


def own_object(value: bytes) -> str:
    """:func:`object_of` a generated record."""
    k8s = orjson.loads(value)["kubernetes"]
    return object_of(k8s["namespace"], (k8s.get("pod") or {}).get("name"), (k8s.get("deployment") or {}).get("name"))


def identity(value: bytes) -> str:
    """The event identity ingest stores: ``event.hash``, else the SHA-256 of the record."""
    import hashlib

    return (orjson.loads(value).get("event") or {}).get("hash") or hashlib.sha256(value).hexdigest()


async def unaccounted(pool: asyncpg.Pool, sent: list[bytes], objects: Any = own_object) -> list[tuple[str, str]]:
    """The (error, object) pairs the live error-level events ``sent`` ask an action for that
    have neither a run on the object nor a decision_log line naming it (issue 20's invariant).
    ``objects`` maps an event to the object it asks an action on (its own workload, unless a
    scenario says otherwise). An error no solution fits (a timeout no playbook knows, a
    readiness probe) asks no action."""
    ids = [identity(v) for v in sent]
    rows = await pool.fetch(
        "SELECT o.event_identity, o.hash_signature FROM error_occurrences o WHERE o.event_identity = any($1::text[])"
        " AND EXISTS (SELECT 1 FROM solutions s WHERE s.error_hash = o.hash_signature)", ids
    )
    hashes = {r["event_identity"]: r["hash_signature"] for r in rows}
    pairs = sorted({(hashes[i], objects(v)) for i, v in zip(ids, sent) if i in hashes})
    missing = []
    for h, obj in pairs:
        found = await pool.fetchval(
            """
            SELECT EXISTS (SELECT 1 FROM execution_history x JOIN planned_requests p USING (request_id)
                           WHERE p.hash_signature = $1 AND x.target_key = $2)
                OR EXISTS (SELECT 1 FROM decision_log d WHERE d.hash_signature = $1 AND d.target_key = $2)
            """,
            h, obj,
        )  # fmt: skip
        if not found:
            missing.append((h[:12], obj))
    return missing


def restarts(fake: FakeKubectl) -> list[str]:
    """``kind/name -n namespace`` of every rollout restart kubectl ran."""
    out = []
    for argv in fake.calls():
        if argv[:2] == ["rollout", "restart"]:
            out.append(f"{argv[2]} -n {argv[argv.index('-n') + 1]}")
    return out


# --- the demo --------------------------------------------------------------------------------


async def _demo(per_deployment: int, seed: int, fingerprint: str = "template") -> None:
    """Three deployments crash-looping together, from the embedded stack in live mode."""
    import tempfile
    from collections import Counter
    from contextlib import ExitStack
    from pathlib import Path

    from elk_resolver.kafka.topics import ensure_topics
    from elk_resolver.kafka.security import client_options
    from elk_resolver.settings import make_settings
    from elk_resolver.store.db import create_pool
    from elk_resolver.store.migrate import migrate
    from tests.support.fake_kubectl import write_fake_kubectl
    from tests.support.polling import wait_for
    from tests.support.services import kafka_service, postgres_service

    rng = random.Random(seed)
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        kafka, postgres = kafka_service(stack), postgres_service(stack)
        print(f"broker: {kafka.kind} {kafka.bootstrap_servers}; database: {postgres.kind}")
        fake = write_fake_kubectl(Path(tmp) / "bin", output="deployment.apps restarted")
        base = make_settings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=postgres.admin_dsn,
                             state_dir=Path(tmp) / "state", topic_partitions=4, http_port=0)  # fmt: skip
        settings = live_settings(base.isolated(f"demo-{uuid.uuid4().hex[:8]}"), fake, fingerprint_version=fingerprint)
        await migrate(settings.database_url)
        await ensure_topics(client_options(settings), settings.topics(), partitions=settings.topic_partitions)
        deployments = ["checkout", "cart", "catalog"]
        values = [crashloop("shop", d, rng) for d in deployments for _ in range(per_deployment)]
        rng.shuffle(values)
        async with await create_pool(settings.database_url) as pool, running(settings, pool) as p:
            n = await publish(settings, values)
            await wait_for(lambda: p.drained(n), timeout=300, interval=1.0, what="the pipeline to drain")
            errors = await pool.fetchval("SELECT count(*) FROM error_logs")
            lines = await explain(pool)
        no_digit = sum(1 for v in values if not any(c.isdigit() for c in orjson.loads(v)["kubernetes"]["pod"]["name"].split("-")[-2]))
        print(f"published {n} CrashLoopBackOff events: {per_deployment} per deployment {deployments} in namespace shop,"
              f" random ReplicaSet pod names ({no_digit} with a digit-free hash); {errors} error rows")
        print("kubectl rollout restart calls:")
        for target, count in sorted(Counter(restarts(fake)).items()):
            print(f"  {count} x {target}")
        print(f"{len(lines)} stored requests; what became of each (grouped):")
        summary = Counter(
            (line["target_key"], line["execution_status"] and f"ran: {line['execution_status']}"
             or f"{line['decision']}: {_reason_kind(line['reason'])}")
            for line in lines
        )  # fmt: skip
        for (target, what), count in sorted(summary.items(), key=lambda kv: (kv[0][0] or "", kv[0][1])):
            print(f"  {count:4d}  {target}  {what}")
        others = [line for line in lines if not line["execution_status"]]
        print(f"decision_log: the line that explains every request that did not run ({len(others)};"
              f" {sum(1 for x in others if x['reason'])} have one)")
        for line in others[:30]:
            print(f"  {line['request_id'][:12]} {line['target_key']} [{line['decision']}] {line['reason']}")
        if len(others) > 30:
            print(f"  ... and {len(others) - 30} more of the same kinds")
        print("recorded kubectl argv:")
        for argv in fake.calls():
            print("  kubectl " + " ".join(argv))


def _reason_kind(reason: str | None) -> str:
    return (reason or "").split(":")[0]


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description=_demo.__doc__)
    parser.add_argument("--per-deployment", type=int, default=300)
    parser.add_argument("--seed", type=int, default=10)
    parser.add_argument("--fingerprint", choices=["template", "exact"], default="template",
                        help="exact: every distinct message is its own error (the grouping must not matter)")
    args = parser.parse_args()
    asyncio.run(_demo(args.per_deployment, args.seed, args.fingerprint))
