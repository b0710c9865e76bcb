"""Throughput of the ingest stage in this process: records already on the raw topic, the
stage started, the clock running from its first fetch to its last offset commit.

As a library: ``await measure(bootstrap_servers, dsn, n)`` returns the figures (it creates,
and drops afterwards, a fresh database on ``dsn``'s server and fresh topics). As a command,
on the embedded stack:

    python -m bench.ingest_throughput --events 100000 [--fsync-off] [--profile out.prof]

Durable PostgreSQL is the default, as the service runs it; ``--fsync-off`` shows how much of
the time is the WAL flush.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import tempfile
import time
import uuid
from pathlib import Path

import asyncpg
from aiokafka import AIOKafkaProducer

from bench.events import generate, pattern_rows
from elk_resolver.kafka.security import KafkaOptions, client_options
from elk_resolver.kafka.topics import ensure_topics
from elk_resolver.settings import make_settings
from elk_resolver.store.db import create_pool
from elk_resolver.store.migrate import migrate
from streams.ingest import build_ingest


async def produce(kafka: KafkaOptions, topic: str, records: list[bytes]) -> float:
    """Send every record (no key: Logstash's default spreads them over partitions); seconds."""
    started = time.perf_counter()
    producer = AIOKafkaProducer(**kafka, linger_ms=5, max_batch_size=1 << 20)
    await producer.start()
    try:
        pending = []
        for value in records:
            pending.append(await producer.send(topic, value))
            if len(pending) >= 5000:
                await asyncio.gather(*pending)
                pending = []
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return time.perf_counter() - started


async def _fresh_database(dsn: str) -> tuple[str, str]:
    name = f"bench_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    base, _, _ = dsn.rpartition("/")
    return name, f"{base}/{name}"


async def _drop_database(dsn: str, name: str) -> None:
    admin = await asyncpg.connect(dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def _load_patterns(database_url: str, count: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        rows = pattern_rows(count)
        async with conn.transaction():
            await conn.execute("DELETE FROM error_patterns")
            await conn.executemany(
                "INSERT INTO error_patterns (id, pattern_name, pattern_regex, error_category, priority, auto_resolve)"
                " VALUES ($1, $2, $3, $4, $5, $6)",
                [
                    (r["id"], r["pattern_name"], r["pattern_regex"], r["error_category"], r["priority"], r["auto_resolve"])
                    for r in rows
                ],
            )
    finally:
        await conn.close()


async def measure(
    bootstrap_servers: str,
    dsn: str,
    n: int = 100_000,
    *,
    records: list[bytes] | None = None,
    patterns: int = 30,
    partitions: int = 4,
    batch_max_records: int = 1000,
    seed: int = 6,
    timeout_s: float = 600.0,
    cpu_of: dict[str, int] | None = None,
) -> dict:
    """Produce ``n`` realistic events to fresh topics, run the ingest stage until it has
    committed all of them, and return ``events_per_s`` with the details. ``cpu_of`` names
    other processes (name -> pid, children included) whose CPU seconds during the run are
    reported beside this process's own."""
    if records is None:
        records = generate(n, seed).records
    n = len(records)
    name, database_url = await _fresh_database(dsn)
    try:
        await migrate(database_url)
        await _load_patterns(database_url, patterns)
        run = uuid.uuid4().hex[:10]
        settings = make_settings(
            kafka_bootstrap_servers=bootstrap_servers,
            database_url=database_url,
            topic_partitions=partitions,
            batch_max_records=batch_max_records,
        ).isolated(f"bench-{run}")
        await ensure_topics(client_options(settings), settings.topics(), partitions=partitions)
        produce_s = await produce(client_options(settings), settings.topic_raw, records)
        async with await create_pool(database_url, min_size=1, max_size=4) as pool:
            stage = build_ingest(settings, pool=pool)
            cpu_before = _cpu_seconds(cpu_of or {})
            own_before = time.process_time()
            await stage.start()
            try:
                deadline = time.monotonic() + timeout_s
                while stage.metrics.events_in < n:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{stage.metrics.events_in} of {n} events after {timeout_s}s")
                    await asyncio.sleep(0.02)
            finally:
                await stage.stop()
            own_cpu = time.process_time() - own_before
            cpu_after = _cpu_seconds(cpu_of or {})
            mt = stage.metrics
            rows = await pool.fetchrow(
                "SELECT count(*) AS rows, coalesce(sum(occurrence_count), 0)::bigint AS occurrences FROM error_logs"
            )
        seconds = mt.last_commit_at - mt.first_fetch_at
        return {
            "events": n,
            "mean_record_bytes": round(sum(map(len, records)) / n, 1),
            "seconds": round(seconds, 3),
            "events_per_s": round(n / seconds, 1),
            "batches": mt.batches,
            "mean_batch_latency_s": round(mt.batch_seconds_total / max(1, mt.batches), 4),
            "stored": mt.stored,
            "skipped": mt.skipped,
            "dead_lettered": mt.dead_lettered,
            "published": mt.published,
            "error_logs_rows": rows["rows"],
            "occurrences": rows["occurrences"],
            "produce_s": round(produce_s, 2),
            "cpu_s": {
                "ingest_process": round(own_cpu, 2),
                **{k: round(cpu_after[k] - cpu_before[k], 2) for k in cpu_after},
            },
            "patterns": patterns,
            "partitions": partitions,
            "batch_max_records": batch_max_records,
        }
    finally:
        await _drop_database(dsn, name)


def _cpu_seconds(pids: dict[str, int]) -> dict[str, float]:
    import psutil

    out = {}
    for name, pid in pids.items():
        total = 0.0
        try:
            root = psutil.Process(pid)
            for proc in [root, *root.children(recursive=True)]:
                try:
                    t = proc.cpu_times()
                    total += t.user + t.system
                except psutil.Error:
                    pass
        except psutil.Error:
            pass
        out[name] = total
    return out


def main(argv: list[str] | None = None) -> None:
    from elk_resolver.kafka.embedded import EmbeddedKafka, EmbeddedPostgres

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--patterns", type=int, default=30)
    parser.add_argument("--partitions", type=int, default=4)
    parser.add_argument("--batch", type=int, default=1000, help="batch_max_records")
    parser.add_argument("--fsync-off", action="store_true", help="PostgreSQL without fsync (not durable)")
    parser.add_argument("--profile", type=Path, help="write a cProfile of the run here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    records = generate(args.events).records
    with tempfile.TemporaryDirectory(prefix="elk-bench-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", durable=not args.fsync_off)
        kafka = EmbeddedKafka()
        dsn = pg.start()
        kafka.start()
        try:
            coro = measure(
                kafka.bootstrap_servers, dsn, records=records, patterns=args.patterns,
                partitions=args.partitions, batch_max_records=args.batch,
                cpu_of={"postgres": pg.pid, "broker": kafka.pid},
            )
            if args.profile:
                import cProfile

                profiler = cProfile.Profile()
                result = profiler.runcall(asyncio.run, coro)
                profiler.dump_stats(args.profile)
            else:
                result = asyncio.run(coro)
        finally:
            kafka.stop()
            pg.stop()
    result["postgres"] = "fsync off" if args.fsync_off else "durable (fsync on)"
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
