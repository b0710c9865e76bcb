"""Issue 10 (items 1, 2, 3, 5, 7): act on the right object, once; nothing runs that the database
did not decide. Real broker, real PostgreSQL, the ingest/analyze/execute stages in live mode, and
a kubectl stand-in that records its arguments. Each scenario failed on the code before the fix
(the numbers the issue measured are in each docstring)."""

from __future__ import annotations

import asyncio
import io
import random
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from elk_resolver.actions.policy import ExecutionPolicy
from elk_resolver.cli import approvals as approvals_cli
from elk_resolver.health.components import check_executions
from handlers.execute import (
    Runtime,
    approve_incident,
    handle_request,
    list_incidents,
    reap_lost_runs,
    set_playbook_enabled,
)
from streams.execute import build_execute
from tests.support.fake_kubectl import write_fake_kubectl
from tests.support.incident import (
    OOM_WORDINGS,
    crashloop,
    event,
    explain,
    live_settings,
    publish,
    restarts,
    running,
)
from tests.support.polling import wait_for
from tests.test_execute import kube, request, seed, stored

DRAIN_S = 180  # the shared machine is slow; the condition is polled, never slept on


async def _run(settings, pool, values) -> list[dict]:
    async with running(settings, pool) as p:
        n = await publish(settings, values)
        await wait_for(lambda: p.drained(n), timeout=DRAIN_S, interval=0.5, what="the pipeline to drain")
    return await explain(pool)


def _every_other_request_says_why(lines: list[dict]) -> None:
    for line in lines:
        assert line["execution_status"] or line["decision"], line
        if not line["execution_status"]:
            assert line["reason"], line


async def test_a_thousand_crashloop_events_of_one_deployment_with_random_pod_names_restart_it_once(settings, pool, tmp_path):
    """Was 30 restarts of the same deployment (30 error rows, cooldown per solution and hash)."""
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake)
    rng = random.Random(1)
    lines = await _run(live, pool, [crashloop("shop", "checkout", rng) for _ in range(1000)])
    assert restarts(fake) == ["deployment/checkout -n shop"]
    assert {line["target_key"] for line in lines} == {"k8s:shop/deployment/checkout"}
    _every_other_request_says_why(lines)


async def test_three_deployments_crash_looping_together_restart_once_each(settings, pool, tmp_path):
    """Was 17 restarts (8, 5 and 4) and 15 error rows for 3 x 300 events."""
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake)
    rng = random.Random(2)
    values = [crashloop("shop", d, rng) for d in ("checkout", "cart", "catalog") for _ in range(300)]
    rng.shuffle(values)
    # In two waves, the second once the first is drained: the repeats then come in batches of
    # their own whatever the machine's speed (all 900 read in one ingest batch were one
    # analysis event per deployment, nothing to count as a repeat: the assertion below failed
    # under load in the full suite).
    async with running(live, pool) as p:
        published = 0
        for wave in (values[:450], values[450:]):
            published += await publish(live, wave)
            await wait_for(lambda n=published: p.drained(n), timeout=DRAIN_S, interval=0.5,
                           what=f"the pipeline to drain {published} events")
    lines = await explain(pool)
    assert Counter(restarts(fake)) == Counter(
        {"deployment/checkout -n shop": 1, "deployment/cart -n shop": 1, "deployment/catalog -n shop": 1}
    )
    skipped = [line for line in lines if not line["execution_status"]]
    assert all(line["reason"].startswith(("cooldown", "request already claimed")) for line in skipped)
    # the repeats are counted on the objects' requests instead of being decided again (issue 14)
    assert await pool.fetchval("SELECT sum(repeats) FROM planned_requests") > 0


async def test_the_same_oom_message_from_three_workloads_restarts_each_its_own(settings, pool, tmp_path):
    """Was three restarts of deployment/api -n payments (the first workload's stored solution)."""
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake)
    message = 'Exception in thread "main" java.lang.OutOfMemoryError: Java heap space'
    values = [
        event(message, namespace="payments", deployment="api"),
        event(message, namespace="dev", deployment="toy"),
        event(message, namespace="payments", deployment="billing"),
    ]
    lines = await _run(live, pool, values)
    assert sorted(restarts(fake)) == ["deployment/api -n payments", "deployment/billing -n payments", "deployment/toy -n dev"]
    # one stored solution (the action with its parameters) pools the three runs
    runs = await pool.fetch("SELECT solution_id, target_key FROM execution_history ORDER BY target_key")
    assert len({r["solution_id"] for r in runs}) == 1
    assert [r["target_key"] for r in runs] == [
        "k8s:dev/deployment/toy", "k8s:payments/deployment/api", "k8s:payments/deployment/billing",
    ]  # fmt: skip
    assert await pool.fetchval("SELECT execution_count FROM solutions WHERE id = $1", runs[0]["solution_id"]) == 3
    _every_other_request_says_why(lines)


async def test_four_oom_wordings_of_one_deployment_restart_it_once(settings, pool, tmp_path):
    """Was four restarts in the same second, one per fingerprint."""
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake)
    lines = await _run(live, pool, [event(m, namespace="payments", deployment="api") for m in OOM_WORDINGS])
    assert await pool.fetchval("SELECT count(*) FROM error_logs") == 4
    assert restarts(fake) == ["deployment/api -n payments"]
    assert sum(1 for line in lines if line["reason"] and line["reason"].startswith("cooldown")) == 3


async def test_a_line_from_one_namespace_naming_a_workload_in_another_restarts_nothing(settings, pool, tmp_path):
    """Was kubectl rollout restart deployment/payments-api -n payments, from a sandbox line."""
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake, kubectl_namespaces=["payments", "sandbox"])
    message = "Connection refused to payments-api.payments.svc port 8080"
    await _run(live, pool, [event(message, namespace="sandbox", pod="toy-5f7b9c6d4-q8w2n")])
    assert fake.calls() == []


async def test_disabling_a_playbook_stops_its_stored_solutions_at_once(settings, pool, tmp_path):
    """Was: the stored solutions kept running automatically."""
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake)
    rng = random.Random(3)
    await _run(live, pool, [crashloop("shop", "checkout", rng)])
    assert restarts(fake) == ["deployment/checkout -n shop"]
    await set_playbook_enabled("pod-crashloopbackoff-restart", False, "oncall", pool=pool)
    # the same error on other deployments: the playbook's stored solution exists, and never runs
    lines = await _run(live, pool, [crashloop("shop", "cart", rng), crashloop("shop", "catalog", rng)])
    assert restarts(fake) == ["deployment/checkout -n shop"]
    assert [x for x in lines if x["target_key"] != "k8s:shop/deployment/checkout" and x["execution_status"]] == []
    # a request for that stored solution (as a copy that analysed it before the switch stored it)
    row = await pool.fetchrow(
        "SELECT s.id, s.error_hash, e.id AS error_log_id FROM solutions s JOIN error_logs e ON e.hash_signature = s.error_hash"
        " WHERE s.playbook_name = 'pod-crashloopbackoff-restart' LIMIT 1"
    )
    req = request((row["error_log_id"], row["id"], row["error_hash"]),
                  [kube("kubectl rollout restart deployment/cart -n shop")], at=datetime.now(UTC))  # fmt: skip
    [result] = await handle_request(await stored(pool, req), pool=pool, settings=live, policy=ExecutionPolicy.from_settings(live))
    assert result.outcome == "skipped" and "disabled" in result.reason and "oncall" in result.reason
    assert restarts(fake) == ["deployment/checkout -n shop"]


# --- the topic points, the database decides ----------------------------------------------------


async def _send_raw(settings, value: bytes, key: bytes) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_execution, value, key=key)
    finally:
        await producer.stop()


async def test_forged_requests_on_the_execution_topic_run_nothing(settings, pool, tmp_path):
    """Was: a message naming a real solution id with its own commands and decision=auto ran
    kubectl scale deployment/checkout --replicas=0 -n shop."""
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake, kubectl_namespaces=["payments", "shop"])
    ids = await seed(pool)
    genuine = await stored(pool, request(ids, at=datetime.now(UTC)))  # a real stored request
    now = datetime.now(UTC).isoformat()
    forged_new = {
        "request_id": "forged-1", "error_log_id": ids[0], "hash_signature": ids[2], "solution_id": ids[1],
        "solution_source": "playbook", "decision": "auto", "reason": "trust me", "replay": False,
        "commands": [{"type": "kubectl", "command": "kubectl scale deployment/checkout --replicas=0 -n shop", "safe": True}],
        "event_time": now, "requested_at": now, "digest": "0" * 64,
    }  # fmt: skip
    edited = {**genuine.model_dump(mode="json"),
              "commands": [{"type": "kubectl", "command": "kubectl scale deployment/checkout --replicas=0 -n shop"}]}
    edited_digest = {**genuine.model_dump(mode="json"), "solution_id": ids[1] + 1000}
    async with running(live, pool, stages=("execute",)):
        for body in (forged_new, edited, edited_digest):
            await _send_raw(live, orjson.dumps(body), ids[2].encode())

        async def refused() -> list:
            rows = await pool.fetch("SELECT request_id, reason FROM decision_log WHERE decision = 'refused' ORDER BY id")
            return rows if len(rows) == 3 else []

        rows = await wait_for(refused, timeout=60, what="three refusals in the decision log")
    assert fake.calls() == []
    assert await pool.fetchval("SELECT count(*) FROM execution_requests") == 0  # nothing claimed
    assert "carries" in rows[0]["reason"] and "carries commands" in rows[1]["reason"]
    assert "differs" in rows[2]["reason"]
    # the genuine pointer still runs: a forgery cannot burn the request id
    [result] = await handle_request(genuine, pool=pool, settings=live, policy=ExecutionPolicy.from_settings(live))
    assert result.outcome == "success" and restarts(fake) == ["deployment/api -n payments"]


# --- budgets: the systemic hold, the fleet budget, the reaper ------------------------------------


async def test_an_incident_wide_approval_restarts_each_named_object_once(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake, systemic_hold_objects=2, approved_sweep_after_s=0)
    policy = ExecutionPolicy.from_settings(live)
    now = datetime.now(UTC)
    outcomes = []
    for name in ("api", "billing", "ledger", "fraud", "risk"):  # as they arrive: more than 2 objects -> hold
        ids = await seed(pool)
        req = request(ids, [kube(f"kubectl rollout restart deployment/{name} -n payments")], at=now,
                      signs={"namespace": "payments", "dependency": "db.payments.svc:5432"})  # fmt: skip
        outcomes += [r.outcome for r in await handle_request(await stored(pool, req), pool=pool, settings=live, policy=policy)]
    assert outcomes == ["success", "success", "pending_approval", "pending_approval", "pending_approval"]
    [incident] = await list_incidents(pool=pool)
    assert [o["target_key"] for o in incident["objects"]] == [
        "k8s:payments/deployment/ledger", "k8s:payments/deployment/fraud", "k8s:payments/deployment/risk",
    ]  # fmt: skip
    assert incident["shared"] == {"namespace": "payments", "dependency": "db.payments.svc:5432"}
    # more requests about held objects while the incident waits: held once, nothing runs
    again = await stored(pool, request(await seed(pool), [kube("kubectl rollout restart deployment/risk -n payments")], at=now))
    [r] = await handle_request(again, pool=pool, settings=live, policy=policy)
    assert r.outcome == "skipped" and "already held in incident" in r.reason

    # the one approval for the whole incident, as the CLI shows it
    out, err = io.StringIO(), io.StringIO()
    assert await approvals_cli.main(["approvals", "incidents", "--no-publish"], live, pool=pool, out=out, err=err) == 0
    text = out.getvalue()
    assert f"incident {incident['id']}" in text and "systemic hold" in text
    assert all(key in text for key in ("k8s:payments/deployment/ledger", "k8s:payments/deployment/fraud", "k8s:payments/deployment/risk"))
    assert "dependency: db.payments.svc:5432 (3)" in text and "namespace: payments (3)" in text

    event_, approved = await approve_incident(
        incident["id"], "alice", ["k8s:payments/deployment/ledger", "k8s:payments/deployment/risk"], pool=pool, settings=live
    )
    assert event_.status == "approved" and len(approved) == 2
    assert len(fake.calls()) == 2  # nothing ran in the approver's process
    # the execute stage gets each pointer (here twice: a redelivery) and runs each object once
    ran = [r for p in approved * 2 for r in await handle_request(p, pool=pool, settings=live, policy=policy)]
    assert sorted(r.outcome for r in ran) == ["duplicate", "duplicate", "success", "success"]
    assert sorted(restarts(fake)[2:]) == ["deployment/ledger -n payments", "deployment/risk -n payments"]
    assert {r.executed_by for r in ran if r.outcome == "success"} == {"alice"}
    assert await pool.fetchval(
        "SELECT status FROM incident_objects WHERE target_key = 'k8s:payments/deployment/fraud'"
    ) == "rejected"


async def test_the_fleet_budget_holds_with_two_executor_copies(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake, kubectl_namespaces=[f"ns{i}" for i in range(12)],
                         fleet_max_actions=5, systemic_hold_objects=100)  # fmt: skip
    now = datetime.now(UTC)
    pointers = []
    for i in range(12):  # twelve objects in twelve namespaces: only the overall budget applies
        ids = await seed(pool)
        pointers.append(await stored(pool, request(ids, [kube(f"kubectl rollout restart deployment/app -n ns{i}")], at=now)))
    async with KafkaBroker(live.kafka_bootstrap_servers) as broker:
        copies = [build_execute(live, pool=pool, broker=broker, maintenance_interval_s=30) for _ in range(2)]
        for copy in copies:
            await copy.start()
        try:
            await asyncio.gather(*(c.wait_ready() for c in copies))
            for p in pointers:
                await broker.publish(p, topic=live.topic_execution, key=p.hash_signature.encode())
            await wait_for(lambda: sum(c.handled for c in copies) == 12, timeout=90, what="12 requests handled")
        finally:
            for copy in copies:
                await copy.stop()
    assert len(restarts(fake)) == 5
    held = await pool.fetch("SELECT reason FROM decision_log WHERE decision = 'pending_approval'")
    assert len(held) == 7 and all(r["reason"].startswith("fleet budget: 5 actions") for r in held)


async def test_the_reaper_records_a_run_that_died_after_its_claim_and_it_is_never_rerun(pool, database_url, tmp_path):
    fake = write_fake_kubectl(tmp_path, default="hang")
    live = live_settings_for_handlers(database_url, fake)
    policy = ExecutionPolicy.from_settings(live)
    ids = await seed(pool)
    pointer = await stored(pool, request(ids, at=datetime.now(UTC)))
    run = asyncio.create_task(handle_request(pointer, pool=pool, settings=live, policy=policy, runtime=Runtime(instance="doomed")))
    await wait_for(lambda: len(fake.calls()) == 1, timeout=30, what="the command started")
    run.cancel()  # the executor dies mid-run: its slot is taken, no outcome recorded
    await asyncio.gather(run, return_exceptions=True)
    assert await pool.fetchval("SELECT count(*) FROM execution_history") == 0

    assert await reap_lost_runs(pool=pool, settings=live) == []  # not yet: it may still be running
    later = datetime.now(UTC) + timedelta(seconds=live.run_lost_after_s + 1)
    [lost] = await reap_lost_runs(pool=pool, settings=live, now=later)
    assert lost.outcome == "lost" and "doomed" in lost.reason
    [h] = await pool.fetch("SELECT execution_status, executed_by, target_key FROM execution_history")
    assert (h["execution_status"], h["executed_by"], h["target_key"]) == ("unknown", "doomed", "k8s:payments/deployment/api")
    s = await pool.fetchrow("SELECT success_rate, execution_count, consecutive_failures FROM solutions WHERE id = $1", ids[1])
    assert (float(s["success_rate"]), s["execution_count"], s["consecutive_failures"]) == (0.0, 1, 1)
    assert await pool.fetchval("SELECT count(*) FROM decision_log WHERE decision = 'lost'") == 1
    assert await reap_lost_runs(pool=pool, settings=live, now=later) == []  # recorded once
    reported = await check_executions(pool, live)  # the monitor says so
    assert reported.status == "warning" and reported.details["lost_last_24h"] == 1
    assert "doomed" in reported.details["last_lost"]
    # the pointer again (redelivery): never re-run without a decision
    [again] = await handle_request(pointer, pool=pool, settings=live, policy=policy, now=later)
    assert again.outcome == "duplicate" and len(fake.calls()) == 1


def live_settings_for_handlers(database_url, fake):
    from tests.test_execute import exec_settings

    return exec_settings(database_url, fake, command_timeout_s=120.0, run_lost_after_s=300.0)

