"""Database faults of round three (issue 22): a read-only PostgreSQL (a failover to a replica,
a demoted primary) is an outage, not bad input; health answers at once during a freeze and
says why in words; an outage is told in a few lines, not one per record, scrape or pass."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import Counter

import asyncpg
import httpx
import orjson
import pytest

from tests.support.polling import wait_for
from tests.support.run_process import RunProcess
from tests.test_faults import FAST_RUN, Feeder, _status, dlq_count, finish_and_check_sums
from tests.test_ingest_stream import error_event, fast, produce, producer, running, total_count  # noqa: F401


@contextlib.asynccontextmanager
async def read_only_server(postgres):
    """``default_transaction_read_only = on`` for the whole server, as a demoted primary or a
    replica after a failover answers: every session's next write is refused with 25006."""
    if not postgres.controllable:
        pytest.skip("PostgreSQL is not under the test's control")
    admin = await asyncpg.connect(postgres.admin_dsn, server_settings={"default_transaction_read_only": "off"})
    try:
        await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
        await admin.execute("SELECT pg_reload_conf()")
        yield admin
    finally:
        await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
        await admin.execute("SELECT pg_reload_conf()")
        await admin.close()


async def test_a_read_only_database_pauses_ingest_and_dead_letters_nothing(
    running, fast, producer, pool, kafka, postgres
):
    stage = await running()
    await produce(producer, fast.topic_raw, [error_event(i, i % 5) for i in range(100)])
    await wait_for(lambda: _total_is(pool, 100), timeout=30, what="first 100 stored")
    async with read_only_server(postgres):
        await produce(producer, fast.topic_raw, [error_event(i, i % 5) for i in range(100, 400)])
        # the stage keeps the batch and retries (it used to store it record by record and
        # dead-letter every one as db_rejected)
        await wait_for(lambda: stage.metrics.db_retries >= 3, timeout=30, what="ingest retrying")
        assert stage.metrics.dead_lettered == 0
        assert await total_count(pool) == 100
    await wait_for(lambda: _total_is(pool, 400), timeout=60, what="every event stored once writable again")
    await wait_for(lambda: stage.metrics.events_in >= 400, timeout=30, what="all committed")
    assert await pool.fetchval("SELECT count(*) FROM error_occurrences") == 400
    assert stage.metrics.dead_lettered == 0
    assert await dlq_count(kafka, fast.topic_dlq) == 0


async def _total_is(pool, n: int) -> bool:
    return await total_count(pool) == n


async def test_a_postgresql_outage_is_told_in_a_few_lines_and_health_answers_within_a_second(
    settings, pool, kafka, postgres, tmp_path
):
    """Every stage in one copy, /metrics scraped and /ready probed every few hundred ms while
    PostgreSQL is frozen and then stopped: /ready answers within a second naming the cause in
    words, the log says each cause once (it said it per scrape, per pass and per record, with
    "connection has been released back to the pool" as the cause), and SIGTERM during the
    outage leaves with no ERROR."""
    if not postgres.controllable:
        pytest.skip("PostgreSQL is not under the test's control")
    extra = {**FAST_RUN, "execution_maintenance_interval_s": "0.5", "monitor_interval_s": "1",
             "metrics_db_interval_s": "0", "db_check_interval_s": "0.5"}
    with RunProcess(settings, tmp_path, "ingest", "analyze", "execute", "monitor", **extra) as run:
        await wait_for(lambda: _status(run, 200), timeout=90, interval=0.2, what="ready")
        feeder = Feeder(kafka.bootstrap_servers, settings.topic_raw)
        await wait_for(lambda: total_count(pool), timeout=30, what="first events stored")
        probe = Prober(run)
        postgres.freeze()
        try:
            frozen = await wait_for(lambda: probe.saw("did not answer in time"), timeout=15, what="/ready names a freeze")
            await asyncio.sleep(3)  # the scenario: the freeze lasts while scrapes and passes go on
        finally:
            postgres.thaw()
        await asyncio.to_thread(postgres.stop)
        try:
            stopped = await wait_for(lambda: probe.saw("refuses connections"), timeout=15, what="/ready names a stop")
            await asyncio.sleep(3)
            await probe.stop()
            run.terminate()
            code = await asyncio.to_thread(run.proc.wait, 30)
        finally:
            await asyncio.to_thread(postgres.start)
        await run.aclose()
        total = await feeder.stop()
        lines = [orjson.loads(x) for x in run.log_lines() if x.startswith("{")]
    assert code == 0
    print(f"\nPostgreSQL frozen then stopped, all stages, /ready every 0.2 s and /metrics every 0.3 s: "
          f"{len(probe.latencies)} probes, slowest {max(probe.latencies) * 1000:.0f} ms; /ready frozen: "
          f"{frozen['database']!r}; stopped: {stopped['database']!r}")
    assert max(probe.latencies) < 1.0, sorted(probe.latencies)[-5:]
    assert probe.scrapes >= 15
    errors = [x for x in lines if x["level"] in ("ERROR", "CRITICAL")]
    assert errors == [], errors
    assert not [x for x in lines if "released back to the pool" in x["message"]]
    warnings = Counter((x["logger"], x["message"][:40]) for x in lines if x["level"] == "WARNING")
    print("  warnings by kind:", dict(warnings))
    assert all(n <= 3 for n in warnings.values()), warnings
    assert sum(warnings.values()) <= 30, warnings
    await finish_and_check_sums(settings, pool, kafka, tmp_path, total)


class Prober:
    """Probes /ready and scrapes /metrics in the background, timing each /ready answer."""

    def __init__(self, run) -> None:
        self.run = run
        self.latencies: list[float] = []
        self.bodies: list[dict] = []
        self.scrapes = 0
        self._tasks = [asyncio.create_task(self._ready()), asyncio.create_task(self._scrape())]

    async def _ready(self) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.run.port}", timeout=5) as http:
            while True:
                started = time.monotonic()
                reply = await http.get("/ready")
                self.latencies.append(time.monotonic() - started)
                self.bodies.append(reply.json())
                await asyncio.sleep(0.2)

    async def _scrape(self) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.run.port}", timeout=5) as http:
            while True:
                await http.get("/metrics")
                self.scrapes += 1
                await asyncio.sleep(0.3)

    def saw(self, words: str) -> dict | None:
        return next((b for b in reversed(self.bodies) if words in str(b.get("database"))), None)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
