"""Where the service finds Kafka and PostgreSQL: configured URLs, else the embedded default."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field

import asyncpg

from elk_resolver.kafka.embedded import EmbeddedKafka, EmbeddedPostgres, port_open
from elk_resolver.kafka.security import client_options
from elk_resolver.kafka.gated import GatedKafka
from elk_resolver.kafka.topics import ensure_topics
from elk_resolver.settings import Settings
from elk_resolver.store.migrate import migrate

DATABASE_NAME = "elk_resolver"  # the name the document's GRANT statements use
PREFERRED_KAFKA_PORT = 9092
PREFERRED_POSTGRES_PORT = 54329


@dataclass
class Services:
    kafka_bootstrap_servers: str
    database_url: str
    embedded: list[object] = field(default_factory=list)

    @property
    def embedded_kafka(self) -> bool:
        return any(isinstance(s, EmbeddedKafka | GatedKafka) for s in self.embedded)

    @property
    def embedded_postgres(self) -> bool:
        return any(isinstance(s, EmbeddedPostgres) for s in self.embedded)


def _preferred(port: int) -> int | None:
    return None if port_open("127.0.0.1", port) else port


@contextlib.contextmanager
def services(settings: Settings):
    """Yield the services to use, starting embedded ones for whatever is not configured.

    Embedded services are stopped when the block exits, however it exits. Call it from the
    main thread: the children are tied to the thread that starts them.
    """
    started: list[GatedKafka | EmbeddedPostgres] = []
    try:
        database_url = settings.database_url
        if database_url is None:
            settings.state_dir.mkdir(parents=True, exist_ok=True)
            pg = EmbeddedPostgres(settings.state_dir / "postgres", port=_preferred(PREFERRED_POSTGRES_PORT))
            pg.start()
            started.append(pg)
            database_url = pg.dsn(DATABASE_NAME)
        kafka = settings.kafka_bootstrap_servers
        if kafka is None:
            # restarted by itself, and reachable only once its topics are back (gated.py says why)
            broker = GatedKafka(settings.topics(), partitions=settings.topic_partitions,
                                replication_factor=settings.topic_replication_factor,
                                port=_preferred(PREFERRED_KAFKA_PORT))
            kafka = broker.start()
            started.append(broker)
        yield Services(kafka, database_url, list(started))
    finally:
        for service in reversed(started):
            service.stop()


async def ensure_database(dsn: str) -> None:
    """Create the database named in the DSN if the server lacks it (embedded first start)."""
    try:
        conn = await asyncpg.connect(dsn)
    except asyncpg.InvalidCatalogNameError:
        name = dsn.rsplit("/", 1)[1].split("?", 1)[0]
        admin = await asyncpg.connect(dsn.rsplit("/", 1)[0] + "/postgres")
        try:
            with contextlib.suppress(asyncpg.DuplicateDatabaseError):
                await admin.execute(f'CREATE DATABASE "{name}"')
        finally:
            await admin.close()
    else:
        await conn.close()


async def prepare(settings: Settings, svc: Services) -> None:
    """Topics with the configured partition count, and the schema migrated."""
    if svc.embedded_postgres:
        await ensure_database(svc.database_url)
    await migrate(svc.database_url)
    await ensure_topics(
        client_options(settings, bootstrap_servers=svc.kafka_bootstrap_servers),
        settings.topics(),
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
    )
