"""Incident scenarios (issue 20, item 3): the events of each, as kubelet and application lines
arrive, and what an experienced SRE would decide. Used by tests/test_incidents.py (one test
each, real broker and PostgreSQL, live mode, the recording kubectl) and by
``python -m tests.support.scenarios``, which runs every scenario on the embedded stack and prints
the rows of docs/incidents.md: what the service did and its decision_log lines.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.incident import ALPHABET, kubelet_event, kubelet_line, object_of

def rs(rng: random.Random, n: int = 10) -> str:
    return "".join(rng.choice(ALPHABET) for _ in range(n))


def pod(deployment: str, replicaset: str, rng: random.Random) -> str:
    return f"{deployment}-{replicaset}-{rs(rng, 5)}"


def line(kind: str, namespace: str, pod_name: str, rng: random.Random, *, node: str | None = None,
         when: datetime | None = None) -> bytes:  # fmt: skip
    """A kubelet line (crashloop, oom) about a pod, on ``node`` (else the pod's own)."""
    uid = uuid.UUID(int=rng.getrandbits(128), version=4)
    when = when or datetime.now(UTC) - timedelta(milliseconds=rng.randrange(2000))
    return kubelet_line(kind, namespace, pod_name, uid, when, node=node)


def app_line(message: str, namespace: str, pod_name: str, rng: random.Random, *, when: datetime | None = None,
             node: str | None = None) -> bytes:  # fmt: skip
    """An application's own error line (shipped from its container's log)."""
    when = when or datetime.now(UTC) - timedelta(milliseconds=rng.randrange(2000))
    return kubelet_event(f"{when:%H:%M:%S.%f} ERROR {message} (request {rng.getrandbits(32):08x})",
                         namespace=namespace, pod=pod_name, when=when, node=node)  # fmt: skip


def readiness(namespace: str, pod_name: str, rng: random.Random) -> bytes:
    when = datetime.now(UTC) - timedelta(milliseconds=rng.randrange(2000))
    return kubelet_event(
        f'I1201 {when:%H:%M:%S.%f} 2291 prober.go:107] "Probe failed" probeType="Readiness" pod="{namespace}/{pod_name}"'
        f' output="HTTP probe failed with statuscode: 503"', namespace=namespace, pod=pod_name, when=when,
    )  # fmt: skip


def shuffled(values: list[bytes], rng: random.Random) -> list[bytes]:
    values = list(values)
    rng.shuffle(values)
    return values


@dataclass
class Scenario:
    name: str
    events: str
    """what the events look like"""
    expected: str
    """the decisions an experienced SRE would make"""
    values: list[bytes]
    settings: dict[str, Any] = field(default_factory=dict)
    objects: Callable[[bytes], str] | None = None
    """the object each event asks an action on (default: its own workload)"""
    waves: list[Callable[[], list[bytes]]] = field(default_factory=list)
    """later waves of events, each made and sent once the previous one is decided and the
    object's cooldown has passed (recurrence)"""
    sent: list[bytes] = field(default_factory=list)
    """every event :func:`play` sent"""


# the scenarios' common settings: live, the three namespaces, a settle time
BASE = {"kubectl_namespaces": ["shop", "payments", "dev"], "settle_s": 1.5, "fleet_max_actions": 5,
        "fleet_max_actions_per_namespace": 3, "systemic_hold_objects": 4}  # fmt: skip
DEPLOYMENTS = ["checkout", "cart", "search", "catalog", "ledger", "api"]


def crashloops(k: int, *, spread: bool, seed: int = 1) -> Scenario:
    """K deployments crash-looping at once, in one namespace or spread over three."""
    rng = random.Random(seed)
    namespaces = ["shop", "payments", "dev"] if spread else ["shop"]
    values = []
    for i, deployment in enumerate(DEPLOYMENTS[:k]):
        namespace = namespaces[i % len(namespaces)]
        replicaset = rs(rng)
        values += [line("crashloop", namespace, pod(deployment, replicaset, rng), rng) for _ in range(8)]
    where = "spread over shop, payments, dev" if spread else "in namespace shop"
    if k <= (4 if spread else 3):
        expected = f"{k} restart(s), one per deployment"
    elif k == 4:
        expected = "3 restarts (the per-namespace fleet budget), one approval for the 4th"
    else:
        expected = f"no restart: more than systemic_hold_objects=4 objects need a restart at once; one held incident naming all {k}"
    return Scenario(
        f"{k} deployment(s) crash-looping {where}",
        f"8 kubelet CrashLoopBackOff lines per deployment, pods of one ReplicaSet spread over the nodes, {where}",
        expected, shuffled(values, rng), dict(BASE),
    )


def dependency_outage(seed: int = 2) -> Scenario:
    """Services of three namespaces cannot reach db.payments.svc:5432; some of them crash-loop."""
    rng = random.Random(seed)
    clients = [("shop", "checkout"), ("shop", "cart"), ("payments", "api"), ("payments", "ledger"), ("dev", "toy")]
    values = []
    for namespace, deployment in clients:
        replicaset = rs(rng)
        for _ in range(8):
            p = pod(deployment, replicaset, rng)
            values.append(app_line("Connection refused (db.payments.svc:5432): connect to port 5432 failed", namespace, p, rng))
            values.append(app_line("timed out after 5000 ms waiting for db.payments.svc:5432", namespace, p, rng))
        if deployment in ("checkout", "api"):  # the clients crash-loop because their database is gone
            values += [line("crashloop", namespace, pod(deployment, replicaset, rng), rng) for _ in range(6)]

    def asks(value: bytes) -> str:
        import orjson

        record = orjson.loads(value)
        if "Connection refused" in record["message"]:
            if record["kubernetes"]["namespace"] == "payments":
                return "k8s:payments/deployment/db"
            return "dependency:db.payments.svc:5432"
        k8s = record["kubernetes"]
        return object_of(k8s["namespace"], k8s["pod"]["name"])

    return Scenario(
        "dependency outage: db.payments.svc:5432 refuses connections",
        "5 services of shop, payments and dev log `Connection refused (db.payments.svc:5432)` and timeouts to it;"
        " checkout and api also crash-loop",
        "never restart the clients; restart the database's own deployment (db, in payments, named by the payments"
        " services) once; the services of other namespaces may not name it: one line each saying so",
        shuffled(values, rng), dict(BASE), objects=asks,
    )


def external_dependency(seed: int = 3) -> Scenario:
    """Services of two namespaces cannot reach a database outside the cluster."""
    rng = random.Random(seed)
    values = []
    for namespace, deployment in [("shop", "checkout"), ("shop", "cart"), ("payments", "api")]:
        replicaset = rs(rng)
        values += [app_line("Connection refused (pg-main.internal:5432): connect to port 5432 failed", namespace,
                            pod(deployment, replicaset, rng), rng) for _ in range(6)]  # fmt: skip
    return Scenario(
        "dependency outage: pg-main.internal:5432 (outside the cluster)",
        "3 services of shop and payments log `Connection refused (pg-main.internal:5432)`",
        "no restart; one approval naming the dependency and every affected service",
        shuffled(values, rng), dict(BASE), objects=lambda value: "dependency:pg-main.internal:5432",
    )


def node_going_bad(seed: int = 4) -> Scenario:
    """Pods of four deployments fail together on node-7 (and only there)."""
    rng = random.Random(seed)
    values = []
    for namespace, deployment in [("shop", "checkout"), ("shop", "cart"), ("payments", "api"), ("dev", "toy")]:
        replicaset = rs(rng)
        for _ in range(10):
            values.append(line("crashloop", namespace, pod(deployment, replicaset, rng), rng, node="node-7"))
        values.append(line("oom", namespace, pod(deployment, replicaset, rng), rng, node="node-7"))
    return Scenario(
        "a node going bad: node-7",
        "CrashLoopBackOff and OOMKilled lines of pods of 4 deployments in 3 namespaces, every one from node-7;"
        " their pods on other nodes log nothing",
        "no per-workload restart; one held incident naming node-7 and the 4 workloads",
        shuffled(values, rng), dict(BASE),
    )


def bad_rollout(seed: int = 5) -> Scenario:
    """checkout's new ReplicaSet crash-loops right after it appeared; the old one ran before."""
    rng = random.Random(seed)
    old, new = rs(rng), rs(rng)
    before = datetime.now(UTC) - timedelta(minutes=10)
    values = [app_line("upstream request failed: 502 from inventory", "shop", pod("checkout", old, rng), rng,
                       when=before + timedelta(seconds=i)) for i in range(3)]  # fmt: skip
    values += [line("crashloop", "shop", pod("checkout", new, rng), rng) for _ in range(20)]
    return Scenario(
        "a bad rollout of shop/checkout",
        f"errors from pods of ReplicaSet checkout-{old} 10 min ago, then CrashLoopBackOff lines from pods of the new"
        f" ReplicaSet checkout-{new}",
        "no restart; the rollback (kubectl rollout undo deployment/checkout -n shop) asked of a person, with the"
        " two ReplicaSets as evidence",
        values, dict(BASE),
    )


def recurrence(seed: int = 6) -> Scenario:
    """checkout's crash loop comes back after its restart, twice."""
    rng = random.Random(seed)

    def wave() -> list[bytes]:
        replicaset = rs(rng)
        return [line("crashloop", "shop", pod("checkout", replicaset, rng), rng) for _ in range(10)]

    return Scenario(
        "recurrence: the restart does not help",
        "a CrashLoopBackOff wave of shop/checkout; after its restart (and the cooldown) a second wave, then a third",
        "one restart; the crash loop's return sends the next request to a person with the history of the runs"
        " (never a restart loop); the third wave waits on that approval",
        wave(), {**BASE, "cooldown_s": 2.0, "settle_s": 1.0}, waves=[wave, wave],
    )


def stopped_by_itself(seed: int = 7) -> Scenario:
    rng = random.Random(seed)
    before = datetime.now(UTC) - timedelta(minutes=8)
    replicaset = rs(rng)
    values = [line("crashloop", "shop", pod("checkout", replicaset, rng), rng, when=before + timedelta(seconds=i))
              for i in range(6)]  # fmt: skip
    return Scenario(
        "errors that stopped by themselves",
        "6 CrashLoopBackOff lines of shop/checkout from 8 minutes ago (read late: the service was catching up),"
        " nothing since",
        "nothing runs: the crash loop stopped before any action (quiet_after_s=300)",
        values, dict(BASE),
    )


def mixed_signals(seed: int = 8) -> Scenario:
    rng = random.Random(seed)
    replicaset = rs(rng)
    values = []
    for _ in range(10):
        p = pod("checkout", replicaset, rng)
        values += [line("oom", "shop", p, rng), line("crashloop", "shop", p, rng), readiness("shop", p, rng)]
    return Scenario(
        "mixed signals on one object",
        "OOMKilled, CrashLoopBackOff and readiness-probe failures of the same pods of shop/checkout",
        "one action: one restart of checkout; the other error's request is a cooldown line",
        shuffled(values, rng), dict(BASE),
    )


def every_scenario() -> list[Scenario]:
    out = [crashloops(k, spread=False) for k in range(1, 7)] + [crashloops(k, spread=True) for k in range(1, 7)]
    return out + [dependency_outage(), external_dependency(), node_going_bad(), bad_rollout(), recurrence(),
                  stopped_by_itself(), mixed_signals()]  # fmt: skip


# --- what the service did -----------------------------------------------------------------------


async def outcome(pool, fake) -> dict[str, Any]:
    """What the service did: the kubectl calls, the decision lines (newest per request), the
    incidents and the approvals, read from the recording kubectl and the database."""
    lines = await pool.fetch(
        """
        SELECT DISTINCT ON (d.request_id) d.request_id, d.decision, d.reason, d.target_key, d.details
        FROM decision_log d ORDER BY d.request_id, d.id DESC
        """
    )
    incidents = await pool.fetch("SELECT id, action, status, reason FROM incidents ORDER BY id")
    held = await pool.fetch("SELECT incident_id, target_key, signs FROM incident_objects ORDER BY incident_id, target_key")
    approvals = await pool.fetch("SELECT id, target_key, reason, request FROM approvals ORDER BY id")
    return {
        "kubectl": [" ".join(c) for c in fake.calls()],
        "lines": [dict(r) for r in lines],
        "incidents": [dict(r) for r in incidents],
        "held": [dict(r) for r in held],
        "approvals": [dict(r) for r in approvals],
    }


def summary(result: dict[str, Any]) -> tuple[str, str]:
    """(what the service did, its decision_log lines) as table cells."""
    did = [f"`kubectl {c}`" for c in result["kubectl"]] or ["nothing ran"]
    for incident in result["incidents"]:
        objects = [h["target_key"] for h in result["held"] if h["incident_id"] == incident["id"]]
        did.append(f"incident {incident['id']} `{incident['action']}` holding {', '.join(objects)}")
    for approval in result["approvals"]:
        did.append(f"approval {approval['id']} for {approval['target_key']}")
    from collections import Counter

    def kind(reason: str | None) -> str:
        return (reason or "").split(": ", 1)[0][:70]

    kinds = Counter((line["decision"], line["target_key"], kind(line["reason"])) for line in result["lines"])
    text = [f"{n} × {d} {t or ''}: {r}" for (d, t, r), n in sorted(kinds.items(), key=lambda kv: (kv[0][1] or "", kv[0][0]))]
    examples = {}
    for line in result["lines"]:
        examples.setdefault((line["decision"], kind(line["reason"]).split(" ")[0]), line["reason"])
    text += [f"e.g. {d}: {r[:400]}" for (d, _), r in examples.items()]
    return "<br>".join(did), "<br>".join(t.replace("|", "\\|") for t in text)


async def _main() -> None:
    """Run every scenario on the embedded stack (a fresh database each) and print the table."""
    import tempfile
    from contextlib import ExitStack
    from pathlib import Path

    import asyncpg

    from elk_resolver.kafka.topics import ensure_topics
    from elk_resolver.settings import make_settings
    from elk_resolver.store.db import create_pool
    from elk_resolver.store.migrate import migrate
    from tests.support.fake_kubectl import write_fake_kubectl
    from tests.support.incident import live_settings
    from tests.support.services import kafka_service, postgres_service

    print("| scenario | what the events look like | expected decisions | what the service did | decision_log lines |")
    print("|---|---|---|---|---|")
    with ExitStack() as stack, tempfile.TemporaryDirectory() as tmp:
        kafka, postgres = kafka_service(stack), postgres_service(stack)
        for i, scenario in enumerate(every_scenario()):
            name = f"scenario_{i}_{uuid.uuid4().hex[:6]}"
            admin = await asyncpg.connect(postgres.admin_dsn)
            await admin.execute(f'CREATE DATABASE "{name}"')
            await admin.close()
            fake = write_fake_kubectl(Path(tmp) / name, output="deployment.apps restarted")
            base = make_settings(kafka_bootstrap_servers=kafka.bootstrap_servers, database_url=postgres.dsn(name),
                                 state_dir=Path(tmp) / "state", topic_partitions=4, http_port=0)  # fmt: skip
            settings = live_settings(base.isolated(name), fake, **scenario.settings)
            await migrate(settings.database_url)
            await ensure_topics(settings.kafka_bootstrap_servers, settings.topics(), partitions=settings.topic_partitions)
            async with await create_pool(settings.database_url) as pool:
                result = await play(settings, pool, scenario, fake)
            did, lines = summary(result)
            print(f"| {scenario.name} | {scenario.events} | {scenario.expected} | {did} | {lines} |", flush=True)


async def play(settings, pool, scenario: Scenario, fake) -> dict[str, Any]:
    """Run a scenario through ingest, analyze and execute until drained (each wave once the
    previous one is decided and its cooldown has passed); return :func:`outcome`."""
    import asyncio

    from tests.support.incident import publish, running
    from tests.support.polling import wait_for

    async with running(settings, pool) as p:
        sent = 0
        for make in [lambda: scenario.values, *scenario.waves]:
            if sent:  # the next wave comes after the object's cooldown, as a returning crash loop does
                await asyncio.sleep(settings.cooldown_s + 0.5)  # the scenario's own clock, not a wait for a result
            wave = make()
            scenario.sent += wave
            sent += await publish(settings, wave)
            await wait_for(lambda: p.drained(sent), timeout=180, interval=0.3, what="the pipeline to drain")
    return await outcome(pool, fake)


if __name__ == "__main__":
    import asyncio

    asyncio.run(_main())
