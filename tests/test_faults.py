"""Fault injection (issue 12): what the service does while something around it breaks.

Each test injects one fault while events flow and asserts the sums afterwards (every event
sent is stored or dead-lettered, none twice) and the health signals during the fault. The
faults: SIGKILL during ingest, PostgreSQL stopped and frozen (SIGSTOP), the broker restarted
(it forgets its topics), ``error_patterns`` rows deleted and edited live, partitions dropped
live, bad records during a replay.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from elk_resolver.events.contracts import DeadLetterHeaders
from elk_resolver.kafka.embedded import EmbeddedKafka
from elk_resolver.kafka.security import client_options
from elk_resolver.kafka.topics import ensure_topics
from elk_resolver.operations.replay import replay
from streams.ingest import partition_by_hash
from tests.support.polling import wait_for
from tests.support.run_process import RunProcess
from tests.test_ingest_stream import error_event, fast, produce, producer, read_topic, running, total_count  # noqa: F401


def varied_event(i, kind):
    """An event of pattern ``kind`` whose error is new every few events (new rows are what
    refer to a pattern row, so they are what a deleted row breaks)."""
    event = error_event(i, kind)
    word = "".join(chr(97 + int(d)) for d in str(i // 3))
    event["message"] = f"upstream {kind} failed after {i} ms in step {word}"
    return event


async def dlq_count(kafka, topic) -> int:
    return len(await read_topic(kafka.bootstrap_servers, topic, at_least=0, timeout=5))


async def test_pattern_rows_deleted_and_edited_live_never_dead_letter_valid_events(
    running, fast, producer, pool, kafka
):
    ids = []
    for i in range(6):
        ids.append(await pool.fetchval(
            "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category, priority) "
            "VALUES ($1, $2, $3, 2) RETURNING id", f"live-{i}", f"upstream {i} failed", f"cat{i}"))
    # a long refresh interval: the stage keeps the deleted rows cached until a write fails
    stage = await running(fast.model_copy(update={"patterns_refresh_s": 60.0}))
    total = 1200
    sent = 0

    async def feed():
        nonlocal sent
        for start in range(0, total, 50):
            await produce(producer, fast.topic_raw,
                          [varied_event(i, i % 6) for i in range(start, start + 50)], partition=start // 50 % 4)
            sent += 50
            await asyncio.sleep(0.02)

    feeder = asyncio.create_task(feed())
    await wait_for(lambda: total_count(pool), timeout=30, what="first events stored")
    # delete half the patterns and edit the rest while events flow
    for n, pattern_id in enumerate(ids):
        if n % 2:
            await pool.execute("DELETE FROM error_patterns WHERE id = $1", pattern_id)
        else:
            await pool.execute("UPDATE error_patterns SET error_category = error_category || '-edited', "
                               "pattern_regex = pattern_regex || '.*' WHERE id = $1", pattern_id)
        await asyncio.sleep(0.05)  # the scenario: edits spread over the stream
    await feeder
    await wait_for(
        lambda: pool.fetchval("SELECT coalesce(sum(occurrence_count), 0) = $1::bigint FROM error_logs", total),
        timeout=60, interval=0.2, what="every event stored",
    )
    await wait_for(lambda: stage.metrics.events_in >= total, timeout=30, what="all offsets committed")
    assert await pool.fetchval("SELECT count(*) FROM error_occurrences") == total
    assert stage.metrics.dead_lettered == 0
    assert await dlq_count(kafka, fast.topic_dlq) == 0
    # the deleted patterns' errors were classified again, without the deleted rows
    assert await pool.fetchval("SELECT count(*) FROM error_logs WHERE pattern_id IS NOT NULL "
                               "AND pattern_id NOT IN (SELECT id FROM error_patterns)") == 0


async def test_partitions_dropped_live_are_created_again_not_dead_lettered(running, fast, producer, pool, kafka):
    stage = await running()
    now = datetime.now(UTC).isoformat()
    await produce(producer, fast.topic_raw, [{**error_event(i, i % 3), "@timestamp": now} for i in range(30)])
    await wait_for(lambda: pool.fetchval("SELECT count(*) = 30 FROM error_occurrences"), timeout=30)
    # an operator (as the owner) drops this month's partition while the stage has it cached
    month = await pool.fetchval("SELECT to_char(max(occurred_at), '\"y\"YYYY\"m\"MM') FROM error_occurrences")
    await pool.execute(f"DROP TABLE error_occurrences_{month}")
    await produce(producer, fast.topic_raw, [{**error_event(i, i % 3), "@timestamp": now} for i in range(30, 60)])
    await wait_for(lambda: pool.fetchval("SELECT count(*) = 30 FROM error_occurrences"), timeout=30,
                   what="the 30 later events stored in a re-created partition")
    await wait_for(lambda: stage.metrics.events_in >= 60, timeout=30)
    assert stage.metrics.dead_lettered == 0
    assert await dlq_count(kafka, fast.topic_dlq) == 0


# --- faults around a `run` process --------------------------------------------------------------

FAST_RUN = {
    "topic_check_interval_s": "1", "lag_interval_s": "1", "stall_after_s": "6",
    "retry_backoff_initial_s": "0.2", "retry_backoff_max_s": "1", "patterns_refresh_s": "0.5",
    "db_command_timeout_s": "3", "db_connect_timeout_s": "3", "shutdown_timeout_s": "10",
}


class Watcher:
    """Polls a run process's /ready in the background and keeps what it saw."""

    def __init__(self, run) -> None:
        self.run = run
        self.seen: list[tuple[float, int | None, dict]] = []
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            answer = await self.run.ready()
            self.seen.append((time.monotonic(), *(answer or (None, {}))))
            await asyncio.sleep(0.2)

    def not_ready_causes(self) -> list[str]:
        return [" ".join(body.get("causes", {}).values()) for _, status, body in self.seen if status != 200]

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def send(bootstrap, topic, values) -> int:
    async with _producer(bootstrap) as p:
        await produce(p, topic, values)
    return len(values)


@contextlib.asynccontextmanager
async def _producer(bootstrap):
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, request_timeout_ms=10000, max_request_size=8 << 20)
    await p.start()
    try:
        yield p
    finally:
        await p.stop()


def stored(pool, n):
    return lambda: pool.fetchval("SELECT count(*) = $1::bigint FROM error_occurrences", n)


async def test_broker_restarted_without_its_topics_heals_itself(settings, pool, tmp_path):
    broker = EmbeddedKafka()
    broker.start()
    try:
        # 3 partitions, where the broker auto-creates 4: only topics the service created again
        # have the configured count
        s = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers, "topic_partitions": 3})
        await ensure_topics(client_options(s), s.topics(), partitions=s.topic_partitions)
        with RunProcess(s, tmp_path, "ingest", **FAST_RUN) as run:
            await wait_for(lambda: _status(run, 200), timeout=60, interval=0.2, what="ready")
            sent = await send(s.kafka_bootstrap_servers, s.topic_raw, [error_event(i, i % 5) for i in range(300)])
            await wait_for(stored(pool, sent), timeout=60, interval=0.2, what="first 300 stored")
            watcher = Watcher(run)
            restarted = time.monotonic()
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)  # same port, no topics, no offsets
            await wait_for(lambda: watcher.not_ready_causes(), timeout=30, what="/ready 503 after the restart")
            # Logstash's producer would write at once; Tansu acknowledges writes to a topic it does
            # not have and keeps nothing (see the README): this test is about the service's
            # side, so it writes once the topics are back
            await wait_for(lambda: _all_topics(s), timeout=30, interval=0.1, what="topics created again")
            sent += await send(s.kafka_bootstrap_servers, s.topic_raw,
                               [error_event(i, i % 5) for i in range(300, 600)])
            await wait_for(stored(pool, sent), timeout=90, interval=0.2, what="events after the restart stored")
            recovered = time.monotonic() - restarted
            await wait_for(lambda: _status(run, 200), timeout=60, interval=0.2, what="ready again")
            await watcher.stop()
            causes = watcher.not_ready_causes()
            print(f"\nbroker restart: sent {sent}, stored {await _occurrences(pool)}, recovered in {recovered:.1f}s; "
                  f"not-ready answers: {len(causes)}, e.g. {causes[0]!r}")
            assert await pool.fetchval("SELECT sum(occurrence_count) FROM error_logs") == sent
            lines = run.log_lines()
            # the service's own clients never ask the broker to create a topic (it would use its
            # own count, 4): only the topic watch created them again, with the configured count
            assert await _all_topics(s) == {t: 3 for t in s.topics()}
            # one line for the fault, not one per record or per commit
            assert sum("topics missing" in line for line in lines) == 1, [x for x in lines if "missing" in x]
            errors = [line for line in lines if '"level":"ERROR"' in line]
            assert len(errors) <= 30, errors[-10:]
            run.terminate()
            assert await asyncio.to_thread(run.proc.wait, 30) == 0
            await run.aclose()
        dead = await read_topic(s.kafka_bootstrap_servers, s.topic_dlq, at_least=0, timeout=3)
        assert dead == []
    finally:
        broker.stop()


async def _all_topics(s) -> dict[str, int] | None:
    """Partitions of each of the service's topics, or None while one is missing (asked
    without letting the broker create one)."""
    from elk_resolver.kafka.offsets import probe_consumer, start_or_close
    from elk_resolver.kafka.topics import describe_topics

    probe = probe_consumer(client_options(s))
    try:
        await start_or_close(probe)
    except Exception:  # noqa: BLE001 - the broker is not back yet
        return None
    try:
        found = await describe_topics(probe._client, s.topics())  # noqa: SLF001
    finally:
        await probe.stop()
    return {t: st.partitions for t, st in found.items()} if len(found) == len(s.topics()) else None


async def _status(run, code) -> bool:
    answer = await run.ready()
    return answer is not None and answer[0] == code


async def _occurrences(pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM error_occurrences")


# --- bad records during a replay ------------------------------------------------------------------


async def test_replay_goes_past_records_postgresql_refuses_and_keeps_large_and_keyed_records(settings, pool, kafka):
    """A record PostgreSQL refuses used to stop replay (exit 5, no offset) on every rerun; a
    record near ingest's size limit failed on the producer's 1 MB request limit; analysis
    events were spread by the default partitioner instead of by hash."""
    s = settings.model_copy(update={"max_record_bytes": 3 << 20, "batch_max_records": 50})
    # an operator's rule the data breaks: PostgreSQL refuses these rows on their own
    await pool.execute("ALTER TABLE error_logs ADD CONSTRAINT no_poison CHECK (error_message NOT LIKE '%poison%')")
    big = error_event(10_000, 9)
    big["error"]["stack_trace"] = "at x.Y.z(Y.java:1)\n" * 70_000  # ~1.3 MB
    values = [error_event(i, i % 4) for i in range(200)]
    poison_at = [17, 99, 150]
    for i in poison_at:
        values[i]["message"] = f"poison pill {i}"
    values.insert(120, big)
    start = datetime.now(UTC) - timedelta(seconds=5)
    async with _producer(kafka.bootstrap_servers) as p:
        futures = [await p.send(s.topic_raw, orjson.dumps(v), partition=0) for v in values]
        await asyncio.gather(*futures)

    result = await replay(s, pool, since=start)
    assert result.records == len(values)
    assert result.db_rejected == len(poison_at)
    stored = await pool.fetchval("SELECT count(*) FROM error_occurrences")
    assert stored + result.db_rejected == len(values)  # sent = stored + dead-lettered
    assert await pool.fetchval("SELECT count(*) FROM error_logs WHERE length(stack_trace) > 1000000") == 1
    dead = await read_topic(kafka.bootstrap_servers, s.topic_dlq, at_least=len(poison_at))
    offsets = sorted(int(dict(r.headers)[DeadLetterHeaders.OFFSET]) for r in dead)
    expected = sorted(i + (1 if i >= 120 else 0) for i in poison_at)  # the big record sits at 120
    assert offsets == expected
    assert {dict(r.headers)[DeadLetterHeaders.REASON] for r in dead} == {b"db_rejected"}

    again = await replay(s, pool, since=start)  # a rerun goes the same way and counts nothing twice
    assert again.db_rejected == len(poison_at) and again.new_occurrences == 0
    analysis = await read_topic(kafka.bootstrap_servers, s.topic_analysis, at_least=1)
    parts = sorted(await _partitions(kafka.bootstrap_servers, s.topic_analysis))
    for rec in analysis:
        assert rec.partition == partition_by_hash(rec.key, parts, parts)


async def _partitions(bootstrap, topic) -> list[int]:
    async with _producer(bootstrap) as p:
        return sorted(await p.partitions_for(topic))


# --- PostgreSQL stopped, frozen, and SIGTERM while it is down ----------------------------------


class Feeder:
    """Sends error events in a steady trickle until stopped; counts what the broker acked."""

    def __init__(self, bootstrap: str, topic: str) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.sent = 0
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        async with _producer(self.bootstrap) as p:
            while not self._stop.is_set():
                await produce(p, self.topic, [error_event(i, i % 7) for i in range(self.sent, self.sent + 25)])
                self.sent += 25
                await asyncio.sleep(0.1)

    async def stop(self) -> int:
        self._stop.set()
        await self._task
        return self.sent


async def test_database_stopped_and_frozen_pauses_ingest_tells_the_truth_and_loses_nothing(
    settings, pool, kafka, postgres, tmp_path
):
    if not postgres.controllable:
        pytest.skip("PostgreSQL is not under the test's control")
    timings = {}
    with RunProcess(settings, tmp_path, "ingest", **{**FAST_RUN, "stall_after_s": "4"}) as run:
        await wait_for(lambda: _status(run, 200), timeout=60, interval=0.2, what="ready")
        feeder = Feeder(kafka.bootstrap_servers, settings.topic_raw)
        await wait_for(lambda: total_count(pool), timeout=30, what="first events stored")

        # 1. stopped: /ready 503 naming the database, lag grows instead of reading 0
        await asyncio.to_thread(postgres.stop)
        try:
            stopped_ready = await wait_for(lambda: _not_ready(run, "database"), timeout=30, what="503 (database)")
            await wait_for(lambda: _metric_above(run, "elk_resolver_group_lag", 100), timeout=30,
                           what="group lag above 100 while the database is down")
            stalled = await wait_for(lambda: _not_ready(run, "no progress"), timeout=30, what="stall named")
        finally:
            await asyncio.to_thread(postgres.start)
        back = time.monotonic()
        sent = feeder.sent
        await wait_for(lambda: _occurrences_at_least(pool, sent), timeout=90, interval=0.2, what="caught up")
        timings["stopped"] = time.monotonic() - back

        # 2. frozen: every process of the server SIGSTOPped, connections open, nothing answers
        postgres.freeze()
        try:
            frozen_ready = await wait_for(lambda: _not_ready(run, "did not answer in time"), timeout=30,
                                          what="/ready answers 503 (timeout) while frozen")
            await wait_for(lambda: _not_ready(run, "no progress"), timeout=30, what="stall named while frozen")
        finally:
            postgres.thaw()
        back = time.monotonic()
        sent = feeder.sent
        await wait_for(lambda: _occurrences_at_least(pool, sent), timeout=90, interval=0.2, what="caught up")
        timings["frozen"] = time.monotonic() - back

        # 3. SIGTERM while the database is down: the process leaves within its deadline
        await asyncio.to_thread(postgres.stop)
        try:
            await asyncio.sleep(1)  # the scenario: the outage is under way when the signal comes
            term = time.monotonic()
            run.terminate()
            code = await asyncio.to_thread(run.proc.wait, 10 + 10)  # shutdown_timeout_s + slack
            timings["sigterm_exit"] = time.monotonic() - term
        finally:
            await asyncio.to_thread(postgres.start)
        await run.aclose()
    total = await feeder.stop()

    timings["restarted_copy"] = await finish_and_check_sums(settings, pool, kafka, tmp_path, total)
    print(f"\nPostgreSQL faults: sent {total}, stored {total}, dead-lettered 0; caught up after restart "
          f"{timings['stopped']:.1f}s, after thaw {timings['frozen']:.1f}s; SIGTERM with the database down "
          f"exited {code} in {timings['sigterm_exit']:.1f}s; restarted copy finished in "
          f"{timings['restarted_copy']:.1f}s\n  /ready while stopped: {stopped_ready}\n  stalled: {stalled}\n"
          f"  /ready while frozen: {frozen_ready}")
    assert timings["sigterm_exit"] < 10 + 6  # shutdown_timeout_s, and the watchdog's 5 s


async def finish_and_check_sums(settings, pool, kafka, tmp_path, total: int) -> float:
    """A new copy finishes the work; every event sent is stored once (none dead-lettered), the
    group's lag reaches 0, SIGTERM stops it cleanly. Returns the seconds to store everything."""
    with RunProcess(settings, tmp_path, "ingest", name="run-last", **FAST_RUN) as run:
        started = time.monotonic()
        await wait_for(lambda: pool.fetchval("SELECT count(*) = $1::bigint FROM error_occurrences", total),
                       timeout=90, interval=0.2, what="every event stored")
        elapsed = time.monotonic() - started
        await wait_for(lambda: _metric_at_most(run, "elk_resolver_group_lag", 0), timeout=30,
                       what="group lag 0 once everything is committed")
        run.terminate()
        assert await asyncio.to_thread(run.proc.wait, 20) == 0
        await run.aclose()
    assert await pool.fetchval("SELECT sum(occurrence_count) FROM error_logs") == total
    assert await read_topic(kafka.bootstrap_servers, settings.topic_dlq, at_least=0, timeout=3) == []
    return elapsed


async def _not_ready(run, word: str):
    answer = await run.ready()
    if answer is None or answer[0] == 200:
        return None
    text = orjson.dumps(answer[1]).decode()
    return text if word in text else None


async def _metric_above(run, name: str, floor: float) -> bool:
    value = await run.metric(name, stage="ingest")
    return value is not None and value > floor


async def _occurrences_at_least(pool, n: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM error_occurrences") >= n


# --- SIGKILL during ingest ---------------------------------------------------------------------


async def test_sigkill_during_ingest_loses_nothing_and_counts_nothing_twice(settings, pool, kafka, tmp_path):
    """Three copies killed with SIGKILL mid-stream, one after the other, while events flow."""
    feeder = Feeder(kafka.bootstrap_servers, settings.topic_raw)
    recoveries = []
    lag_seen = []
    try:
        for n in range(3):
            with RunProcess(settings, tmp_path, "ingest", name=f"run-{n}", **FAST_RUN) as run:
                started = time.monotonic()
                await wait_for(lambda: _status(run, 200), timeout=60, interval=0.2, what="ready")
                sent = feeder.sent
                await wait_for(lambda: _occurrences_at_least(pool, sent), timeout=60, interval=0.2,
                               what="caught up with what was sent while no copy ran")
                recoveries.append(time.monotonic() - started)
                lag = await run.metric("elk_resolver_group_lag", stage="ingest")
                lag_seen.append(lag)
                run.proc.kill()  # SIGKILL: no drain, no commit
                run.proc.wait()
                await run.aclose()
    finally:
        total = await feeder.stop()
    await finish_and_check_sums(settings, pool, kafka, tmp_path, total)
    print(f"\nSIGKILL x3: sent {total}, stored {total} once each, dead-lettered 0; start to caught-up per copy "
          f"{', '.join(f'{r:.1f}s' for r in recoveries)}; last group lag reading before each kill {lag_seen}")


async def _metric_at_most(run, name: str, ceiling: float) -> bool:
    value = await run.metric(name, stage="ingest")
    return value is not None and value <= ceiling
