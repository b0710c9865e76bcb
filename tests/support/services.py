"""Real Kafka and PostgreSQL for the tests, chosen per service.

Order: a URL from the environment (``ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS``,
``ELK_RESOLVER_DATABASE_URL``); else testcontainers when a Docker engine answers; else the
embedded binaries the product itself uses. Only embedded PostgreSQL can be stopped and
started by a test (``controllable``); tests that need that skip otherwise.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import tempfile
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from elk_resolver.kafka.embedded import EmbeddedKafka, EmbeddedPostgres, which_docker_answers


@dataclass
class KafkaService:
    bootstrap_servers: str
    kind: str


@dataclass
class PostgresService:
    admin_dsn: str  # a DSN to the maintenance database, with rights to CREATE DATABASE
    kind: str
    stop: Callable[[], None] | None = None
    start: Callable[[], None] | None = None
    pid: Callable[[], int | None] | None = None

    def freeze(self) -> None:
        """SIGSTOP the server and all its backends: connections stay open, nothing answers."""
        self._signal_tree(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal_tree(signal.SIGCONT)

    def _signal_tree(self, sig: int) -> None:
        root = self.pid() if self.pid is not None else None
        if root is None:
            raise RuntimeError("PostgreSQL is not under the test's control")
        for pid in [root, *_children(root)]:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    @property
    def controllable(self) -> bool:
        return self.stop is not None

    def dsn(self, database: str) -> str:
        base, _, _ = self.admin_dsn.rpartition("/")
        return f"{base}/{database}"


def _children(root: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == root:
            found.append(int(entry.name))
    return found


def kafka_service(stack: ExitStack) -> KafkaService:
    url = os.environ.get("ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS")
    if url:
        return KafkaService(url, "environment")
    if which_docker_answers():
        from testcontainers.kafka import KafkaContainer

        container = stack.enter_context(KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft())
        return KafkaService(container.get_bootstrap_server(), "testcontainers")
    broker = EmbeddedKafka()
    broker.start()
    stack.callback(broker.stop)
    return KafkaService(broker.bootstrap_servers, "embedded")


def postgres_service(stack: ExitStack) -> PostgresService:
    url = os.environ.get("ELK_RESOLVER_DATABASE_URL")
    if url:
        return PostgresService(url, "environment")
    if which_docker_answers():
        from testcontainers.postgres import PostgresContainer

        container = stack.enter_context(PostgresContainer("postgres:16-alpine", driver=None))
        return PostgresService(container.get_connection_url(), "testcontainers")
    workdir = Path(tempfile.mkdtemp(prefix="elk-resolver-test-pg-"))
    stack.callback(shutil.rmtree, workdir, True)
    server = EmbeddedPostgres(workdir / "data", durable=False)
    server.start()
    stack.callback(server.stop)
    return PostgresService(server.dsn("postgres"), "embedded", stop=server.stop, start=server.start,
                           pid=lambda: server.pid)
