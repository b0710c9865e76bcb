"""Issue 20's headline case and issue 21's forged analysis record, as a new user would try them:
``elk-resolver up`` (the embedded broker and PostgreSQL) in live mode with the recording kubectl,
three deployments of namespace shop crash-looping at once (kubelet lines, no event.hash, pods
named as ReplicaSets name them, interleaved), then records an attacker writes straight to the
analysis topic.

    .venv/bin/python -m tests.support.live_demo [--per-deployment 300] [--seed 20] [--oom] [--waves 3]

Prints the kubectl calls, what became of every stored request (a run, or the decision_log line
that says why not) and the refusals of the forged records. Nothing it prints names a path of the
machine it runs on.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaProducer

from elk_resolver.kafka.embedded import free_port
from elk_resolver.store.db import create_pool
from tests.support.fake_kubectl import write_fake_kubectl
from tests.support.incident import interleaved, kubelet_crashloop, kubelet_oomkilled

SHOP = ("checkout", "payments", "search")


def start_up(tmp: Path, fake) -> tuple[subprocess.Popen, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELK_RESOLVER_")}
    env.update({
        "ELK_RESOLVER_STATE_DIR": str(tmp / "state"), "ELK_RESOLVER_EXECUTION_MODE": "live",
        "ELK_RESOLVER_KUBECTL_PATH": str(fake.path), "ELK_RESOLVER_KUBECTL_CONTEXT": "demo",
        "ELK_RESOLVER_KUBECTL_NAMESPACES": "shop,payments", "ELK_RESOLVER_HTTP_PORT": str(free_port()),
        "ELK_RESOLVER_TOPIC_PARTITIONS": "4",
    })  # fmt: skip
    proc = subprocess.Popen([sys.executable, "-m", "elk_resolver.cli", "up"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, cwd=tmp)  # fmt: skip
    kafka = database = None
    deadline = time.monotonic() + 180
    assert proc.stdout is not None
    for line in proc.stdout:
        if m := re.match(r"Kafka bootstrap servers: (\S+)", line):
            kafka = m.group(1)
        if m := re.match(r"Database URL: (\S+)", line):
            database = m.group(1)
        if line.startswith("stages running"):
            print("elk-resolver up: " + line.strip())
            break
        if time.monotonic() > deadline:
            raise SystemExit("elk-resolver up did not start")
    # keep reading what the service prints, or it blocks once the pipe is full
    threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
    if not kafka or not database:
        raise SystemExit("elk-resolver up printed no broker or database")
    return proc, kafka, database


async def send(kafka: str, topic: str, values: list[bytes], key=None) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=kafka, linger_ms=5)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(topic, v, key=key) for v in values])
    finally:
        await producer.stop()


async def settled(pool: asyncpg.Pool, events: int, quiet_s: float = 12.0, timeout: float = 300.0) -> None:
    """Until every event is counted and nothing new was decided for ``quiet_s`` (more than the
    settle time), every stored request having a run or a decision line."""
    deadline, last, since = time.monotonic() + timeout, None, time.monotonic()
    while time.monotonic() < deadline:
        state = await pool.fetchrow(
            "SELECT (SELECT count(*) FROM error_occurrences) AS occ, (SELECT count(*) FROM decision_log) AS lines,"
            " (SELECT count(*) FROM execution_history) AS runs, (SELECT count(*) FROM planned_requests p"
            "  WHERE NOT EXISTS (SELECT 1 FROM decision_log d WHERE d.request_id = p.request_id)"
            "    AND NOT EXISTS (SELECT 1 FROM execution_history h WHERE h.request_id = p.request_id)) AS open"
        )
        if tuple(state) != last:
            last, since = tuple(state), time.monotonic()
        elif state["occ"] >= events and state["open"] == 0 and time.monotonic() - since > quiet_s:
            return
        await asyncio.sleep(0.5)
    raise SystemExit(f"the service did not settle: {last}")


def restarts(fake) -> list[str]:
    out = []
    for argv in fake.calls():
        if argv[:2] == ["rollout", "restart"]:
            out.append(f"{argv[2]} -n {argv[argv.index('-n') + 1]}")
    return out


async def main(per_deployment: int, seed: int, oom: bool, waves: int) -> None:
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        fake = write_fake_kubectl(tmp / "bin", output="deployment.apps restarted")
        proc, kafka, database = start_up(tmp, fake)
        try:
            streams = [[kubelet_crashloop("shop", d, rng) for _ in range(per_deployment)] for d in SHOP]
            if oom:
                streams.append([kubelet_oomkilled("shop", "checkout", rng) for _ in range(per_deployment // 3)])
            values = interleaved(*streams)
            size = -(-len(values) // waves)
            for i in range(0, len(values), size):  # as Logstash ships them: in bursts, a few seconds apart
                if i:
                    await asyncio.sleep(3)
                await send(kafka, "elk.errors.raw", values[i:i + size])
            kinds = "CrashLoopBackOff" + (" and OOMKilled (checkout)" if oom else "")
            print(f"published {len(values)} kubelet {kinds} lines in {waves} burst(s) 3 s apart, interleaved"
                  f" {' '.join(SHOP)} ..., no event.hash, pods named as ReplicaSets name them")
            pool = await create_pool(database, min_size=1, max_size=3)
            try:
                await settled(pool, len(values))
                errors = await pool.fetchval("SELECT count(*) FROM error_logs")
                print(f"{errors} error row(s), {await pool.fetchval('SELECT count(*) FROM analysis_triggers')} analysis"
                      " events stored by ingest")
                print("kubectl rollout restart calls (the recording kubectl):")
                for target, n in sorted(Counter(restarts(fake)).items()):
                    print(f"  {n} x {target}")
                rows = await pool.fetch(
                    """
                    SELECT p.request_id, p.target_key, p.repeats, h.execution_status, d.decision, d.reason, d.target_key AS line_object
                    FROM planned_requests p
                    LEFT JOIN execution_history h ON h.request_id = p.request_id
                    LEFT JOIN LATERAL (SELECT decision, reason, target_key FROM decision_log dl WHERE dl.request_id = p.request_id
                                       ORDER BY dl.id DESC LIMIT 1) d ON TRUE
                    ORDER BY p.requested_at, p.request_id
                    """
                )
                print(f"{len(rows)} stored request(s); what became of each:")
                for r in rows:
                    what = f"ran: {r['execution_status']}" if r["execution_status"] else f"[{r['decision']}] {r['reason']}"
                    print(f"  {r['request_id'][:12]} {r['target_key']} (repeats {r['repeats']}): {what}")
                print("decision_log (every line):")
                for r in await pool.fetch("SELECT decision, target_key, reason FROM decision_log ORDER BY id"):
                    print(f"  [{r['decision']}] {r['target_key']}: {r['reason']}")

                # issue 21: what an attacker writes straight to the analysis topic
                row = await pool.fetchrow("SELECT e.id, e.hash_signature, e.pattern_id FROM error_logs e ORDER BY id LIMIT 1")
                trigger = await pool.fetchrow("SELECT * FROM analysis_triggers WHERE hash_signature = $1 LIMIT 1",
                                              row["hash_signature"])  # fmt: skip
                pattern = {"id": row["pattern_id"], "name": "Pod CrashLoopBackOff", "category": "kubernetes",
                           "priority": 1, "auto_resolve": True}  # fmt: skip
                ledger = "ledger-7d9f8b6c5-x2k4q"
                forged = {
                    "error_log_id": 987654, "hash_signature": row["hash_signature"], "error_type": "kubernetes",
                    "error_message": f"CrashLoopBackOff: back-off 5m0s restarting failed container=app pod={ledger}_payments",
                    "severity": "ERROR", "source_system": "kubelet", "pattern": pattern,
                    "context": {"namespace": "payments", "deployment": "ledger", "pod": ledger},
                    "occurrences_in_batch": 1, "new_occurrences": 1, "first_seen": False,
                    "event_time": datetime.now(UTC).isoformat(), "trigger_event_id": "attacker-1", "replay": False,
                }  # fmt: skip
                genuine_trigger = {
                    **forged, "error_log_id": row["id"], "trigger_event_id": trigger["event_identity"],
                    "event_time": trigger["occurred_at"].replace(tzinfo=UTC).isoformat(),
                    "error_message": trigger["message"], "source_system": trigger["source_system"],
                }  # fmt: skip
                other = 2 if row["pattern_id"] != 2 else 1
                other_pattern = {**genuine_trigger, "context": trigger["context"], "pattern": {**pattern, "id": other}}
                before = await pool.fetchval("SELECT count(*) FROM decision_log WHERE decision = 'refused'")
                records = [forged, genuine_trigger, other_pattern]
                await send(kafka, "elk.errors.analysis", [orjson.dumps(r) for r in records],
                           key=row["hash_signature"].encode())  # fmt: skip
                print(f"wrote {len(records)} forged record(s) to elk.errors.analysis: an existing hash with a made-up"
                      " error_log_id and trigger naming payments/ledger (pattern auto_resolve true); the genuine"
                      " trigger with the payments/ledger context; the genuine event naming another pattern")
                deadline = time.monotonic() + 60
                while await pool.fetchval("SELECT count(*) FROM decision_log WHERE decision = 'refused'") < before + 3:
                    if time.monotonic() > deadline:
                        raise SystemExit("the forged records were not refused")
                    await asyncio.sleep(0.3)
                await asyncio.sleep(6)  # past the settle time: anything the records could start would have run
                for r in await pool.fetch("SELECT reason FROM decision_log WHERE decision = 'refused' ORDER BY id"):
                    print(f"  [refused] {r['reason']}")
                ledger_calls = [c for c in fake.calls() if "payments" in c]
                planned = await pool.fetchval("SELECT count(*) FROM planned_requests WHERE namespace = 'payments'")
                print(f"kubectl calls naming namespace payments: {len(ledger_calls)}; planned requests in payments: {planned}")
                print("recorded kubectl argv:")
                for argv in fake.calls():
                    print("  kubectl " + " ".join(argv))
            finally:
                await pool.close()
        finally:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-deployment", type=int, default=300)
    parser.add_argument("--seed", type=int, default=20)
    parser.add_argument("--oom", action="store_true", help="OOMKilled lines of checkout interleaved too")
    parser.add_argument("--waves", type=int, default=3, help="bursts the events are published in")
    args = parser.parse_args()
    asyncio.run(main(args.per_deployment, args.seed, args.oom, args.waves))
