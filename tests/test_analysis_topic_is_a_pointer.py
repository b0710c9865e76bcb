"""Issue 21, item 1: the analysis topic is a trust boundary; the database decides.

A writer of ``elk.errors.analysis`` wrote what an attacker would: an existing hash_signature
with a made-up error_log_id, a context naming namespace payments / deployment ledger, a pattern
with auto_resolve true, another pattern id than the error's. Before the fix the service ran
``kubectl rollout restart deployment/ledger -n payments`` live, with no event from payments ever
ingested, and a record naming another pattern ran although the error's stored pattern had
auto_resolve false. Real broker, real PostgreSQL, live mode, the recording kubectl.
"""

from __future__ import annotations

import contextlib
import random
from datetime import UTC, datetime

import orjson
from aiokafka import AIOKafkaProducer

from elk_resolver.actions.policy import ExecutionPolicy
from elk_resolver.kafka.signing import HEADER
from handlers.execute import handle_request
from tests.support.fake_kubectl import write_fake_kubectl
from tests.support.incident import kubelet_crashloop, live_settings, publish, restarts, running
from tests.support.polling import wait_for
from tests.test_analyze import read_records
from tests.test_execute import kube, request, seed, stored


async def send_analysis(settings, *bodies: dict) -> None:
    await send_raw(settings, [(settings.topic_analysis, orjson.dumps(b), b["hash_signature"].encode(), []) for b in bodies])


def forged(genuine: dict, **changes) -> dict:
    return {**genuine, **changes}


@contextlib.asynccontextmanager
async def after_a_genuine_crash_loop(live, pool, seed: int):
    """The pipeline (one session: a stage that rejoins its group waits out the old member's
    session), after one genuine crash loop of shop/checkout went through it: the error, its
    solutions and its trigger exist, and checkout was restarted."""
    async with running(live, pool) as p:
        n = await publish(live, [kubelet_crashloop("shop", "checkout", random.Random(seed))])
        await wait_for(lambda: p.drained(n), timeout=120, interval=0.3, what="the genuine event decided")
        yield p


async def handled(p, analysis: int, execution: int = 0) -> None:
    """Until the analysis stage handled ``analysis`` more records and the execute stage
    ``execution`` more plus whatever the analysis stage published."""
    a, e = p.app.stages["analyze"], p.app.stages["execute"]
    a0, e0, pub0 = a.handled, e.handled, a.published
    await wait_for(lambda: a.handled >= a0 + analysis and e.handled >= e0 + execution + (a.published - pub0),
                   timeout=60, what="the records handled")  # fmt: skip


async def test_forged_analysis_records_run_nothing_the_database_did_not_decide(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake, kubectl_namespaces=["shop", "payments"], fleet_max_actions=50,
                         fleet_max_actions_per_namespace=50)  # fmt: skip
    async with after_a_genuine_crash_loop(live, pool, 1) as p:
        await forge_and_send(live, pool, fake, p)
    rows = await pool.fetch("SELECT reason, target_key FROM decision_log WHERE decision = 'refused' ORDER BY id")
    assert restarts(fake) == ["deployment/checkout -n shop"]  # nothing else ran
    assert not [c for c in fake.calls() if "payments" in c]
    assert await pool.fetchval("SELECT count(*) FROM planned_requests WHERE namespace = 'payments'") == 0
    reasons = [r["reason"] for r in rows]
    assert "ingest stored no analysis event with trigger 'attacker-1'" in reasons[0]
    assert "context differs" in reasons[1] and "deployment" in reasons[1]
    assert "message differs" in reasons[2]
    assert "names pattern 2, the error's stored pattern is 1" in reasons[3]
    assert all(r["target_key"] is None for r in rows)


async def forge_and_send(live, pool, fake, p) -> None:
    assert restarts(fake) == ["deployment/checkout -n shop"]
    row = await pool.fetchrow("SELECT id, hash_signature, pattern_id FROM error_logs")
    trigger = await pool.fetchrow("SELECT * FROM analysis_triggers")
    now = datetime.now(UTC).isoformat()
    pattern = {"id": row["pattern_id"], "name": "Pod CrashLoopBackOff", "category": "kubernetes", "priority": 1,
               "auto_resolve": True}  # fmt: skip
    genuine = {
        "error_log_id": row["id"], "hash_signature": row["hash_signature"], "error_type": "kubernetes",
        "error_message": trigger["message"], "severity": "ERROR", "source_system": trigger["source_system"],
        "pattern": pattern, "context": trigger["context"], "occurrences_in_batch": 1, "new_occurrences": 1,
        "first_seen": False, "event_time": trigger["occurred_at"].replace(tzinfo=UTC).isoformat(),
        "trigger_event_id": trigger["event_identity"], "replay": False,
    }  # fmt: skip
    ledger_pod = "ledger-7d9f8b6c5-x2k4q"
    ledger_message = trigger["message"].replace(trigger["context"]["pod"], ledger_pod).replace("_shop(", "_payments(")
    payments = {"namespace": "payments", "deployment": "ledger", "pod": ledger_pod}
    bodies = [
        # an existing hash with a made-up error_log_id, a made-up trigger and the object of payments
        forged(genuine, error_log_id=987654, trigger_event_id="attacker-1", event_time=now, context=payments,
               error_message=ledger_message),
        # the genuine trigger with another object
        forged(genuine, context=payments),
        # the genuine trigger with another object in the message only (the playbook extracts it)
        forged(genuine, error_message=ledger_message),
        # another pattern id, auto_resolve true
        forged(genuine, pattern={**pattern, "id": 2, "name": "Out of Memory"}),
    ]
    await send_analysis(live, *bodies)
    await handled(p, len(bodies))


async def test_the_execute_stage_judges_the_pattern_stored_with_the_error(pool, database_url, tmp_path):
    """A stored request that names pattern 2 (auto_resolve) for an error stored with pattern 1,
    switched to auto_resolve false: a person decides."""
    from tests.test_execute import exec_settings

    fake = write_fake_kubectl(tmp_path)
    live = exec_settings(database_url, fake, kubectl_namespaces=["payments"])
    ids = await seed(pool)
    await pool.execute("UPDATE error_logs SET pattern_id = 1 WHERE id = $1", ids[0])
    await pool.execute("UPDATE error_patterns SET auto_resolve = false WHERE id = 1")
    other = {"id": 2, "name": "Out of Memory", "category": "resource", "priority": 2, "auto_resolve": True}
    pointer = await stored(pool, request(ids, [kube()], at=datetime.now(UTC), pattern=other))
    [result] = await handle_request(pointer, pool=pool, settings=live, policy=ExecutionPolicy.from_settings(live))
    assert result.outcome == "pending_approval"
    assert "the request names pattern 2; the error's stored pattern is 1" in result.reason
    assert fake.calls() == []
    # naming the stored pattern, with auto_resolve true, does not help while the row says no
    claims = {"id": 1, "name": "Pod CrashLoopBackOff", "category": "kubernetes", "priority": 1, "auto_resolve": True}
    same = await stored(pool, request(await seed(pool), [kube("kubectl rollout restart deployment/billing -n payments")],
                                      at=datetime.now(UTC), pattern=claims))  # fmt: skip
    [again] = await handle_request(same, pool=pool, settings=live, policy=ExecutionPolicy.from_settings(live))
    assert again.outcome == "pending_approval" and "does not allow auto_resolve" in again.reason


async def test_a_genuine_record_delivered_again_is_not_refused(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake)
    async with after_a_genuine_crash_loop(live, pool, 2) as p:
        [record] = await read_records(live, live.topic_analysis, 1)
        await send_raw(live, [(live.topic_analysis, record.value, record.key, [])])
        await handled(p, 1)
    assert await pool.fetchval("SELECT count(*) FROM decision_log WHERE decision = 'refused'") == 0
    assert restarts(fake) == ["deployment/checkout -n shop"]


async def send_raw(live, records: list) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=live.kafka_bootstrap_servers)
    await producer.start()
    try:
        for topic, value, key, headers in records:
            await producer.send_and_wait(topic, value, key=key, headers=headers)
    finally:
        await producer.stop()


# --- optional: signed internal topics ----------------------------------------------------------------


async def test_with_a_key_the_service_signs_its_internal_records_and_refuses_unsigned_ones(settings, pool, tmp_path):
    fake = write_fake_kubectl(tmp_path)
    live = live_settings(settings, fake, internal_topic_key="only-the-service-knows")
    # the genuine path still works end to end: every internal record is signed and accepted
    async with after_a_genuine_crash_loop(live, pool, 3) as p:
        assert restarts(fake) == ["deployment/checkout -n shop"]
        assert await pool.fetchval("SELECT count(*) FROM decision_log WHERE decision = 'refused'") == 0
        [analysis] = await read_records(live, live.topic_analysis, 1)
        [pointer] = await read_records(live, live.topic_execution, 1)
        assert dict(analysis.headers)[HEADER].startswith(b"sha256=") and dict(pointer.headers)[HEADER].startswith(b"sha256=")
        # the same bytes without the signature, and each signature on the other topic: refused unread
        await send_raw(live, [
            (live.topic_analysis, analysis.value, analysis.key, []),
            (live.topic_execution, pointer.value, pointer.key, []),
            (live.topic_execution, analysis.value, analysis.key, list(analysis.headers)),
            (live.topic_analysis, pointer.value, pointer.key, [(HEADER, b"sha256=00")]),
        ])  # fmt: skip
        await handled(p, 2, 2)
    reasons = [r["reason"] for r in await pool.fetch("SELECT reason FROM decision_log WHERE decision = 'refused' ORDER BY id")]
    assert len(reasons) == 4
    assert sum("carries no x-elk-signature" in r for r in reasons) == 2
    assert sum("is not the service's signature" in r for r in reasons) == 2
    assert restarts(fake) == ["deployment/checkout -n shop"]
    assert await pool.fetchval("SELECT count(*) FROM execution_requests") == 1
