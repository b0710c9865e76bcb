"""Broker faults of round three (issue 22): a commit that fails because the broker restarted
under a batch, a broker restarted empty on the same port while copies run, topics re-created
or truncated under the consumers, and topics auto-created with the broker's partition count."""

from __future__ import annotations

import asyncio
import logging

from faststream.kafka import KafkaBroker, KafkaMessage

from elk_resolver.kafka.embedded import EmbeddedKafka
from elk_resolver.kafka.topics import ensure_topics
from streams.record_worker import ManualAckSubscription
from tests.support.polling import wait_for
from tests.test_faults import send


async def test_a_commit_refused_after_a_broker_restart_is_logged_with_the_batch_not_an_attribute_error(
    settings, caplog
):
    """The analysis stage's batches are tuples of records: logging a failed commit read
    ``.topic`` of the tuple and raised AttributeError instead of saying which records."""
    broker = EmbeddedKafka()
    broker.start()
    try:
        s = settings.model_copy(update={"kafka_bootstrap_servers": broker.bootstrap_servers})
        await ensure_topics(s.kafka_bootstrap_servers, [s.topic_analysis], partitions=1)
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
