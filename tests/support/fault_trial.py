"""The fault trial of issue 22 as code: each fault injected into running ``elk-resolver run``
copies on a real broker and a real PostgreSQL, and what became of every event: sent (what the
broker acknowledged), stored, dead-lettered, counted twice, lost with the broker, and the time
to recover. The fault tests call these scenarios with small numbers and assert the sums; run as
a script it plays them at the trial's rates and prints the figures:

    .venv/bin/python -m tests.support.fault_trial                 # every scenario
    .venv/bin/python -m tests.support.fault_trial --only broker_restart --rate 200

It starts its own embedded PostgreSQL and broker (nothing to configure) and needs nothing else.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaError

from elk_resolver.events.contracts import DeadLetterHeaders
from elk_resolver.kafka.security import client_options

FAST_RUN = {
    "topic_check_interval_s": "1", "lag_interval_s": "1", "stall_after_s": "6",
    "retry_backoff_initial_s": "0.2", "retry_backoff_max_s": "1", "patterns_refresh_s": "0.5",
    "db_command_timeout_s": "3", "db_connect_timeout_s": "3", "shutdown_timeout_s": "10",
}
"""Settings of a ``run`` copy under test: quick checks and retries, so faults take seconds."""


def event(i: int, kinds: int = 7) -> dict[str, Any]:
    """Error event ``i``: its identity (``event.hash``) is its own, its error one of ``kinds``."""
    from tests.test_ingest_stream import error_event

    return error_event(i, i % kinds)


def identity(i: int, kinds: int = 7) -> str:
    return f"evt-{i % kinds}-{i}"


class Feeder:
    """Sends events at about ``rate`` a second in batches of ``batch`` until stopped, through a
    broker that may go away: a batch the broker did not acknowledge is sent again (the same
    events: counted once). ``acked`` maps each acknowledged event to the ``epoch`` at its
    acknowledgement, so a scenario can tell what the broker it restarted had acknowledged
    from what the new one did."""

    def __init__(self, bootstrap: str, topic: str, *, rate: float = 250, batch: int = 25, kinds: int = 7) -> None:
        self.bootstrap = bootstrap
        self.topic = topic
        self.rate = rate
        self.batch = batch
        self.kinds = kinds
        self.epoch = 0
        self.acked: dict[str, int] = {}
        self.next = 0
        self.failures = 0
        self._stop = asyncio.Event()
        self._task = asyncio.create_task(self._loop())

    @property
    def sent(self) -> int:
        return len(self.acked)

    def ids(self, epoch: int | None = None) -> set[str]:
        return {i for i, e in self.acked.items() if epoch is None or e == epoch}

    async def _loop(self) -> None:
        producer = AIOKafkaProducer(bootstrap_servers=self.bootstrap, linger_ms=5, request_timeout_ms=5000,
                                    retry_backoff_ms=200)
        await producer.start()
        try:
            while not self._stop.is_set():
                started = time.monotonic()
                numbers = range(self.next, self.next + self.batch)
                try:
                    futures = [await producer.send(self.topic, orjson.dumps(event(i, self.kinds))) for i in numbers]
                    await asyncio.gather(*futures)
                except (KafkaError, OSError, TimeoutError):
                    self.failures += 1
                    await asyncio.sleep(0.2)
                    continue  # the same events again
                for i in numbers:
                    self.acked[identity(i, self.kinds)] = self.epoch
                self.next += self.batch
                await asyncio.sleep(max(0.0, self.batch / self.rate - (time.monotonic() - started)))
        finally:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(producer.stop(), 10)

    async def stop(self) -> int:
        self._stop.set()
        await self._task
        return self.sent


async def stored_ids(pool) -> set[str]:
    return {r[0] for r in await pool.fetch("SELECT event_identity FROM error_occurrences")}


async def counted_twice(pool) -> int:
    """Occurrences counted beyond one per event: error_logs' counts against the distinct
    events recorded (0 when nothing was counted twice)."""
    return await pool.fetchval(
        "SELECT coalesce((SELECT sum(occurrence_count) FROM error_logs), 0)"
        " - (SELECT count(DISTINCT event_identity) FROM error_occurrences)")


async def records_on(bootstrap: str, topic: str, timeout: float = 3.0) -> list[Any]:
    """Every record on ``topic`` (read from its start for ``timeout`` seconds)."""
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest", group_id=None)
    await consumer.start()
    found: list[Any] = []
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found.extend(records)
    finally:
        await consumer.stop()
    return found


async def dead_letters(bootstrap: str, topic: str, timeout: float = 3.0) -> list[dict[str, str]]:
    """Every record on the dead-letter topic: reason and original coordinates from its headers."""
    found = []
    for r in await records_on(bootstrap, topic, timeout):
        h = {k: v.decode() for k, v in (r.headers or ())}
        found.append({"reason": h.get(DeadLetterHeaders.REASON), "topic": h.get(DeadLetterHeaders.TOPIC),
                      "partition": h.get(DeadLetterHeaders.PARTITION), "offset": h.get(DeadLetterHeaders.OFFSET)})
    return found


async def wait_until(predicate, timeout: float, interval: float = 0.2) -> float | None:
    """Seconds until ``predicate`` (async or not) held, or None at the deadline."""
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return time.monotonic() - started
        await asyncio.sleep(interval)
    return None


@dataclass
class Outcome:
    """What became of the events of one fault."""

    fault: str
    sent: int = 0
    stored: int = 0
    dead_lettered: int = 0
    twice: int = 0
    lost_with_broker: int = 0
    """acknowledged by a broker that then restarted without its data, before any copy read them"""
    missing: int = 0
    """acknowledged (by a broker still up) and neither stored nor dead-lettered: must be 0"""
    recovered_s: float | None = None
    """from the fault (or its end) until the service stored events again"""
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def sums_hold(self) -> bool:
        return self.missing == 0 and self.twice == 0 and self.sent == self.stored + self.dead_lettered + self.lost_with_broker

    def line(self) -> str:
        rec = "-" if self.recovered_s is None else f"{self.recovered_s:.1f}s"
        extra = "; ".join(f"{k} {v}" for k, v in self.notes.items())
        return (f"{self.fault}: sent {self.sent} = stored {self.stored} + dead-lettered {self.dead_lettered}"
                f" + lost with the broker {self.lost_with_broker}; missing {self.missing}, twice {self.twice};"
                f" recovered in {rec}" + (f"; {extra}" if extra else ""))


# --- scenarios ---------------------------------------------------------------------------------


async def broker_restart(settings, pool, workdir, *, copies: int = 2, rate: float = 200, before_s: float = 4,
                         after_s: float = 6, partitions: int = 4) -> Outcome:
    """``copies`` copies consume while events flow at ``rate``; an operator restarts the broker
    empty on the same port (what a restart of a memory-only broker looks like)."""
    from elk_resolver.kafka.embedded import EmbeddedKafka

    broker = EmbeddedKafka()
    broker.start()

    async def restart(down) -> None:
        await asyncio.to_thread(broker.stop)
        down()
        await asyncio.to_thread(broker.start)

    try:
        return await _restart_under_load(
            f"broker restarted empty by an operator, {copies} copies at {rate:.0f}/s", settings, pool, workdir,
            broker.bootstrap_servers, restart, copies=copies, rate=rate, before_s=before_s, after_s=after_s,
            partitions=partitions)
    finally:
        broker.stop()


async def embedded_broker_restart(settings, pool, workdir, *, copies: int = 2, rate: float = 200,
                                  before_s: float = 4, after_s: float = 6, partitions: int = 4) -> Outcome:
    """The embedded broker as ``up`` runs it (:class:`elk_resolver.kafka.gated.GatedKafka`) is
    killed (SIGKILL) while ``copies`` copies consume at ``rate``: it comes back by itself, and
    no client reaches it before its topics exist."""
    import os
    import signal

    from elk_resolver.kafka.gated import GatedKafka

    names = settings.model_copy(update={"topic_partitions": partitions})
    broker = GatedKafka(names.topics(), partitions=partitions)
    broker.start()

    async def crash(down) -> None:
        restarts = broker.restarts
        os.kill(broker.pid, signal.SIGKILL)
        await wait_until(lambda: broker.inner.exited() is not None or broker.restarts > restarts, 10, interval=0.005)
        down()
        await wait_until(lambda: broker.restarts > restarts, 30, interval=0.01)

    try:
        return await _restart_under_load(
            f"embedded broker killed under load (up restarts it), {copies} copies at {rate:.0f}/s", settings, pool,
            workdir, broker.bootstrap_servers, crash, copies=copies, rate=rate, before_s=before_s, after_s=after_s,
            partitions=partitions)
    finally:
        broker.stop()


async def _restart_under_load(title, settings, pool, workdir, bootstrap, restart, *, copies, rate, before_s,
                              after_s, partitions, stages=("ingest",)) -> Outcome:
    """Events flow at ``rate`` into ``copies`` copies, ``restart()`` takes the broker away and
    brings it back empty. Every event the new broker acknowledged must be stored once; what
    the old one had acknowledged and no copy had read yet is lost with it."""
    from elk_resolver.kafka.offsets import probe_consumer
    from elk_resolver.kafka.topics import describe_topics, ensure_topics
    from tests.support.run_process import RunProcess

    out = Outcome(title)
    s = settings.model_copy(update={"kafka_bootstrap_servers": bootstrap, "topic_partitions": partitions})
    await ensure_topics(client_options(s), s.topics(), partitions=partitions)
    with contextlib.ExitStack() as stack:
        runs = [stack.enter_context(RunProcess(s, workdir, *stages, name=f"copy-{n}", **FAST_RUN))
                for n in range(copies)]
        for run in runs:
            assert await wait_until(lambda r=run: _ready(r), 90) is not None, "a copy never became ready"
        feeder = Feeder(s.kafka_bootstrap_servers, s.topic_raw, rate=rate)
        await asyncio.sleep(before_s)  # the scenario: events flow, then the fault
        marks: list[float] = []

        def down() -> None:  # the old broker is gone: every acknowledgement from now on is the new one's
            feeder.epoch = 1
            marks.append(time.monotonic())

        await restart(down)
        restarted = marks[0]
        first_new = await wait_until(lambda: _any_stored(pool, feeder.ids(1)), 60)
        first_new = None if first_new is None else time.monotonic() - restarted
        await asyncio.sleep(max(0.0, after_s - (time.monotonic() - restarted)))
        await feeder.stop()
        on_topic = await _ids_on_topic(s.kafka_bootstrap_servers, s.topic_raw)
        new = feeder.ids(1) & on_topic  # what the new broker acknowledged and kept
        caught_up = await wait_until(lambda: _all_stored(pool, new), 60)
        out.recovered_s = first_new  # from the old broker's end to the first event the new one took, stored
        out.notes["every event stored, after the feed stopped"] = "never" if caught_up is None else f"{caught_up:.1f}s"
        for run in runs:
            run.terminate()
        out.notes["exit codes"] = [await asyncio.to_thread(run.proc.wait, 30) for run in runs]
        out.notes["lines saying the raw topic was re-created"] = sum(
            "was deleted and created again" in line and s.topic_raw in line for run in runs for line in run.log_lines())
        for run in runs:
            await run.aclose()
    probe = probe_consumer(client_options(s))
    await probe.start()
    try:
        counts = {n: st.partitions for n, st in (await describe_topics(probe._client, s.topics())).items()}
    finally:
        await probe.stop()
    out.notes["partitions of the topics after"] = sorted(set(counts.values()))
    dead = await dead_letters(s.kafka_bootstrap_servers, s.topic_dlq)
    await _account(out, pool, feeder, dead, old_epoch=0)
    # Tansu acknowledges a write to a topic it does not have (the first moments after a
    # restart, before the topics are back) and keeps nothing: such events are the broker's
    # loss; an event on the topic that is not stored would be the service's
    dropped = (feeder.ids(1) - await stored_ids(pool)) - on_topic
    out.notes["acknowledged by the new broker before its topics existed and dropped by it"] = len(dropped)
    out.lost_with_broker += len(dropped)
    out.missing = max(0, out.missing - len(dropped))
    out.notes["acknowledged by the old broker, read by no copy before it went"] = out.lost_with_broker - len(dropped)
    return out


async def _account(out: Outcome, pool, feeder: Feeder, dead: list, *, old_epoch: int | None = None) -> None:
    stored = await stored_ids(pool)
    acked = feeder.ids()
    out.sent = len(acked)
    out.stored = len(stored & acked)
    out.dead_lettered = len(dead)
    out.twice = await counted_twice(pool)
    unaccounted = acked - stored
    if old_epoch is not None:
        lost = {i for i in unaccounted if feeder.acked[i] == old_epoch}
        out.lost_with_broker = len(lost)
        unaccounted -= lost
    out.missing = max(0, len(unaccounted) - len(dead))


async def _ids_on_topic(bootstrap: str, topic: str) -> set[str]:
    """The event identities of every record on ``topic`` now."""
    return {orjson.loads(r.value)["event"]["hash"] for r in await records_on(bootstrap, topic, 5.0)}


async def _ready(run) -> bool:
    answer = await run.ready()
    return answer is not None and answer[0] == 200


async def _any_stored(pool, ids: set[str]) -> bool:
    return bool(ids) and await pool.fetchval(
        "SELECT EXISTS (SELECT 1 FROM error_occurrences WHERE event_identity = any($1::text[]))", list(ids))


async def _all_stored(pool, ids: set[str]) -> bool:
    return await pool.fetchval(
        "SELECT count(*) FROM error_occurrences WHERE event_identity = any($1::text[])", list(ids)) == len(ids)


# --- the script -----------------------------------------------------------------------------------

async def read_only(settings, pool, workdir, *, postgres, rate: float = 100, fault_s: float = 20) -> Outcome:
    """PostgreSQL turns read-only (``default_transaction_read_only = on``: a failover to a
    replica, a demoted primary) for ``fault_s`` while events flow at ``rate`` into one copy."""
    import asyncpg

    from tests.support.run_process import RunProcess

    out = Outcome(f"PostgreSQL read-only for {fault_s:.0f}s at {rate:.0f}/s")
    with RunProcess(settings, workdir, "ingest", name="read-only", **FAST_RUN) as run:
        assert await wait_until(lambda: _ready(run), 90) is not None
        feeder = Feeder(settings.kafka_bootstrap_servers, settings.topic_raw, rate=rate)
        await asyncio.sleep(2)
        admin = await asyncpg.connect(postgres.admin_dsn, server_settings={"default_transaction_read_only": "off"})
        try:
            await admin.execute("ALTER SYSTEM SET default_transaction_read_only = on")
            await admin.execute("SELECT pg_reload_conf()")
            saw = await wait_until(lambda: _ready_says(run, "accepts no writes"), 15)
            out.notes["/ready said"] = "not ready: PostgreSQL accepts no writes" if saw is not None else "nothing"
            await asyncio.sleep(max(0.0, fault_s - (saw or 0)))
        finally:
            await admin.execute("ALTER SYSTEM RESET default_transaction_read_only")
            await admin.execute("SELECT pg_reload_conf()")
            await admin.close()
        back = time.monotonic()
        sent = feeder.ids()
        out.recovered_s = await wait_until(lambda: _all_stored(pool, sent), 90)
        await feeder.stop()
        await wait_until(lambda: _all_stored(pool, feeder.ids()), 60)
        out.notes["warning lines"] = sum('"level":"WARNING"' in line for line in run.log_lines())
        run.terminate()
        await asyncio.to_thread(run.proc.wait, 30)
        await run.aclose()
    dead = await dead_letters(settings.kafka_bootstrap_servers, settings.topic_dlq)
    await _account(out, pool, feeder, dead)
    out.notes["caught up after writable again"] = f"{time.monotonic() - back:.1f}s"
    return out


async def postgres_outage(settings, pool, workdir, *, postgres, rate: float = 100, fault_s: float = 10) -> Outcome:
    """PostgreSQL frozen (SIGSTOP: connections open, nothing answers) then stopped, ``fault_s``
    each, under one copy running every stage, /ready probed and /metrics scraped meanwhile; a
    SIGTERM during the outage; a new copy finishes."""
    import httpx

    from tests.support.run_process import RunProcess

    out = Outcome(f"PostgreSQL frozen {fault_s:.0f}s then stopped {fault_s:.0f}s at {rate:.0f}/s, every stage")
    extra = {**FAST_RUN, "execution_maintenance_interval_s": "0.5", "monitor_interval_s": "1",
             "metrics_db_interval_s": "0", "db_check_interval_s": "0.5"}
    latencies: list[float] = []

    async def probe(port: int) -> None:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            while True:
                started = time.monotonic()
                await http.get("/ready")
                latencies.append(time.monotonic() - started)
                await http.get("/metrics")
                await asyncio.sleep(0.2)

    with RunProcess(settings, workdir, "ingest", "analyze", "execute", "monitor", name="outage", **extra) as run:
        assert await wait_until(lambda: _ready(run), 90) is not None
        feeder = Feeder(settings.kafka_bootstrap_servers, settings.topic_raw, rate=rate)
        await asyncio.sleep(2)
        prober = asyncio.create_task(probe(run.port))
        postgres.freeze()
        try:
            await asyncio.sleep(fault_s)
        finally:
            postgres.thaw()
        await asyncio.to_thread(postgres.stop)
        try:
            await asyncio.sleep(fault_s)
            term = time.monotonic()
            run.terminate()
            code = await asyncio.to_thread(run.proc.wait, 30)
            out.notes["SIGTERM during the outage"] = f"exit {code} in {time.monotonic() - term:.1f}s"
        finally:
            prober.cancel()
            await asyncio.gather(prober, return_exceptions=True)
            await asyncio.to_thread(postgres.start)
        lines = [orjson.loads(x) for x in run.log_lines() if x.startswith("{")]
        await run.aclose()
    back = time.monotonic()
    with RunProcess(settings, workdir, "ingest", name="after-outage", **FAST_RUN) as run:
        await feeder.stop()
        out.recovered_s = await wait_until(lambda: _all_stored(pool, feeder.ids()), 90)
        run.terminate()
        await asyncio.to_thread(run.proc.wait, 30)
        await run.aclose()
    out.notes["caught up after PostgreSQL came back"] = f"{time.monotonic() - back:.1f}s"
    out.notes["/ready probes"] = f"{len(latencies)}, slowest {max(latencies, default=0) * 1000:.0f} ms"
    out.notes["log lines during ~%.0fs of outage" % (2 * fault_s)] = (
        f"{sum(x['level'] == 'WARNING' for x in lines)} WARNING, "
        f"{sum(x['level'] in ('ERROR', 'CRITICAL') for x in lines)} ERROR")
    dead = await dead_letters(settings.kafka_bootstrap_servers, settings.topic_dlq)
    await _account(out, pool, feeder, dead)
    return out


async def replay_bad_records(settings, pool, workdir) -> Outcome:
    """The trial's 11 malformed records among valid ones, replayed twice."""
    from datetime import UTC, datetime, timedelta

    from elk_resolver.operations.replay import replay
    from tests.test_faults_replay import MALFORMED

    out = Outcome("replay of 11 malformed records among 100 valid ones, twice")
    s = settings.model_copy(update={"max_record_bytes": 16384})
    since = datetime.now(UTC) - timedelta(seconds=5)
    producer = AIOKafkaProducer(bootstrap_servers=s.kafka_bootstrap_servers)
    await producer.start()
    try:
        futures = [await producer.send(s.topic_raw, orjson.dumps(event(i)), partition=i % 2) for i in range(100)]
        futures += [await producer.send(s.topic_raw, v, key=b"bad", partition=1) for v in MALFORMED.values()]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    first = await replay(s, pool, since=since)
    analysis = len(await records_on(s.kafka_bootstrap_servers, s.topic_analysis))
    second = await replay(s, pool, since=since)
    out.sent = 100 + len(MALFORMED)
    out.stored = len(await stored_ids(pool))
    out.dead_lettered = len(await dead_letters(s.kafka_bootstrap_servers, s.topic_dlq))
    out.twice = await counted_twice(pool)
    out.missing = out.sent - out.stored - out.dead_lettered
    out.notes["first replay"] = f"{first.dead_lettered} dead-lettered, {first.published} analysis events"
    out.notes["second replay"] = (f"{second.dead_lettered} dead-lettered ({second.already_dead_lettered} already "
                                  f"there), {second.published} analysis events")
    out.notes["analysis events on the topic after both"] = (
        f"{len(await records_on(s.kafka_bootstrap_servers, s.topic_analysis))} (after the first: {analysis})")
    return out


async def retention(settings, pool, workdir) -> Outcome:
    """The trial's 209 events, one stamped 1975 and one 2150: replay, retention, replay."""
    from datetime import UTC, datetime, timedelta

    from elk_resolver.operations.replay import replay
    from elk_resolver.store.maintain import maintain

    out = Outcome("209 events (one stamped 1975, one 2150): replay, retention, replay again")
    since = datetime.now(UTC) - timedelta(seconds=5)
    stamps = [datetime.now(UTC).isoformat()] * 207 + ["1975-01-01T00:00:00Z", "2150-01-01T00:00:00Z"]
    producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers)
    await producer.start()
    try:
        await asyncio.gather(*[await producer.send(settings.topic_raw, orjson.dumps({**event(i), "@timestamp": t}))
                               for i, t in enumerate(stamps)])
    finally:
        await producer.stop()
    await replay(settings, pool, since=since)
    await maintain(pool, retention_days=90)
    again = await replay(settings, pool, since=since)
    out.sent = len(stamps)
    out.stored = len(await stored_ids(pool))
    out.twice = await counted_twice(pool)
    out.missing = out.sent - out.stored
    months = [r[0][-8:] for r in await pool.fetch(
        "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
        "WHERE i.inhparent = 'error_occurrences'::regclass AND c.relname ~ '_y[0-9]{4}m[0-9]{2}$' ORDER BY 1")]
    out.notes["sum of occurrence_count"] = await pool.fetchval("SELECT sum(occurrence_count) FROM error_logs")
    out.notes["second replay counted"] = again.new_occurrences
    out.notes["partitions"] = f"{months[0]}..{months[-1]}"
    return out


async def _ready_says(run, words: str) -> bool:
    answer = await run.ready()
    return answer is not None and answer[0] != 200 and words in str(answer[1])


SCENARIOS = {
    "read_only": read_only,
    "postgres_outage": postgres_outage,
    "broker_restart": broker_restart,
    "embedded_broker_restart": embedded_broker_restart,
    "replay_bad_records": replay_bad_records,
    "retention": retention,
}
NEEDS_POSTGRES = {"read_only", "postgres_outage"}
NEEDS_KAFKA = {"read_only", "postgres_outage", "replay_bad_records", "retention"}


async def _main(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from elk_resolver.kafka.embedded import EmbeddedKafka, EmbeddedPostgres
    from elk_resolver.kafka.stack import ensure_database
    from elk_resolver.kafka.topics import ensure_topics
    from elk_resolver.settings import make_settings
    from elk_resolver.store.db import create_pool
    from elk_resolver.store.migrate import migrate
    from tests.support.services import PostgresService

    workdir = Path(tempfile.mkdtemp(prefix="elk-fault-trial-"))
    server = EmbeddedPostgres(workdir / "pg", durable=False)
    server.start()
    postgres = PostgresService(server.dsn("postgres"), "embedded", stop=server.stop, start=server.start,
                               pid=lambda: server.pid)
    kafka = EmbeddedKafka()
    kafka.start()
    results = []
    try:
        for n, name in enumerate(args.only or SCENARIOS):
            dsn = server.dsn(f"trial_{n}")
            await ensure_database(dsn)
            await migrate(dsn)
            settings = make_settings(database_url=dsn, kafka_bootstrap_servers=kafka.bootstrap_servers,
                                     state_dir=workdir / "state", http_port=0, topic_partitions=4
                                     ).isolated(f"trial-{n}")
            if name in NEEDS_KAFKA:
                await ensure_topics(client_options(settings), settings.topics(), partitions=4)
            kwargs: dict[str, Any] = {"postgres": postgres} if name in NEEDS_POSTGRES else {}
            if args.rate and name not in ("replay_bad_records", "retention"):
                kwargs["rate"] = args.rate
            async with await create_pool(dsn, min_size=1, max_size=4) as pool:
                started = time.monotonic()
                outcome = await SCENARIOS[name](settings, pool, workdir, **kwargs)
                outcome.notes["took"] = f"{time.monotonic() - started:.0f}s"
            print(outcome.line(), flush=True)
            results.append(outcome)
    finally:
        kafka.stop()
        server.stop()
    return 0 if all(o.sums_hold for o in results) else 1


def main() -> None:
    import logging

    # the trial's own clients (its pool, its producer) retry through the faults on purpose
    logging.basicConfig(level=logging.ERROR, format="%(message)s")
    for noisy in ("asyncpg", "aiokafka", "elk_resolver.replay"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="a scenario (repeatable)")
    parser.add_argument("--rate", type=float, help="events a second the feeder sends")
    raise SystemExit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
