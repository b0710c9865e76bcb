from __future__ import annotations

import logging
import uuid
from contextlib import ExitStack

import asyncpg
import pytest

from elk_resolver.kafka.security import client_options
from elk_resolver.kafka.topics import ensure_topics
from elk_resolver.settings import make_settings
from elk_resolver.store.db import create_pool
from elk_resolver.store.migrate import migrate
from tests.support.services import kafka_service, postgres_service

TEMPLATE_DB = "elk_resolver_template"


@pytest.fixture(autouse=True)
def _process_logging_as_it_was():
    """Tests call the CLI's ``main()`` in this process, and it sets up the process's logging
    as a command does: a handler on the stderr of the moment (pytest's capture, closed after
    the test), the root level, aiokafka's. Left in place, every later test's log record went
    to a closed file ('--- Logging error --- ValueError: I/O operation on closed file'), at
    the level the last command chose. Each test ends with the logging it started with
    (pytest's own capture handlers come and go by themselves)."""
    root = logging.getLogger()
    names = ("aiokafka", "elk_resolver.broker")
    levels = {name: logging.getLogger(name).level for name in (None, *names)}
    before = set(root.handlers)
    yield
    for handler in root.handlers[:]:
        if handler not in before and type(handler) is logging.StreamHandler:  # the CLI's, not pytest's
            root.removeHandler(handler)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


@pytest.fixture(scope="session")
def _services_stack():
    with ExitStack() as stack:
        yield stack


@pytest.fixture(scope="session")
def kafka(_services_stack):
    return kafka_service(_services_stack)


@pytest.fixture(scope="session")
def postgres(_services_stack):
    return postgres_service(_services_stack)


@pytest.fixture(scope="session")
async def template_database(postgres):
    """A migrated database that every test's database is copied from (fast, and clean)."""
    admin = await asyncpg.connect(postgres.admin_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
        await admin.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
    finally:
        await admin.close()
    await migrate(postgres.dsn(TEMPLATE_DB))
    return TEMPLATE_DB


async def create_database(postgres, template: str | None) -> str:
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = await asyncpg.connect(postgres.admin_dsn)
    try:
        clause = f' TEMPLATE "{template}"' if template else ""
        await admin.execute(f'CREATE DATABASE "{name}"{clause}')
    finally:
        await admin.close()
    return name


async def drop_database(postgres, name: str) -> None:
    try:
        admin = await asyncpg.connect(postgres.admin_dsn)
    except (OSError, asyncpg.PostgresError):
        return  # the server was stopped by the test; its data directory goes with the session
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


@pytest.fixture
async def database_url(postgres, template_database):
    """A fresh, migrated database for this test only."""
    name = await create_database(postgres, template_database)
    yield postgres.dsn(name)
    await drop_database(postgres, name)


@pytest.fixture
async def empty_database_url(postgres):
    """A fresh database with no schema at all (migration tests)."""
    name = await create_database(postgres, None)
    yield postgres.dsn(name)
    await drop_database(postgres, name)


@pytest.fixture
async def pool(database_url):
    async with await create_pool(database_url, min_size=1, max_size=5) as pool:
        yield pool


@pytest.fixture
def unique():
    """A short unique suffix for topic and group names: one topic set per test."""
    return uuid.uuid4().hex[:12]


@pytest.fixture
async def settings(kafka, database_url, unique, tmp_path):
    """Settings pointing at the real services, with topics and groups unique to this test."""
    s = make_settings(
        kafka_bootstrap_servers=kafka.bootstrap_servers,
        database_url=database_url,
        state_dir=tmp_path / "state",
        topic_partitions=4,
        http_port=0,
        settle_s=0.0,  # decisions at once; the incident scenarios set their settle time
    ).isolated(f"t-{unique}")
    await ensure_topics(client_options(s), s.topics(), partitions=s.topic_partitions)
    return s
