"""Run as a separate process by test_embedded_stack: start the embedded default from nothing,
round-trip a record through the broker and a row through the database, print what it saw."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import asyncpg
import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from elk_resolver.kafka.stack import prepare, services
from elk_resolver.settings import make_settings


async def round_trip(settings, svc) -> dict:
    await prepare(settings, svc)
    producer = AIOKafkaProducer(bootstrap_servers=svc.kafka_bootstrap_servers)
    await producer.start()
    try:
        await producer.send_and_wait(settings.topic_raw, b'{"message": "hello"}', key=b"k")
    finally:
        await producer.stop()
    consumer = AIOKafkaConsumer(
        settings.topic_raw,
        bootstrap_servers=svc.kafka_bootstrap_servers,
        group_id="probe",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000)
        values = [r.value for records in batch.values() for r in records]
        partitions = len(consumer.partitions_for_topic(settings.topic_raw) or ())
    finally:
        await consumer.stop()
    conn = await asyncpg.connect(svc.database_url)
    try:
        patterns = await conn.fetchval("SELECT count(*) FROM error_patterns")
    finally:
        await conn.close()
    return {"values": [v.decode() for v in values], "partitions": partitions, "patterns": patterns}


def main() -> None:
    settings = make_settings(state_dir=Path(sys.argv[1]), topic_partitions=6)
    with services(settings) as svc:
        pids = [s.pid for s in svc.embedded]
        ports = [int(svc.kafka_bootstrap_servers.rsplit(":", 1)[1]), int(svc.database_url.split(":")[2].split("/")[0])]
        print(orjson.dumps({"pids": pids, "ports": ports}).decode(), flush=True)
        result = asyncio.run(round_trip(settings, svc))
        print(orjson.dumps(result).decode(), flush=True)


if __name__ == "__main__":
    main()
