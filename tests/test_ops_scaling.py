"""Two `elk-resolver run --stage ingest` processes in one group share the partitions and,
between them, store every event exactly once, even when one is killed mid-stream."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import orjson
from aiokafka import AIOKafkaProducer

from elk_resolver.kafka.embedded import free_port
from tests.support.polling import wait_for
from tests.support.run_process import run_env

N_EVENTS = 3000


def _env(settings, port: int) -> dict[str, str]:
    return run_env(settings, port)


def _assigned(metrics: str) -> int:
    for line in metrics.splitlines():
        if line.startswith('elk_resolver_assigned_partitions{stage="ingest"}'):
            return int(float(line.split()[-1]))
    return -1


async def test_two_run_processes_split_partitions_and_store_everything_once_even_when_one_dies(settings, pool, tmp_path):
    ports = [free_port(), free_port()]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "elk_resolver.cli", "run", "--stage", "ingest"],
            env=_env(settings, port), cwd=tmp_path, stdout=subprocess.DEVNULL,
            stderr=open(tmp_path / f"run-{i}.log", "wb"),  # noqa: SIM115
        )
        for i, port in enumerate(ports)
    ]
    try:
        async with httpx.AsyncClient(timeout=3) as http:

            async def split() -> bool:
                try:
                    counts = [_assigned((await http.get(f"http://127.0.0.1:{p}/metrics")).text) for p in ports]
                    ready = [(await http.get(f"http://127.0.0.1:{p}/ready")).status_code for p in ports]
                except httpx.HTTPError:
                    return False
                return counts == [2, 2] and ready == [200, 200]

            await wait_for(split, timeout=60, interval=0.2, what="both processes ready with 2 partitions each")

        producer = AIOKafkaProducer(bootstrap_servers=settings.kafka_bootstrap_servers, linger_ms=5)
        await producer.start()
        try:
            futures = []
            for i in range(N_EVENTS):
                value = orjson.dumps({"@timestamp": "2024-05-01T10:00:00Z", "log": {"level": "error"},
                                      "message": f"OOMKilled container worker-{i % 7}",
                                      "service": {"name": f"svc-{i % 11}"}, "event": {"hash": f"e-{i}"}})
                futures.append(await producer.send(settings.topic_raw, value, key=str(i).encode()))
                if i == N_EVENTS // 3:
                    for f in futures:
                        await f

                    async def some_stored() -> bool:
                        async with pool.acquire() as conn:
                            return await conn.fetchval("SELECT count(*) FROM error_occurrences") > 0

                    await wait_for(some_stored, timeout=30, what="first events stored")
                    procs[0].send_signal(signal.SIGKILL)  # mid-stream, no chance to commit
            for f in futures:
                await f
        finally:
            await producer.stop()

        async def all_stored() -> bool:
            async with pool.acquire() as conn:
                return await conn.fetchval("SELECT count(*) FROM error_occurrences") >= N_EVENTS

        await wait_for(all_stored, timeout=60, interval=0.2, what=f"{N_EVENTS} occurrences")
        async with pool.acquire() as conn:
            assert await conn.fetchval("SELECT count(*) FROM error_occurrences") == N_EVENTS
            assert await conn.fetchval("SELECT sum(occurrence_count) FROM error_logs") == N_EVENTS
            # one distinct error: the template fingerprint folds worker-0..6 together
            assert await conn.fetchval("SELECT count(*) FROM error_logs") == 1
        assert procs[1].poll() is None
        procs[1].send_signal(signal.SIGTERM)
        assert procs[1].wait(30) == 0  # a clean stop on SIGTERM
        lines = [orjson.loads(line) for line in (tmp_path / "run-1.log").read_bytes().splitlines()
                 if line.startswith(b"{")]
        assert lines and all({"time", "level", "logger", "message"} <= set(line) for line in lines)
        assert any(line.get("stage") == "ingest" for line in lines)
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
