"""The ingest stage through a real broker and a real PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from elk_resolver.events.contracts import DeadLetterHeaders
from streams.ingest import build_ingest
from tests.support.polling import wait_for

SECRET = "s3cr3t-Plant3d-Xq7"


@pytest.fixture
def fast(settings):
    """Small batches and quick retries, so the tests stay short."""
    return settings.model_copy(
        update={
            "batch_max_records": 200,
            "batch_timeout_ms": 20,
            "patterns_refresh_s": 0.2,
            "retry_backoff_initial_s": 0.2,
            "retry_backoff_max_s": 1.0,
            "session_timeout_ms": 6000,
            "heartbeat_interval_ms": 1000,
        }
    )


@pytest.fixture
async def running(fast, pool):
    """Start an ingest stage (stopped at teardown) and wait for its partitions."""
    stages = []

    async def start(settings=None, **kw):
        stage = build_ingest(settings or fast, pool=pool, **kw)
        await stage.start()
        stages.append(stage)
        await wait_for(lambda: stage.ready, timeout=30, what="partitions assigned")
        return stage

    yield start
    for stage in stages:
        await stage.stop()


@pytest.fixture
async def producer(kafka):
    p = AIOKafkaProducer(bootstrap_servers=kafka.bootstrap_servers, linger_ms=5)
    await p.start()
    yield p
    await p.stop()


async def produce(producer, topic, values, *, partition=None, headers=None):
    futures = [
        await producer.send(
            topic, v if isinstance(v, bytes) else orjson.dumps(v), partition=partition, headers=headers
        )
        for v in values
    ]
    await asyncio.gather(*futures)


async def read_topic(bootstrap, topic, *, at_least, timeout=30.0):
    """Every record on ``topic`` once at least ``at_least`` arrived (no group, from the start)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    got = []
    try:
        deadline = time.monotonic() + timeout
        while len(got) < at_least:
            assert time.monotonic() < deadline, f"{len(got)} of {at_least} records on {topic}"
            for rs in (await consumer.getmany(timeout_ms=200)).values():
                got.extend(rs)
    finally:
        await consumer.stop()
    return got


async def total_count(pool):
    return await pool.fetchval("SELECT coalesce(sum(occurrence_count), 0) FROM error_logs")


def error_event(i, kind):
    return {
        "@timestamp": f"2024-05-01T10:{i // 60 % 60:02d}:{i % 60:02d}Z",
        "message": f"upstream {kind} failed after {i} ms",
        "log": {"level": "error"},
        "error": {"type": f"Kind{kind}"},
        "event": {"hash": f"evt-{kind}-{i}"},
        "service": {"name": "svc"},
    }


async def test_thousand_events_of_five_errors_make_five_rows(running, fast, producer, pool, kafka):
    stage = await running()
    await produce(producer, fast.topic_raw, [error_event(i, i % 5) for i in range(1000)])
    await wait_for(lambda: total_count(pool), timeout=60, what="1000 occurrences")
    await wait_for(lambda: stage.metrics.events_in >= 1000, timeout=30, what="all committed")
    rows = await pool.fetch("SELECT error_type, occurrence_count FROM error_logs ORDER BY error_type")
    assert [tuple(r) for r in rows] == [(f"Kind{k}", 200) for k in range(5)]
    assert await pool.fetchval("SELECT count(*) FROM error_occurrences") == 1000
    analysis = await read_topic(kafka.bootstrap_servers, fast.topic_analysis, at_least=5)
    by_hash = {}
    for rec in analysis:
        event = orjson.loads(rec.value)
        assert rec.key.decode() == event["hash_signature"]
        by_hash.setdefault(event["hash_signature"], 0)
        by_hash[event["hash_signature"]] += event["new_occurrences"]
    assert sorted(by_hash.values()) == [200] * 5


async def test_each_bad_input_goes_to_the_dlq_and_the_good_around_it_are_stored(
    running, fast, producer, pool, kafka
):
    settings = fast.model_copy(update={"max_record_bytes": 4096})
    await running(settings)
    bad = [
        (b"plain text, not json", "not_json"),
        (b'"just a string"', "not_object"),
        (b'{"level": "error", "host": "h"}', "no_message"),
        (b'{"message": "' + b"y" * 5000 + b'"}', "too_large"),
        (b'{"message": "caf\xe9 broken"}', "invalid_utf8"),
    ]
    values = []
    for i, (value, _) in enumerate(bad):
        values += [error_event(2 * i, "good"), value]
    values.append(error_event(99, "good"))
    await produce(producer, settings.topic_raw, values, partition=0)
    dead = await read_topic(kafka.bootstrap_servers, settings.topic_dlq, at_least=5)
    assert len(dead) == 5
    by_reason = {dict(r.headers)[DeadLetterHeaders.REASON].decode(): r for r in dead}
    for i, (value, reason) in enumerate(bad):
        rec = by_reason[reason]
        headers = dict(rec.headers)
        assert rec.value == value
        assert headers[DeadLetterHeaders.TOPIC].decode() == settings.topic_raw
        assert headers[DeadLetterHeaders.PARTITION] == b"0"
        assert headers[DeadLetterHeaders.OFFSET] == str(2 * i + 1).encode()
    await wait_for(lambda: total_count(pool), timeout=30)
    await wait_for(
        lambda: pool.fetchval("SELECT count(*) = 6 FROM error_occurrences"), timeout=30, what="6 good events"
    )


async def test_planted_secret_appears_nowhere(running, fast, producer, pool, kafka):
    await running()
    event = error_event(1, "auth")
    event["message"] = f"login failed password={SECRET} url=postgres://app:{SECRET}@db:5432/x"
    event["error"]["stack_trace"] = f"AuthError: token={SECRET}\n\tat a.B.c(B.java:1)"
    event["http"] = {"request": {"headers": {"Authorization": f"Bearer {SECRET}"}}, "api_key": SECRET}
    event["kubernetes"] = {"namespace": "shop", "pod": {"name": "api"}}
    not_json = f"garbage apikey={SECRET} here".encode()
    await produce(producer, fast.topic_raw, [event, not_json], partition=1)
    await wait_for(lambda: total_count(pool), timeout=30)
    analysis = await read_topic(kafka.bootstrap_servers, fast.topic_analysis, at_least=1)
    dead = await read_topic(kafka.bootstrap_servers, fast.topic_dlq, at_least=1)
    for rec in analysis + dead:
        assert SECRET.encode() not in (rec.value or b"")
        assert all(SECRET.encode() not in v for _, v in rec.headers)
    assert b"***" in dead[0].value
    for table in ("error_logs", "error_occurrences"):
        dump = await pool.fetchval(f"SELECT string_agg(row_to_json(t)::text, '') FROM {table} t")
        assert SECRET not in dump


async def test_pattern_inserted_while_running_classifies_the_next_events(running, fast, producer, pool):
    stage = await running()
    await produce(producer, fast.topic_raw, [{"message": "frobnicator jammed at 7", "level": "error"}])
    await wait_for(lambda: pool.fetchval("SELECT error_type FROM error_logs"), timeout=30)
    assert await pool.fetchval("SELECT error_type FROM error_logs") == "unclassified"
    reloads = stage.patterns.reloads
    await pool.execute(
        "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category, priority, auto_resolve) "
        "VALUES ('Frobnicator', 'frobnicator jammed', 'mechanical', 4, false)"
    )
    await wait_for(lambda: stage.patterns.reloads > reloads, timeout=10, what="pattern reload")
    await produce(producer, fast.topic_raw, [{"message": "frobnicator jammed at 8", "level": "warn"}])
    await wait_for(
        lambda: pool.fetchval("SELECT count(*) FROM error_logs WHERE error_type = 'mechanical'"),
        timeout=30,
        what="classified by the new pattern",
    )


async def test_pathological_regex_does_not_stall_the_consumer(running, fast, producer, pool):
    await pool.execute(
        "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category, priority) "
        "VALUES ('evil', '(a+)+$', 'evil', 1)"
    )
    await running()
    long = {"message": "a" * 100_000 + "!", "level": "error"}
    await produce(producer, fast.topic_raw, [long] + [error_event(i, "after") for i in range(50)], partition=0)
    await wait_for(
        lambda: pool.fetchval("SELECT coalesce(sum(occurrence_count), 0) = 51 FROM error_logs"),
        timeout=20,
        what="the long event and the 50 after it",
    )


async def test_database_stopped_for_ten_seconds_loses_nothing(running, fast, producer, pool, postgres):
    if not postgres.controllable:
        pytest.skip("PostgreSQL is not under the test's control")
    stage = await running()
    total = 600

    async def feed():
        for start in range(0, total, 20):
            await produce(producer, fast.topic_raw, [error_event(i, i % 7) for i in range(start, start + 20)])
            await asyncio.sleep(0.05)

    feeder = asyncio.create_task(feed())
    await wait_for(lambda: total_count(pool), timeout=30, what="first events stored")
    await asyncio.to_thread(postgres.stop)
    try:
        await asyncio.sleep(10)  # the outage itself: the scenario, not a wait for a result
    finally:
        await asyncio.to_thread(postgres.start)
    await feeder
    await wait_for(
        lambda: pool.fetchval("SELECT coalesce(sum(occurrence_count), 0) = $1::bigint FROM error_logs", total),
        timeout=60,
        interval=0.2,
        what="every event stored",
    )
    await wait_for(lambda: stage.metrics.events_in >= total, timeout=30, what="all offsets committed")
    assert await pool.fetchval("SELECT count(*) FROM error_occurrences") == total
    assert stage.metrics.db_retries > 0


async def _committed(bootstrap, group, topic) -> int:
    """Offsets the group committed on ``topic``, summed (a consumer that never subscribes:
    asking does not join the group)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # fetches the metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        total = 0
        for p in partitions:
            total += await consumer.committed(TopicPartition(topic, p)) or 0
        return total
    finally:
        await consumer.stop()


async def test_sigkill_after_db_commit_before_kafka_commit_keeps_counts_exact(fast, producer, pool, kafka):
    total = 500
    await produce(producer, fast.topic_raw, [error_event(i, i % 5) for i in range(total)])
    env = dict(os.environ)
    env.update(
        {
            "ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "ELK_RESOLVER_DATABASE_URL": fast.database_url,
            "ELK_RESOLVER_TOPIC_RAW": fast.topic_raw,
            "ELK_RESOLVER_TOPIC_ANALYSIS": fast.topic_analysis,
            "ELK_RESOLVER_TOPIC_DLQ": fast.topic_dlq,
            "ELK_RESOLVER_TOPIC_EXECUTION": fast.topic_execution,
            "ELK_RESOLVER_TOPIC_RESULTS": fast.topic_results,
            "ELK_RESOLVER_TOPIC_APPROVALS": fast.topic_approvals,
            "ELK_RESOLVER_TOPIC_PARTITIONS": "4",
            "ELK_RESOLVER_GROUP_INGEST": fast.group_ingest,
            "ELK_RESOLVER_SESSION_TIMEOUT_MS": "6000",
            "ELK_RESOLVER_HEARTBEAT_INTERVAL_MS": "1000",
            "ELK_RESOLVER_BATCH_MAX_RECORDS": "100",
            "ELK_RESOLVER_LOG_LEVEL": "WARNING",
        }
    )
    cmd = [sys.executable, "-m", "tests.support.ingest_process"]
    killed = await asyncio.to_thread(
        subprocess.run, [*cmd, "--kill-after-db-commit"], env=env, timeout=60, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()[-2000:]
    stored_before = await total_count(pool)
    assert 0 < stored_before < total  # one batch reached the database ...
    assert await _committed(kafka.bootstrap_servers, fast.group_ingest, fast.topic_raw) == 0  # ... no offset

    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        await wait_for(
            lambda: _all_committed(kafka.bootstrap_servers, fast.group_ingest, fast.topic_raw, total),
            timeout=60,
            interval=0.3,
            what="every offset committed by the restarted consumer",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.to_thread(proc.wait, 30)
    rows = await pool.fetch("SELECT error_type, occurrence_count FROM error_logs ORDER BY error_type")
    assert [tuple(r) for r in rows] == [(f"Kind{k}", 100) for k in range(5)]
    assert await pool.fetchval("SELECT count(*) FROM error_occurrences") == total


async def _all_committed(bootstrap, group, topic, total) -> bool:
    return await _committed(bootstrap, group, topic) == total


async def test_two_copies_run_one_merge_pass_and_apply_its_aliases(running, fast, producer, pool):
    """Two ingest copies in one group, each with its merge-pass process (one pass at a time:
    the advisory lock): both reload the aliases the pass wrote, and new values of the merged
    family count on one row whichever copy reads them. No pass runs in a copy's own process."""
    settings = fast.model_copy(update={"merge_pass_every_s": 0.5})
    one = await running(settings)
    two = await running(settings)
    tenants = ["acme", "globex", "initech", "umbrella", "hooli", "wayne", "stark", "wonka", "tyrell", "cyberdyne"]

    def event(i, tenant):
        return {"message": f"quota exceeded for {tenant}-eu tenant", "log": {"level": "error"},
                "event": {"hash": f"quota-{i}"}, "@timestamp": f"2024-05-01T10:00:{i:02d}Z"}

    await produce(producer, fast.topic_raw, [event(i, t) for i, t in enumerate(tenants[:6])])
    await wait_for(lambda: pool.fetchval("SELECT count(*) = 6 FROM error_logs"), timeout=30, what="six rows")
    await wait_for(
        lambda: pool.fetchval("SELECT count(*) = 5 FROM error_logs WHERE merged_into IS NOT NULL"),
        timeout=30,
        what="the merge pass",
    )
    generation = await pool.fetchval("SELECT alias_generation FROM fingerprint_state")
    await wait_for(lambda: one.aliases._generation == generation and two.aliases._generation == generation,
                   timeout=30, what="both copies reloaded the aliases")
    assert one.aliases.passes + two.aliases.passes == 0  # off the ingest path
    assert one.aliases.worker.starts == two.aliases.worker.starts == 1
    await produce(producer, fast.topic_raw, [event(10 + i, t) for i, t in enumerate(tenants[6:])] * 3)
    await wait_for(lambda: pool.fetchval("SELECT sum(occurrence_count) = 10 FROM error_logs"), timeout=30,
                   what="the new values counted")
    assert await pool.fetchval("SELECT count(*) FROM error_logs") == 6  # no new row
    assert await pool.fetchval("SELECT occurrence_count FROM error_logs ORDER BY id LIMIT 1") == 10


def test_prepare_slices_follow_the_cost_of_a_record():
    """A slice holds the event loop for about 2 ms whatever a record costs: slow records
    (a loaded machine, large events) make it shorter, cheap ones longer, within bounds."""
    from streams.ingest import next_slice

    assert next_slice(100, 0.025) == 8  # 250 µs a record: 8 records, not 100 (25 ms)
    assert next_slice(16, 0.0008) == 32  # cheap records: grows, at most doubling per step
    assert next_slice(200, 0.0001) == 200  # never past the cap
    assert next_slice(1, 0.5) == 1  # one huge record: still one at a time
    size = 16
    for _ in range(20):  # settles where a slice costs ~2 ms (here 100 µs a record)
        size = next_slice(size, size * 0.0001)
    assert size == 20


async def test_fetch_wait_is_short_while_records_flow_and_back_to_the_batch_timeout_when_quiet(
    running, fast, producer, pool
):
    """Tansu answers a fetch only at the end of its wait, so while records flow the stage asks
    with a short wait (a record waits ~5 ms in the broker, not batch_timeout_ms); once the topic
    is quiet it asks with batch_timeout_ms again, so an idle copy does not poll every 5 ms."""
    settings = fast.model_copy(update={"batch_timeout_ms": 100})
    stage = await running(settings)
    fetch_wait = lambda: stage._consumer._fetcher._fetch_max_wait_ms  # noqa: E731
    assert fetch_wait() == 100
    sent = 0
    flowing = True

    async def keep_sending():
        nonlocal sent
        while flowing:
            await produce(producer, settings.topic_raw, [error_event(sent, "flow")])
            sent += 1
            await asyncio.sleep(0.005)

    sender = asyncio.create_task(keep_sending())
    try:
        await wait_for(lambda: fetch_wait() == 5, timeout=30, what="the short fetch wait while records flow")
    finally:
        flowing = False
        await sender
    await wait_for(lambda: fetch_wait() == 100, timeout=30, what="batch_timeout_ms again once the topic is quiet")
    await wait_for(lambda: total_count(pool), timeout=30, what="the first occurrences")
    await wait_for(lambda: stage.metrics.events_in >= sent, timeout=30, what="every record ingested")
    assert await total_count(pool) == sent


async def test_batches_queued_behind_each_other_are_all_committed(running, fast, producer, pool, kafka):
    """Batches of ten records arrive faster than their acknowledgements: a batch with more
    behind it leaves its commit to the last of them, and the last one always commits, so
    every offset ends up committed after the rows and the analysis events."""
    settings = fast.model_copy(update={"batch_max_records": 10})
    stage = await running(settings)
    total = 600
    await produce(producer, settings.topic_raw, [error_event(i, i % 7) for i in range(total)])
    await wait_for(
        lambda: _all_committed(kafka.bootstrap_servers, settings.group_ingest, settings.topic_raw, total),
        timeout=60,
        what="every offset committed",
    )
    assert await total_count(pool) == total
    assert stage.metrics.batches >= total // 10
