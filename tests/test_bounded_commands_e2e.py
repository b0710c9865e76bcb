"""Issue 10 end to end: raw events on the real broker, the ingest, analyze and execute stages in
live mode on real PostgreSQL, a recording kubectl.

* Item 4: commands that would act on more than one named object (or on a system index, or too
  far from the current replica count) come from playbooks whose source claims them safe: none
  of them runs, each says why.
* Item 6: documents published by backfill-es are history: never remediated, while the same
  error arriving live is.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer

from elk_resolver.operations.backfill import backfill
from elk_resolver.settings import Settings
from streams.app import create_app
from tests.support.es_stub import EsStub
from tests.support.fake_kubectl import FakeKubectl, write_fake_kubectl
from tests.support.polling import wait_for
from tests.test_execute_stream import Collector

# scenario -> (command its playbook renders, what the outcome's reason must say)
SCENARIOS = {
    "selector": ("kubectl delete pods -l app={deployment} -n {namespace}", "flag -l widens"),
    "noname": ("kubectl rollout restart deployment -n {namespace}", "names no object"),
    "zero": ("kubectl scale deployment/{deployment} --replicas=0 -n {namespace}", "scaling to 0"),
    "anykind": ("kubectl scale replicaset/{deployment} --replicas=3 -n {namespace}", "not 'replicaset'"),
    # inside the static policy, refused by the executor once it has read the current count (2)
    "far": ("kubectl scale deployment/{deployment} --replicas=9 -n {namespace}", "moves 7 replicas"),
    "security": ("clear_read_only_block index=.security-7", "system or hidden index"),
    "good": ("kubectl rollout restart deployment/{deployment} -n {namespace}", ""),
}
RESTART = SCENARIOS["good"][0]


def _playbook(key: str, command: str) -> dict:
    return {
        "name": f"e2e-{key}", "description": f"e2e {key}", "solution_type": "restart",
        "pattern_names": [f"E2E {key}"], "match": f"zzq-{key}\\b", "priority": 1,
        "commands": [{"type": "elasticsearch" if "index=" in command else "kubectl", "command": command,
                      "description": key, "safe": True, "critical": True}],
    }  # fmt: skip


def _source(key: str, event_hash: str, when: datetime | None = None) -> dict:
    return {
        "@timestamp": (when or datetime.now(UTC)).isoformat(), "message": f"zzq-{key} failure in {key}",
        "log": {"level": "error"}, "event": {"hash": event_hash},
        # one workload per scenario, so per-object budgets never hide a scenario behind another
        "kubernetes": {"namespace": "payments", "deployment": {"name": key}, "pod": {"name": f"{key}-7d9f5-bcdfg"}},
    }  # fmt: skip


@dataclass
class Pipeline:
    settings: Settings
    fake: FakeKubectl
    results: Collector
    es: EsStub

    async def publish(self, *values: bytes) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.settings.kafka_bootstrap_servers)
        await producer.start()
        try:
            await asyncio.gather(*[await producer.send(self.settings.topic_raw, v) for v in values])
        finally:
            await producer.stop()

    async def outcomes(self, pool, keys) -> dict[str, list[dict]] | None:
        """Every result published per scenario key, once each key has one."""
        async with pool.acquire() as conn:
            hashes = dict(await conn.fetch(
                "SELECT substring(error_message from 'zzq-([a-z]+)'), hash_signature FROM error_logs"
            ))  # fmt: skip
        values = self.results.values(self.settings.topic_results)
        found = {k: [r for r in values if r["hash_signature"] == hashes.get(k)] for k in keys}
        return found if all(found.values()) else None


@contextlib.asynccontextmanager
async def pipeline(settings, pool, tmp_path: Path, keys) -> AsyncIterator[Pipeline]:
    fake = write_fake_kubectl(tmp_path / "bin", replicas={f"deployment/{key}": 2 for key in keys})
    books = tmp_path / "playbooks"
    books.mkdir()
    for key in keys:
        (books / f"e2e-{key}.json").write_text(orjson.dumps(_playbook(key, SCENARIOS[key][0])).decode())
    async with pool.acquire() as conn:
        for key in keys:
            await conn.execute(
                "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category, priority, auto_resolve) "
                "VALUES ($1, $2, 'custom', 1, true)", f"E2E {key}", f"zzq-{key}\\b",
            )  # fmt: skip
    async with EsStub() as es:
        live = settings.model_copy(update={
            "execution_mode": "live", "kubectl_path": str(fake.path), "kubectl_namespaces": ["payments"],
            "kubectl_context": "e2e", "playbooks_dir": books,
            "elasticsearch_url": es.url, "elasticsearch_actions": ["clear_read_only_block"],
        })  # fmt: skip
        app = create_app(live, stages=("ingest", "analyze", "execute"), serve_http=False)
        async with Collector(live.kafka_bootstrap_servers, live.topic_results) as results:
            await app.start()
            try:
                yield Pipeline(live, fake, results, es)
            finally:
                await app.stop()


async def test_wide_or_unbounded_commands_never_run_and_say_why(settings, pool, tmp_path):
    async with pipeline(settings, pool, tmp_path, SCENARIOS) as p:
        await p.publish(*[orjson.dumps(_source(key, f"e2e-{key}")) for key in SCENARIOS])
        outcomes = await wait_for(lambda: p.outcomes(pool, SCENARIOS), timeout=90, what="every scenario's outcome")
        found = {key: results[0] for key, results in outcomes.items()}
        assert not [r for r in p.es.requests if r.method == "PUT"]  # .security-7 untouched

    # The one bounded command ran, once; nothing else reached kubectl but the replica read.
    assert sorted(p.fake.calls()) == [
        ["get", "deployment/far", "-n", "payments", "-o", "jsonpath={.spec.replicas}", "--context", "e2e"],
        ["rollout", "restart", "deployment/good", "-n", "payments", "--context", "e2e"],
    ]
    assert found["good"]["outcome"] == "success"
    async with pool.acquire() as conn:
        # the executor's refusal is what the run recorded
        far = await conn.fetchval(
            "SELECT execution_output FROM execution_history WHERE solution_id = $1", found["far"]["solution_id"]
        )
    assert "refused by policy" in far and "moves 7 replicas from the current 2" in far
    for key, (_, reason) in SCENARIOS.items():
        if key not in ("good", "far"):
            assert found[key]["outcome"] != "success" and reason in found[key]["reason"], (key, found[key])
    assert found["far"]["outcome"] == "failed"


async def test_backfilled_documents_are_never_remediated_but_the_same_error_live_is(settings, pool, tmp_path):
    async with pipeline(settings, pool, tmp_path, ["good"]) as p:
        recent = datetime.now(UTC) - timedelta(seconds=30)  # fresh enough to run, were it live
        p.es.serve_documents([{"_id": "doc-1", "_source": _source("good", "logstash-fp-1", recent)}])
        s = p.settings
        assert (await backfill(s, pool, index="logs-app", since=recent - timedelta(minutes=1))).published == 1
        [history] = (await wait_for(lambda: p.outcomes(pool, ["good"]), timeout=60, what="the backfill's outcome"))[
            "good"
        ]
        assert history["outcome"] not in ("success", "failed", "timeout"), history  # not a run
        assert p.fake.calls() == []

        # The same error live: it runs (the backfill did not use up a cooldown or a run either).
        await p.publish(orjson.dumps(_source("good", "logstash-fp-2")))

        async def ran():
            outcomes = await p.outcomes(pool, ["good"])
            return outcomes and [r for r in outcomes["good"] if r["outcome"] == "success"]

        await wait_for(ran, timeout=60, what="the live event's run")
    assert p.fake.calls() == [["rollout", "restart", "deployment/good", "-n", "payments", "--context", "e2e"]]
    async with pool.acquire() as conn:
        marks = dict(await conn.fetch("SELECT event_identity, history FROM error_occurrences"))
    assert marks == {"logstash-fp-1": "backfill", "logstash-fp-2": None}
