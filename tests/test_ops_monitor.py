"""The monitor's system_status rows from stand-in Elasticsearch, Logstash and Kibana servers."""

from __future__ import annotations

from elk_resolver.health import components as monitor
from elk_resolver.settings import make_settings
from streams.monitor import build_monitor
from tests.support.es_stub import EsStub, Reply
from tests.support.json_stub import JsonStub, kibana_status, logstash_stats


async def _rows(pool) -> dict[str, dict]:
    async with pool.acquire() as conn:
        rows = await conn.fetch("SELECT component_name, status, error_count, last_error_at, metadata FROM system_status")
    return {r["component_name"]: dict(r) for r in rows}


def _health(status: str):
    return lambda _req, _m: Reply(body={"cluster_name": "stub", "status": status, "number_of_nodes": 1,
                                        "unassigned_shards": 0 if status == "green" else 3})


async def test_monitor_records_healthy_warning_error_from_stand_in_servers(pool, database_url):
    async with EsStub() as es, JsonStub() as logstash, JsonStub() as kibana:
        logstash.set("/_node/stats/pipelines", 200, logstash_stats())
        kibana.set("/api/status", 200, kibana_status("available"))
        settings = make_settings(
            database_url=database_url, elasticsearch_url=es.url, logstash_url=logstash.url, kibana_url=kibana.url
        )
        await monitor.check_and_record(settings, pool)
        rows = await _rows(pool)
        assert {k: v["status"] for k, v in rows.items()} == {
            "elasticsearch": "healthy", "logstash": "healthy", "kibana": "healthy", "postgresql": "healthy",
            "executions": "healthy",  # no run died after its claim
        }
        assert rows["elasticsearch"]["error_count"] == 0 and rows["elasticsearch"]["last_error_at"] is None
        assert rows["logstash"]["metadata"]["pipelines"]["main"]["events_in"] == 1200

        es.route("GET", r"/_cluster/health", _health("yellow"))
        logstash.set("/_node/stats/pipelines", 200, logstash_stats(reload_error=True))
        kibana.set("/api/status", 503, kibana_status("degraded"))
        await monitor.check_and_record(settings, pool)
        rows = await _rows(pool)
        assert rows["elasticsearch"]["status"] == "warning"
        assert rows["elasticsearch"]["metadata"]["unassigned_shards"] == 3
        assert rows["logstash"]["status"] == "warning"
        assert "reload failed" in rows["logstash"]["metadata"]["pipelines"]["main"]["reasons"][0]
        assert rows["kibana"]["status"] == "warning"
        assert rows["elasticsearch"]["error_count"] == 1 and rows["elasticsearch"]["last_error_at"] is not None

        es.route("GET", r"/_cluster/health", _health("red"))
        kibana.set("/api/status", 200, kibana_status("red", legacy=True))
        logstash_url = logstash.url
    # Logstash is gone now: unreachable is an error, not a crash
    settings = settings.model_copy(update={"logstash_url": logstash_url})
    async with EsStub() as es2:
        es2.route("GET", r"/_cluster/health", _health("red"))
        settings = settings.model_copy(update={"elasticsearch_url": es2.url})
        await monitor.check_and_record(settings, pool)
    rows = await _rows(pool)
    assert rows["elasticsearch"]["status"] == "error"
    assert rows["logstash"]["status"] == "error" and "error" in rows["logstash"]["metadata"]
    assert rows["kibana"]["status"] == "error"  # the stub is gone too
    assert rows["elasticsearch"]["error_count"] == 2


async def test_unconfigured_components_are_neither_checked_nor_reported(pool, database_url):
    settings = make_settings(database_url=database_url, kafka_bootstrap_servers=None)
    await monitor.check_and_record(settings, pool)
    assert set(await _rows(pool)) == {"postgresql", "executions"}


async def test_monitor_stage_reports_kafka_lag_and_its_peer_stages(settings, pool):
    class FakeStage:
        name = "ingest"
        ready = False
        started = True

    stage = build_monitor(settings, pool=pool, stages=[FakeStage()], maintenance_every=None)
    results = await stage.check_once()
    by_name = {r.component: r for r in results}
    assert by_name["kafka"].status == "healthy"
    assert by_name["kafka"].details["consumer_lag"]["ingest"]["lag"] == 0
    own = f"stage.ingest@{monitor.instance_name()}"
    assert by_name[own].status == "warning"
    rows = await _rows(pool)
    assert set(rows) == {"kafka", "postgresql", "executions", own}


async def test_each_copy_has_its_own_stage_row_and_a_silent_copy_turns_error(pool, database_url):
    """Two copies used to write the same stage.<name> row: a failing copy was hidden by a
    healthy one, and a killed copy stayed 'healthy' for ever."""

    class Stage:
        name = "ingest"
        started = True

        def __init__(self, ready):
            self.ready = ready

    settings = make_settings(database_url=database_url)
    await monitor.check_and_record(settings, pool, stages=[Stage(True)])
    other = "stage.ingest@other-host:4242"
    await monitor.record(pool, [monitor.ComponentStatus(other, "healthy", {"ready": True})])
    await monitor.record(pool, [monitor.check_stages([Stage(False)], {"ingest": "no progress for 40s"})[0]])
    rows = await _rows(pool)
    own = f"stage.ingest@{monitor.instance_name()}"
    assert rows[own]["status"] == "warning" and rows[own]["metadata"]["cause"] == "no progress for 40s"
    assert rows[other]["status"] == "healthy"
    await pool.execute("UPDATE system_status SET last_check = NOW() - interval '5 minutes' WHERE component_name = $1",
                       other)
    await monitor.check_and_record(settings, pool, stages=[Stage(True)])
    rows = await _rows(pool)
    assert rows[other]["status"] == "error" and rows[other]["metadata"]["cause"] == "this copy stopped reporting"
    assert rows[own]["status"] == "healthy"


async def test_group_lag_counts_records_behind_the_committed_offsets(settings):
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

    from elk_resolver.kafka.offsets import group_lag
    from elk_resolver.kafka.security import client_options

    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        batch = [producer.send(settings.topic_raw, b"{}", partition=i % 2) for i in range(7)]
        for fut in batch:
            await (await fut)
    finally:
        await producer.stop()
    assert sum((await group_lag(client_options(settings), settings.group_ingest, settings.topic_raw)).values()) == 7

    consumer = AIOKafkaConsumer(
        settings.topic_raw, bootstrap_servers=settings.kafka_bootstrap_servers, group_id=settings.group_ingest,
        auto_offset_reset="earliest", enable_auto_commit=False,
    )
    await consumer.start()
    try:
        seen = 0
        while seen < 7:
            seen += sum(len(v) for v in (await consumer.getmany(timeout_ms=1000)).values())
        await consumer.commit()
    finally:
        await consumer.stop()
    assert sum((await group_lag(client_options(settings), settings.group_ingest, settings.topic_raw)).values()) == 0
