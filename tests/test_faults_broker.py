"""Broker faults of round three (issue 22): a commit that fails because the broker restarted
under a batch, a broker restarted empty on the same port while copies run, topics re-created
or truncated under the consumers, and topics auto-created with the broker's partition count."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys

from aiokafka import TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st
from faststream.kafka import KafkaBroker, KafkaMessage

from elk_resolver.kafka.embedded import EmbeddedKafka
from elk_resolver.kafka.security import client_options
from elk_resolver.kafka.topics import ensure_topics
from streams.record_worker import ManualAckSubscription
from streams.rewind import Rewinds
from tests.support.fault_trial import FAST_RUN, counted_twice, embedded_broker_restart, event
from tests.support.polling import wait_for
from tests.support.run_process import RunProcess, run_once
from tests.test_faults import _status, send


async def test_a_commit_refused_after_a_broker_restart_is_logged_with_the_batch_not_an_attribute_error(
    settings, caplog
):
    """The analysis stage's batches are tuples of records: logging a failed commit read
    ``.topic`` of the tuple and raised AttributeError instead of saying which records."""
    broker = EmbeddedKafka()
    broker.start()
    try:
        s = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
        await ensure_topics(client_options(s), [s.topic_analysis], partitions=1)
        faststream = KafkaBroker(s.kafka_bootstrap_servers)
        subscription = ManualAckSubscription("analyze", s, faststream, topic=s.topic_analysis, group_id=s.group_analyze)
        got, restarted, done = asyncio.Event(), asyncio.Event(), asyncio.Event()
        failures: list[BaseException] = []

        async def on_batch(msg: KafkaMessage) -> None:
            got.set()
            await restarted.wait()
            try:
                await subscription.ack(msg)
            except BaseException as exc:  # what the stage would have raised
                failures.append(exc)
                raise
            finally:
                done.set()

        await faststream.start()
        try:
            await subscription.start(on_batch, max_records=10)
            await subscription.wait_ready()
            await send(s.kafka_bootstrap_servers, s.topic_analysis, [{"n": i} for i in range(3)])
            await asyncio.wait_for(got.wait(), 30)
            await asyncio.to_thread(broker.stop)
            await asyncio.to_thread(broker.start)  # same port: the group and its members are gone
            with caplog.at_level(logging.WARNING, logger="elk_resolver.streams.analyze"):
                restarted.set()
                await asyncio.wait_for(done.wait(), 60)
            assert failures == []
            lines = [r.getMessage() for r in caplog.records if r.name == "elk_resolver.streams.analyze"]
            assert any(f"commit after {s.topic_analysis}[0]@0-2 failed" in line for line in lines), lines
        finally:
            await subscription.stop()
            await faststream.stop()
    finally:
        broker.stop()


async def test_a_topic_deleted_and_created_again_under_a_copy_is_read_from_its_start_once_said(
    settings, pool, tmp_path
):
    """An operator deletes and re-creates the raw topic while a copy consumes it (what a broker
    restarted without its data looks like to a consumer): the copy's positions belong to the
    old log, and the new log's first records sat below them. The topic's new id is noticed,
    the copy reads the new log from its start and says so in one line; every event on the new
    log is stored once."""
    broker = EmbeddedKafka()
    broker.start()
    try:
        s = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers, "topic_partitions": 2})
        await ensure_topics(client_options(s), s.topics(), partitions=2)
        with RunProcess(s, tmp_path, "ingest", **FAST_RUN) as run:
            await wait_for(lambda: _status(run, 200), timeout=60, interval=0.2, what="ready")
            await send(s.kafka_bootstrap_servers, s.topic_raw, [event(i) for i in range(400)])
            await wait_for(lambda: _stored_at_least(pool, 400), timeout=60, interval=0.2, what="first 400 stored")
            admin = AIOKafkaAdminClient(bootstrap_servers=s.kafka_bootstrap_servers)
            await admin.start()
            try:
                await admin.delete_topics([s.topic_raw])
            finally:
                await admin.close()
            await ensure_topics(client_options(s), [s.topic_raw], partitions=2)
            # the new log's first 300 records sit below the copy's positions (about 200 a partition)
            await send(s.kafka_bootstrap_servers, s.topic_raw, [event(i) for i in range(400, 700)])
            await wait_for(lambda: _stored_at_least(pool, 700), timeout=60, interval=0.2,
                           what="every event of the new log stored")
            run.terminate()
            assert await asyncio.to_thread(run.proc.wait, 30) == 0
            lines = run.log_lines()
            await run.aclose()
        assert await counted_twice(pool) == 0
        said = [x for x in lines if "was deleted and created again" in x and s.topic_raw in x]
        assert len(said) == 1, said
    finally:
        broker.stop()


async def _stored_at_least(pool, n: int) -> bool:
    return await pool.fetchval("SELECT count(*) FROM error_occurrences") >= n


async def test_the_service_refuses_a_topic_with_fewer_partitions_than_configured_unless_told_to(settings, tmp_path):
    """A raw topic a producer's auto-create made with the broker's default count (2 here,
    where the service is configured for 4) is refused at start, in one line naming the topic
    and the setting that allows it; with the setting the copy runs."""
    broker = EmbeddedKafka()
    broker.start()
    try:
        s = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers, "topic_partitions": 4})
        await ensure_topics(client_options(s), [s.topic_raw], partitions=2)
        done = await run_once(s, tmp_path, "ingest")
        assert done.returncode == 2, done.stderr[-2000:]
        last = done.stderr.strip().splitlines()[-1]
        assert last.startswith(f"elk-resolver: topic {s.topic_raw} has 2 partitions, fewer than "
                               "ELK_RESOLVER_TOPIC_PARTITIONS=4"), last
        assert "ELK_RESOLVER_ALLOW_FEWER_PARTITIONS=true" in last and "Traceback" not in done.stderr
        with RunProcess(s, tmp_path, "ingest", allow_fewer_partitions="true", **FAST_RUN) as run:
            await wait_for(lambda: _status(run, 200), timeout=60, interval=0.2, what="ready when told to")
            run.terminate()
            assert await asyncio.to_thread(run.proc.wait, 30) == 0
            await run.aclose()
    finally:
        broker.stop()


_ASK_FOR_A_MISSING_TOPIC = """
import asyncio, sys
from aiokafka import AIOKafkaProducer
from elk_resolver.kafka.topics import forbid_client_auto_create
if sys.argv[2] == "service":
    forbid_client_auto_create()
async def main():
    producer = AIOKafkaProducer(bootstrap_servers=sys.argv[1], request_timeout_ms=2000)
    await producer.start()
    try:
        await producer.send_and_wait("never-created", b"x")
        print("sent")
    except Exception as exc:
        print(type(exc).__name__)
    finally:
        await producer.stop()
asyncio.run(main())
"""


async def test_the_service_s_clients_never_ask_the_broker_to_create_a_topic(kafka):
    """aiokafka asks for metadata with auto-creation allowed, and Tansu then makes a missing
    topic with its own count (4): after a broker restart the analysis topic came back with 4
    partitions where 8 were configured. In a process of the service (``run_service`` and the
    ingest stage's own entry point switch it on) a missing topic stays missing until the topic
    watch creates it with the configured count; a process that is not the service keeps
    aiokafka's default."""
    for mode, created in (("service", False), ("tool", True)):
        done = await asyncio.to_thread(
            subprocess.run, [sys.executable, "-c", _ASK_FOR_A_MISSING_TOPIC, kafka.bootstrap_servers, mode],
            capture_output=True, text=True, timeout=60)
        topics = await _topics_named(kafka.bootstrap_servers, "never-created")
        assert bool(topics) == created, (mode, done.stdout, done.stderr[-500:])
        if not created:
            assert done.stdout.strip() in {"UnknownTopicOrPartitionError", "KafkaTimeoutError"}, done.stdout
        else:
            admin = AIOKafkaAdminClient(bootstrap_servers=kafka.bootstrap_servers)
            await admin.start()
            try:
                await admin.delete_topics(["never-created"])
            finally:
                await admin.close()


async def test_a_service_run_inside_a_process_gives_the_process_aiokafka_s_default_back_when_it_stops(
    settings, unique
):
    """``run_service`` forbids auto-creation for the whole process; the CLI's ``run`` called
    in-process (the on-call CLI tests do) left it forbidden after the service had stopped, and
    the next test's producer to a topic not created yet failed with
    UnknownTopicOrPartitionError (tests/test_kafka_security.py after tests/test_cli_oncall.py)."""
    import aiokafka.client
    from aiokafka import AIOKafkaProducer

    from streams.app import run_service

    stop = asyncio.Event()
    while_running: list[bool] = []

    def started(_app) -> None:
        while_running.append(getattr(aiokafka.client.MetadataRequest, "_elk_no_auto_create", False))
        stop.set()

    await run_service(settings, ("monitor",), serve_http=False, on_started=started, stop=stop)
    assert while_running == [True]
    producer = AIOKafkaProducer(**client_options(settings), request_timeout_ms=5000)
    await producer.start()
    try:
        await producer.send_and_wait(f"t-{unique}-after-the-service", b"x")  # a tool's default: created
    finally:
        await producer.stop()
    assert await _topics_named(settings.kafka_bootstrap_servers, f"t-{unique}-after-the-service")


async def _topics_named(bootstrap: str, name: str) -> dict:
    from elk_resolver.kafka.offsets import probe_consumer, start_or_close
    from elk_resolver.kafka.topics import describe_topics

    probe = probe_consumer({"bootstrap_servers": bootstrap})
    await start_or_close(probe)
    try:
        return await describe_topics(probe._client, [name])
    finally:
        await probe.stop()




async def test_the_embedded_broker_killed_under_load_comes_back_and_keeps_all_it_then_acknowledges(
    settings, pool, tmp_path
):
    """The broker ``up`` runs is killed while two copies consume a steady stream: it is
    started again by itself, its topics are back before any client can reach it (Tansu would
    otherwise acknowledge writes to the missing topics and keep nothing), and every event the
    new broker acknowledged is stored once; nothing is dead-lettered."""
    out = await embedded_broker_restart(settings, pool, tmp_path, copies=2, rate=150, before_s=2, after_s=3,
                                        partitions=3)
    print("\n" + out.line())
    assert out.missing == 0 and out.twice == 0 and out.dead_lettered == 0, out.line()
    assert out.notes["acknowledged by the new broker before its topics existed and dropped by it"] == 0, out.line()
    assert out.recovered_s is not None and out.notes["exit codes"] == [0, 0], out.line()
    assert out.notes["partitions of the topics after"] == [3], out.line()


# --- the rewind bookkeeping, as a property ---------------------------------------------------------

_OPS = st.lists(st.one_of(
    st.tuples(st.just("request"), st.sampled_from(["raw", "analysis"]),
              st.none() | st.sets(st.integers(0, 3), min_size=1)),
    st.tuples(st.just("assign"), st.sets(st.tuples(st.sampled_from(["raw", "analysis"]), st.integers(0, 3)))),
    st.tuples(st.just("wait"), st.floats(0, 40)),
), max_size=30)


@hsettings(max_examples=300, deadline=None)
@given(ops=_OPS)
def test_every_partition_of_a_recreated_topic_is_read_from_its_start_once_by_whoever_holds_it(ops):
    """Whatever the order of re-creations, rebalances and time: after a request, each partition
    in it is rewound at the first assignment that holds it (within the expiry), exactly once;
    nothing outside it is ever rewound."""
    now = [0.0]
    rewinds = Rewinds(expire_s=60, clock=lambda: now[0])
    owed: dict[tuple[str, int], float] = {}  # partition -> when it was requested
    for op in ops:
        if op[0] == "request":
            _, topic, parts = op
            rewinds.request(topic, parts)
            for p in (range(4) if parts is None else parts):
                owed[(topic, p)] = now[0]
        elif op[0] == "assign":
            assigned = [TopicPartition(t, p) for t, p in sorted(op[1])]
            taken = {(tp.topic, tp.partition) for tp in rewinds.take(assigned)}
            due = {k for k in op[1] if k in owed and now[0] - owed[k] <= 60}
            assert taken == due, (taken, due)
            for k in taken:
                del owed[k]
            for k in [k for k, t in owed.items() if now[0] - t > 60]:
                del owed[k]
        else:
            now[0] += op[1]


def test_a_partition_rewound_once_is_not_rewound_again_by_the_next_rebalance():
    rewinds = Rewinds()
    rewinds.request("raw", None)
    assert rewinds.take([TopicPartition("raw", 0)]) == [TopicPartition("raw", 0)]
    assert rewinds.take([TopicPartition("raw", 0), TopicPartition("raw", 1)]) == [TopicPartition("raw", 1)]
    assert rewinds.take([TopicPartition("raw", 0), TopicPartition("raw", 1)]) == []
