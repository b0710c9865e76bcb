"""Offsets that hold on both Apache Kafka and Tansu (see shared notes on the broker).

* Highwater marks come from a fetch response (``consumer.highwater``), because Tansu's
  ``end_offsets`` is wrong after a producer sends several records in one batch.
* ``offsets_for_times`` on Tansu answers ``(0, -1)`` past the end where Kafka answers
  ``None``: both mean "the end".
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition

from elk_resolver.kafka.security import KafkaOptions


def probe_consumer(kafka: KafkaOptions, group_id: str | None = None, **kwargs) -> AIOKafkaConsumer:
    """A consumer that assigns (never subscribes), fetching little: reads highwater marks.
    ``kafka``: :func:`elk_resolver.kafka.security.client_options`."""
    return AIOKafkaConsumer(
        **kafka,
        group_id=group_id,
        enable_auto_commit=False,
        client_id=f"elk-resolver-probe-{uuid.uuid4().hex[:6]}",
        fetch_max_wait_ms=100,
        max_partition_fetch_bytes=1024,
        request_timeout_ms=10000,
        **kwargs,
    )


async def start_or_close(client) -> None:
    """Start an aiokafka client; one that cannot connect is closed before the error rises."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise


async def partitions_of(consumer: AIOKafkaConsumer, topic: str, timeout: float = 10.0) -> list[TopicPartition]:
    deadline = time.monotonic() + timeout
    while True:
        parts = consumer.partitions_for_topic(topic)
        if parts:
            return [TopicPartition(topic, p) for p in sorted(parts)]
        if time.monotonic() > deadline:
            raise LookupError(f"topic {topic} does not exist")
        await consumer._client.force_metadata_update()  # noqa: SLF001 - no public refresh
        await asyncio.sleep(0.05)


async def fetch_highwaters(
    consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition], timeout: float = 10.0
) -> dict[TopicPartition, int]:
    """Highwater of each partition, from fetch responses of an assigned consumer.

    The consumer must have ``tps`` assigned and a position on each. Records fetched on the
    way are discarded (the caller seeks where it wants afterwards).
    """
    tps = list(tps)
    deadline = time.monotonic() + timeout
    while True:
        marks = {tp: consumer.highwater(tp) for tp in tps}
        if all(v is not None for v in marks.values()):
            return marks  # type: ignore[return-value]
        if time.monotonic() > deadline:
            missing = [str(tp) for tp, v in marks.items() if v is None]
            raise TimeoutError(f"no fetch response for {', '.join(missing)}")
        await consumer.getmany(*tps, timeout_ms=200, max_records=1)


async def highwaters(kafka: KafkaOptions, topic: str) -> dict[int, int]:
    consumer = probe_consumer(kafka)
    await start_or_close(consumer)
    try:
        tps = await partitions_of(consumer, topic)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        return {tp.partition: v for tp, v in (await fetch_highwaters(consumer, tps)).items()}
    finally:
        await consumer.stop()


async def seek_to_committed(consumer: AIOKafkaConsumer, tps: Iterable[TopicPartition]) -> dict[TopicPartition, int | None]:
    """Position each (assigned) partition at the consumer group's committed offset, or at the
    log start where the group committed none; return the committed offsets."""
    committed = {tp: await consumer.committed(tp) for tp in tps}
    for tp, offset in committed.items():
        if offset is None:
            await consumer.seek_to_beginning(tp)
        else:
            consumer.seek(tp, offset)
    return committed


async def group_lag(kafka: KafkaOptions, group_id: str, topic: str) -> dict[int, int]:
    """Records of ``topic`` not yet committed by ``group_id``, per partition.

    Read through a consumer that names the group but only *assigns* partitions: it never
    joins the group (no rebalance for the members) and never commits. (aiokafka's admin
    ``list_consumer_group_offsets`` cannot decode Tansu's answer; this path works on both.)
    """
    consumer = probe_consumer(kafka, group_id=group_id)
    await start_or_close(consumer)
    try:
        tps = await partitions_of(consumer, topic)
        consumer.assign(tps)
        committed = await seek_to_committed(consumer, tps)
        marks = await fetch_highwaters(consumer, tps)
    finally:
        await consumer.stop()
    return {tp.partition: max(0, marks[tp] - (committed[tp] or 0)) for tp in tps}


def offset_for_time(answer, highwater: int) -> int:
    """``offsets_for_times`` answer for one partition, as a start offset (Tansu-safe)."""
    if answer is None or answer.timestamp == -1 or answer.offset < 0:
        return highwater
    return min(answer.offset, highwater)
