"""Repeats of an error on an object fold into its open request (issue 14, migration 0060).

During an incident most events repeat errors already seen. Each repeat used to become a new
request the execute stage had to decide again (3,500 decisions for 481 errors in the
benchmark), so the first decision about a new error waited behind thousands of redundant ones.
Against real PostgreSQL and a real broker.
"""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from aiokafka import AIOKafkaProducer
from faststream.kafka import KafkaBroker

from elk_resolver.actions.policy import ExecutionPolicy
from handlers.analyze import Repeats
from handlers.execute import handle_request
from streams.analyze import build_analyze
from tests.support.polling import wait_for
from tests.test_analyze import CRASHLOOP, PATTERNS, catalogue, new_event, read_records, run, stored_by_ingest, tuned  # noqa: F401

CONTEXT = {"namespace": "payments", "deployment": "api"}


async def decisions(pool) -> list[str]:
    return [r["decision"] for r in await pool.fetch("SELECT decision FROM decision_log ORDER BY id")]


async def test_repeats_of_one_error_on_one_object_make_one_request_and_one_decision(pool, catalogue, tuned):
    dry = tuned.model_copy(update={"execution_mode": "dry-run"})
    policy = ExecutionPolicy.from_settings(dry)
    first = await new_event(pool, CRASHLOOP, pattern=PATTERNS["Pod CrashLoopBackOff"], context=CONTEXT)
    opened = await run(first, pool, catalogue, dry)
    assert opened.request is not None and opened.request.target_key == "k8s:payments/deployment/api"

    # five repeats before the execute stage decided: counted on the open request
    for i in range(5):
        again = first.model_copy(update={"trigger_event_id": f"evt-{i + 2}", "event_time": datetime.now(UTC)})
        result = await run(again, pool, catalogue, dry)
        assert result.request is None and result.folded_into == opened.request.request_id
    [decided] = await handle_request(opened.request.pointer(), pool=pool, settings=dry, policy=policy)
    assert decided.outcome == "dry_run"

    # ten more after the decision, inside the object's cooldown: counted, not decided again
    for i in range(10):
        again = first.model_copy(update={"trigger_event_id": f"evt-late-{i}", "event_time": datetime.now(UTC)})
        assert (await run(again, pool, catalogue, dry)).folded_into == opened.request.request_id

    row = await pool.fetchrow("SELECT count(*) OVER () AS n, repeats, open_until FROM planned_requests")
    assert (row["n"], row["repeats"]) == (1, 15)
    assert await decisions(pool) == ["dry_run"]

    # after the window a repeat is a new request, judged in full (here: the cooldown skips it)
    later = datetime.now(UTC) + timedelta(seconds=dry.cooldown_s + 1)
    fresh = first.model_copy(update={"trigger_event_id": "evt-after", "event_time": later})
    after = await run(fresh, pool, catalogue, dry, now=later)
    assert after.request is not None and after.request.request_id != opened.request.request_id


async def test_a_live_event_never_folds_into_a_history_request_and_other_objects_get_their_own(pool, catalogue, tuned):
    first = await new_event(pool, CRASHLOOP, pattern=PATTERNS["Pod CrashLoopBackOff"], context=CONTEXT, replay=True)
    history = await run(first, pool, catalogue, tuned)
    assert history.request is not None and history.request.replay
    live = first.model_copy(update={"trigger_event_id": "evt-live", "replay": False})
    result = await run(live, pool, catalogue, tuned)
    assert result.request is not None and not result.request.replay
    other = first.model_copy(
        update={"trigger_event_id": "evt-other", "replay": False, "context": first.context.model_copy(update={"deployment": "billing"})}
    )
    message = CRASHLOOP.replace("api-7d9c8b6f5-x2kzq", "billing-7d9c8b6f5-x2kzq")
    other = other.model_copy(update={"error_message": message})
    own = await run(other, pool, catalogue, tuned)
    assert own.request is not None and own.request.target_key == "k8s:payments/deployment/billing"
    assert await pool.fetchval("SELECT count(*) FROM planned_requests") == 3


async def test_a_redelivered_repeat_is_not_counted_twice(pool, catalogue, tuned):
    first = await new_event(pool, CRASHLOOP, pattern=PATTERNS["Pod CrashLoopBackOff"], context=CONTEXT)
    opened = await run(first, pool, catalogue, tuned, repeats=Repeats(0, [10], [1]))
    again = first.model_copy(update={"trigger_event_id": "evt-2"})
    for _ in range(3):  # the same analysis records (partition 0, offsets 11-12) delivered three times
        result = await run(again, pool, catalogue, tuned, repeats=Repeats(0, [12, 11], [1, 1]))
        assert result.folded_into == opened.request.request_id
    assert await pool.fetchval("SELECT repeats FROM planned_requests") == 2
    # the opening event redelivered: its own request again (stored, published again), no count
    assert (await run(first, pool, catalogue, tuned, repeats=Repeats(0, [10], [1]))).request.request_id == opened.request.request_id
    assert await pool.fetchval("SELECT repeats FROM planned_requests") == 2


async def test_a_batch_of_repeats_on_kafka_becomes_one_request_with_its_count(pool, catalogue, tuned):
    first = await new_event(pool, CRASHLOOP, pattern=PATTERNS["Pod CrashLoopBackOff"], context=CONTEXT)
    events = [first.model_copy(update={"trigger_event_id": f"evt-{i}"}) for i in range(40)]
    await stored_by_ingest(pool, *events)
    async with KafkaBroker(tuned.kafka_bootstrap_servers) as broker:
        stage = build_analyze(tuned, pool=pool, broker=broker)
        await stage.start()
        try:
            await wait_for(lambda: stage.ready, timeout=30, what="stage ready")
            producer = AIOKafkaProducer(bootstrap_servers=tuned.kafka_bootstrap_servers)
            await producer.start()
            try:
                await asyncio.gather(*[
                    await producer.send(tuned.topic_analysis, e.model_dump_json().encode(), key=e.hash_signature.encode())
                    for e in events
                ])  # fmt: skip
            finally:
                await producer.stop()
            await wait_for(lambda: stage.handled == len(events), timeout=30, what="every record handled")
            [record] = await read_records(tuned, tuned.topic_execution, 1)
        finally:
            await stage.stop()
    [row] = await pool.fetch("SELECT request_id, repeats FROM planned_requests")
    assert row["repeats"] == len(events) - 1
    assert record.value and row["request_id"] in record.value.decode()
    assert stage.published == 1
