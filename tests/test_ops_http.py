"""The service's HTTP endpoints: /health, /ready (false before partitions are assigned),
/metrics and the AsyncAPI document."""

from __future__ import annotations

import asyncio

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from streams.app import create_app, stage_builder
from tests.support.polling import wait_for
from tests.support.rows import record_run


def _event(i: int) -> bytes:
    return orjson.dumps({
        "@timestamp": "2024-05-01T10:00:00Z", "message": f"Connection refused to db port 5432 attempt {i}",
        "log": {"level": "error"}, "service": {"name": "billing"}, "event": {"hash": f"ev-{i}"},
    })


async def test_ready_is_false_until_partitions_are_assigned_then_metrics_count(settings, pool):
    built = {}

    def ingest(s, **kw):
        built["ingest"] = stage_builder("ingest")(s, **kw)
        return built["ingest"]

    app = create_app(settings, stages=("ingest",), builders={"ingest": ingest})
    starting = asyncio.create_task(app.start())
    try:
        await wait_for(lambda: app.http_port, what="HTTP bound")
        async with httpx.AsyncClient(base_url=app.http_url, timeout=5) as http:
            assert (await http.get("/health")).status_code == 200
            first = await http.get("/ready")
            assert first.status_code == 503 and first.json()["ready"] is False
            await starting

            async def ready() -> bool:
                reply = await http.get("/ready")
                if reply.status_code == 200:
                    # readiness never runs ahead of the assignment
                    assert built["ingest"].ready and built["ingest"]._consumer.assignment()
                    return True
                assert not built["ingest"].ready
                return False

            await wait_for(ready, timeout=30, what="/ready 200")

            async with pool.acquire() as conn:
                await record_run(conn, "h1")
            producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
            await producer.start()
            try:
                for i in range(5):
                    await producer.send_and_wait(settings.topic_raw, _event(i), key=b"billing")
            finally:
                await producer.stop()

            async def stored() -> bool:
                async with pool.acquire() as conn:
                    return await conn.fetchval("SELECT count(*) FROM error_occurrences") == 5

            await wait_for(stored, timeout=30, what="5 occurrences")

            async def caught_up() -> bool:
                # the offset commit follows the database write, and the lag is sampled in the background
                return 'elk_resolver_consumer_lag{stage="ingest"} 0.0' in (await http.get("/metrics")).text

            await wait_for(caught_up, timeout=60, what="ingest lag 0 in /metrics")
            text = (await http.get("/metrics")).text
            assert 'elk_resolver_events_in_total{stage="ingest"}' in text
            assert 'elk_resolver_consumer_lag{stage="ingest"} 0.0' in text
            assert 'elk_resolver_stage_ready{stage="ingest"} 1.0' in text
            assert 'elk_resolver_executions{status="success"} 1.0' in text
            assert "elk_resolver_approvals_pending 0.0" in text
            assert "elk_resolver_batch_seconds_bucket" in text

            doc = (await http.get("/asyncapi")).json()
            addresses = {c["address"] for c in doc["channels"].values()}
            assert set(settings.topics()) <= addresses
            assert "AnalysisEvent" in orjson.dumps(doc["components"]).decode()
    finally:
        if not starting.done():
            starting.cancel()
        await app.stop()
    assert app.pool is None


async def test_metrics_scrapes_do_not_read_execution_history_each_time(settings, pool):
    """Every scrape used to run a full GROUP BY over execution_history."""
    app = create_app(settings.model_copy(update={"metrics_db_interval_s": 300.0}), stages=("monitor",))
    async with app:
        async with httpx.AsyncClient(base_url=app.http_url, timeout=10) as http:
            first = (await http.get("/metrics")).text
            assert "elk_resolver_approvals_pending" in first
            async with pool.acquire() as conn, conn.transaction():
                # while this lock is held, any read of execution_history waits
                await conn.execute("LOCK TABLE execution_history IN ACCESS EXCLUSIVE MODE")
                for _ in range(3):
                    reply = await asyncio.wait_for(http.get("/metrics"), 1.5)
                    assert reply.status_code == 200
