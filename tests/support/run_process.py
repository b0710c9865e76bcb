"""An ``elk-resolver run`` process under a test's control: its HTTP endpoints, its log, and
the signals a fault test sends it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx

from elk_resolver.kafka.embedded import free_port


def run_env(settings, port: int, **extra: str) -> dict[str, str]:
    """The environment of a ``run`` process pointing at the test's services, topics and groups."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELK_RESOLVER_")}
    env.update({
        "ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers,
        "ELK_RESOLVER_DATABASE_URL": settings.database_url,
        "ELK_RESOLVER_TOPIC_RAW": settings.topic_raw,
        "ELK_RESOLVER_TOPIC_ANALYSIS": settings.topic_analysis,
        "ELK_RESOLVER_TOPIC_EXECUTION": settings.topic_execution,
        "ELK_RESOLVER_TOPIC_RESULTS": settings.topic_results,
        "ELK_RESOLVER_TOPIC_DLQ": settings.topic_dlq,
        "ELK_RESOLVER_TOPIC_APPROVALS": settings.topic_approvals,
        "ELK_RESOLVER_TOPIC_PARTITIONS": str(settings.topic_partitions),
        "ELK_RESOLVER_GROUP_INGEST": settings.group_ingest,
        "ELK_RESOLVER_GROUP_ANALYZE": settings.group_analyze,
        "ELK_RESOLVER_GROUP_EXECUTE": settings.group_execute,
        "ELK_RESOLVER_SESSION_TIMEOUT_MS": "6000",
        "ELK_RESOLVER_HEARTBEAT_INTERVAL_MS": "1000",
        "ELK_RESOLVER_HTTP_PORT": str(port),
        "ELK_RESOLVER_BATCH_MAX_RECORDS": "200",
        "ELK_RESOLVER_LOG_JSON": "true",
    })
    env.update({f"ELK_RESOLVER_{k.upper()}": str(v) for k, v in extra.items()})
    return env


async def run_once(settings, workdir: Path, *stages: str, port: int = 0) -> subprocess.CompletedProcess:
    """``elk-resolver run --stage ...`` that is expected to refuse to start: its exit status
    and its plain (not JSON) stderr."""
    env = run_env(settings, port)
    env.pop("ELK_RESOLVER_LOG_JSON")
    args = [a for s in stages for a in ("--stage", s)]
    return await asyncio.to_thread(
        subprocess.run, [sys.executable, "-m", "elk_resolver.cli", "run", *args], env=env, cwd=workdir,
        capture_output=True, text=True, timeout=120)


class RunProcess:
    """``elk-resolver run --stage ...`` in a subprocess; ``with`` kills it if still running."""

    def __init__(self, settings, workdir: Path, *stages: str, name: str = "run", **extra: str) -> None:
        self.port = free_port()
        self.log_path = workdir / f"{name}.log"
        args = [a for s in (stages or ("ingest",)) for a in ("--stage", s)]
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "elk_resolver.cli", "run", *args],
            env=run_env(settings, self.port, **extra), cwd=workdir, stdout=subprocess.DEVNULL,
            stderr=open(self.log_path, "wb"),  # noqa: SIM115 - the process owns it
        )
        self.http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{self.port}", timeout=8)

    def __enter__(self) -> RunProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    async def aclose(self) -> None:
        await self.http.aclose()

    async def ready(self) -> tuple[int, dict] | None:
        """(status, body) of ``/ready``; None when the process does not answer."""
        try:
            reply = await self.http.get("/ready")
            return reply.status_code, reply.json()
        except (httpx.HTTPError, ValueError):
            return None

    async def metric(self, name: str, **labels: str) -> float | None:
        try:
            text = (await self.http.get("/metrics")).text
        except httpx.HTTPError:
            return None
        want = name + ("{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else "")
        for line in text.splitlines():
            if line.startswith(want + " "):
                return float(line.split()[-1])
        return None

    def log_lines(self) -> list[str]:
        return self.log_path.read_text(errors="replace").splitlines()

    def terminate(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
