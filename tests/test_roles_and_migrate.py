"""The document's roles, and the migration runner's guarantees, against a real PostgreSQL."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from elk_resolver.store import migrate as migrate_module
from elk_resolver.store.migrate import Migration, MigrationError, check, load_migrations, migrate
from elk_resolver.store.roles import apply_roles


def _as_role(dsn: str, role: str, password: str) -> str:
    scheme, rest = dsn.split("://", 1)
    host_and_db = rest.split("@", 1)[1]
    return f"{scheme}://{role}:{password}@{host_and_db}"


async def test_readonly_role_cannot_write_and_app_role_cannot_delete_or_drop(database_url):
    await apply_roles(database_url, readonly_password="ro-secret", app_password="app-secret")

    ro = await asyncpg.connect(_as_role(database_url, "elk_readonly", "ro-secret"))
    try:
        assert await ro.fetchval("SELECT count(*) FROM error_patterns") == 3
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await ro.execute(
                "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category) VALUES ('a', 'b', 'c')"
            )
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await ro.execute("UPDATE error_patterns SET priority = 9")
    finally:
        await ro.close()

    app = await asyncpg.connect(_as_role(database_url, "elk_resolver_user", "app-secret"))
    try:
        new_id = await app.fetchval(
            "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category) VALUES ('a', 'b', 'c') RETURNING id"
        )
        await app.execute("UPDATE error_patterns SET priority = 9 WHERE id = $1", new_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("DELETE FROM error_patterns WHERE id = $1", new_id)
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("DROP TABLE error_patterns")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("TRUNCATE error_logs")
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("CREATE TABLE sneaky (id int)")
        # the audit log is written, never rewritten (0130): the triggers' rows stay as written
        await app.execute("UPDATE error_patterns SET auto_resolve = NOT auto_resolve, updated_by = 'app' WHERE id = 1")
        assert await app.fetchval("SELECT actor FROM audit_log ORDER BY id DESC LIMIT 1") == "app"
        for statement in ("UPDATE audit_log SET actor = 'someone else'", "DELETE FROM audit_log"):
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await app.execute(statement)
    finally:
        await app.close()


async def test_migrate_twice_changes_nothing(empty_database_url):
    first = await migrate(empty_database_url)
    assert [m.version for m in first] == [m.version for m in load_migrations()]
    conn = await asyncpg.connect(empty_database_url)
    try:
        before = await conn.fetch("SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version")
        assert await migrate(empty_database_url) == []
        after = await conn.fetch("SELECT version, checksum, applied_at FROM schema_migrations ORDER BY version")
        assert before == after
        assert await conn.fetchval("SELECT count(*) FROM error_patterns") == 3
    finally:
        await conn.close()
    await check(empty_database_url)


async def test_concurrent_migrations_apply_each_file_once(empty_database_url):
    results = await asyncio.gather(*(migrate(empty_database_url) for _ in range(4)))
    applied = sorted(m.version for result in results for m in result)
    assert applied == [m.version for m in load_migrations()]
    conn = await asyncpg.connect(empty_database_url)
    try:
        assert await conn.fetchval("SELECT count(*) FROM schema_migrations") == len(load_migrations())
        assert await conn.fetchval("SELECT count(*) FROM error_patterns") == 3
    finally:
        await conn.close()


async def test_an_edited_applied_migration_refuses_to_start(empty_database_url, monkeypatch):
    await migrate(empty_database_url)
    original = load_migrations()
    edited = [
        Migration(m.version, m.name, m.sql + "\n-- edited") if m.version == 1 else m for m in original
    ]
    monkeypatch.setattr(migrate_module, "load_migrations", lambda: edited)
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await migrate(empty_database_url)
    with pytest.raises(MigrationError, match="edited after it was applied"):
        await check(empty_database_url)


async def test_check_refuses_a_database_that_is_behind(empty_database_url):
    with pytest.raises(MigrationError, match="missing migrations"):
        await check(empty_database_url)
