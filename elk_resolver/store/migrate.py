"""Numbered SQL migrations from ``schema/migrations``, applied in order, once.

Each file runs in its own transaction and is recorded with its SHA-256 in
``schema_migrations``. A session-level advisory lock serialises concurrent runners, so two
instances starting at once apply each migration exactly once. A file edited after it was
applied stops everything: the database no longer matches the code that describes it.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from importlib import resources

import asyncpg

# Any constant works; it only has to be the same in every copy of the service.
MIGRATION_LOCK_KEY = 0x454C4B5F4D494752  # "ELK_MIGR"

_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")


class MigrationError(RuntimeError):
    """The database and the migration files disagree."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations() -> list[Migration]:
    found = []
    for entry in resources.files("schema").joinpath("migrations").iterdir():
        match = _NAME.match(entry.name)
        if match:
            found.append(Migration(int(match[1]), match[2], entry.read_text(encoding="utf-8")))
    found.sort(key=lambda m: m.version)
    versions = [m.version for m in found]
    if len(set(versions)) != len(versions):
        raise MigrationError(f"two migration files share a version number: {versions}")
    return found


_CREATE_TABLE = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    checksum CHAR(64) NOT NULL,
    applied_at TIMESTAMP NOT NULL DEFAULT NOW()
)
"""


async def _applied(conn: asyncpg.Connection) -> dict[int, asyncpg.Record]:
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    if not exists:
        return {}
    rows = await conn.fetch("SELECT version, name, checksum FROM schema_migrations")
    return {row["version"]: row for row in rows}


def _verify(applied: dict[int, asyncpg.Record], migrations: list[Migration]) -> list[Migration]:
    """Return the pending migrations; raise if an applied one was edited or removed."""
    by_version = {m.version: m for m in migrations}
    for version, row in applied.items():
        migration = by_version.get(version)
        if migration is None:
            raise MigrationError(
                f"migration {version:04d}_{row['name']} is applied in the database but its file is missing"
            )
        if migration.checksum != row["checksum"].strip():
            raise MigrationError(
                f"migration {version:04d}_{migration.name}.sql was edited after it was applied "
                "(checksum differs); add a new migration instead of changing an applied one"
            )
    return [m for m in migrations if m.version not in applied]


async def migrate(dsn: str) -> list[Migration]:
    """Apply every pending migration; return the ones applied by this call."""
    migrations = load_migrations()
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        try:
            await conn.execute(_CREATE_TABLE)
            pending = _verify(await _applied(conn), migrations)
            for migration in pending:
                async with conn.transaction():
                    await conn.execute(migration.sql)
                    await conn.execute(
                        "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                        migration.version,
                        migration.name,
                        migration.checksum,
                    )
            return pending
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
    finally:
        await conn.close()


async def check(dsn_or_conn: str | asyncpg.Connection) -> None:
    """Refuse to run against a database that is behind or was migrated by other files."""
    conn = await asyncpg.connect(dsn_or_conn) if isinstance(dsn_or_conn, str) else dsn_or_conn
    try:
        pending = _verify(await _applied(conn), load_migrations())
    finally:
        if isinstance(dsn_or_conn, str):
            await conn.close()
    if pending:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in pending)
        raise MigrationError(f"the database is missing migrations ({names}); run `elk-resolver migrate`")
