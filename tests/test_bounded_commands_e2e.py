"""Issue 10 item 4 end to end: raw events on the real broker, the ingest, analyze and execute
stages in live mode on real PostgreSQL, a recording kubectl. Commands that would act on more
than one named object (or on a system index, or too far from the current replica count) come
from playbooks whose source claims them safe: none of them runs, each says why."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from streams.app import create_app
from tests.support.es_stub import EsStub
from tests.support.fake_kubectl import write_fake_kubectl
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


def _playbook(key: str, command: str) -> dict:
    return {
        "name": f"e2e-{key}", "description": f"e2e {key}", "solution_type": "restart",
        "pattern_names": [f"E2E {key}"], "match": f"zzq-{key}\\b", "priority": 1,
        "commands": [{"type": "elasticsearch" if "index=" in command else "kubectl", "command": command,
                      "description": key, "safe": True, "critical": True}],
    }  # fmt: skip


def _event(key: str) -> bytes:
    return orjson.dumps({
        "@timestamp": datetime.now(UTC).isoformat(), "message": f"zzq-{key} failure in {key}",
        "log": {"level": "error"}, "event": {"hash": f"e2e-{key}"},
        # one workload per scenario, so per-object budgets never hide a scenario behind another
        "kubernetes": {"namespace": "payments", "deployment": {"name": key}, "pod": {"name": f"{key}-7d9f5-bcdfg"}},
    })  # fmt: skip


async def test_wide_or_unbounded_commands_never_run_and_say_why(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path / "bin", replicas={f"deployment/{key}": 2 for key in SCENARIOS})
    books = tmp_path / "playbooks"
    books.mkdir()
    for key, (command, _) in SCENARIOS.items():
        (books / f"e2e-{key}.json").write_text(orjson.dumps(_playbook(key, command)).decode())
    async with pool.acquire() as conn:
        for key in SCENARIOS:
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
                producer = AIOKafkaProducer(bootstrap_servers=live.kafka_bootstrap_servers)
                await producer.start()
                try:
                    await asyncio.gather(*[
                        await producer.send(live.topic_raw, _event(key), key=key.encode()) for key in SCENARIOS
                    ])
                finally:
                    await producer.stop()

                async def outcomes() -> dict[str, dict] | None:
                    async with pool.acquire() as conn:
                        hashes = dict(await conn.fetch(
                            "SELECT substring(error_message from 'zzq-([a-z]+)'), hash_signature FROM error_logs"
                        ))  # fmt: skip
                    by_hash = {r["hash_signature"]: r for r in results.values(live.topic_results)}
                    found = {key: by_hash[h] for key, h in hashes.items() if h in by_hash}
                    return found if len(found) == len(SCENARIOS) else None

                found = await wait_for(outcomes, timeout=90, what="an outcome for every scenario")
            finally:
                await app.stop()
        assert not [r for r in es.requests if r.method == "PUT"]  # .security-7 untouched

    # The one bounded command ran, once; nothing else reached kubectl but the replica read.
    assert sorted(fake.calls()) == [
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
