"""The SECURITY DEFINER functions (issue 12's security review): no EXECUTE for PUBLIC or the
read-only role, pg_temp last on their search_path, no retention cutoff in the future."""

from __future__ import annotations

import asyncpg
import pytest

from elk_resolver.store.roles import apply_roles
from tests.test_roles_and_migrate import _as_role

FUNCTIONS = ("ensure_error_occurrences_partition", "drop_expired_error_occurrences_partitions")


async def test_readonly_role_cannot_drop_partitions_and_the_service_role_can_only_create_them(database_url):
    await apply_roles(database_url, readonly_password="ro-secret", app_password="app-secret")
    owner = await asyncpg.connect(database_url)
    try:
        before = await owner.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'error_occurrences'::regclass")
        # a role nobody granted anything to: what PUBLIC may do
        await owner.execute("DROP ROLE IF EXISTS elk_nobody; CREATE ROLE elk_nobody LOGIN PASSWORD 'x'")
        await owner.execute("GRANT USAGE ON SCHEMA public TO elk_nobody")
    finally:
        await owner.close()
    for role, password in (("elk_readonly", "ro-secret"), ("elk_nobody", "x")):
        conn = await asyncpg.connect(_as_role(database_url, role, password))
        try:
            for fn, arg in ((FUNCTIONS[1], "2100-01-01"), (FUNCTIONS[0], "2030-01-01")):
                with pytest.raises(asyncpg.InsufficientPrivilegeError):
                    await conn.fetch(f"SELECT {fn}('{arg}'::date)")
        finally:
            await conn.close()
    app = await asyncpg.connect(_as_role(database_url, "elk_resolver_user", "app-secret"))
    try:
        assert await app.fetchval("SELECT ensure_error_occurrences_partition('2024-01-01')") == "error_occurrences_y2024m01"
        # more than a month ahead of the clock: no partition retention would never remove (0090)
        with pytest.raises(asyncpg.DatetimeFieldOverflowError):
            await app.fetch("SELECT ensure_error_occurrences_partition('2150-01-01')")
        with pytest.raises(asyncpg.InvalidParameterValueError):
            await app.fetch("SELECT drop_expired_error_occurrences_partitions('2100-01-01')")
    finally:
        await app.close()
    owner = await asyncpg.connect(database_url)
    try:
        after = await owner.fetchval("SELECT count(*) FROM pg_inherits WHERE inhparent = 'error_occurrences'::regclass")
        assert after == before + 1
        await owner.execute("DROP OWNED BY elk_nobody; DROP ROLE elk_nobody")
    finally:
        await owner.close()


async def test_security_definer_functions_put_pg_temp_last_and_grant_nothing_to_public(pool):
    rows = await pool.fetch(
        "SELECT proname, proconfig, proacl::text[] AS acl FROM pg_proc WHERE prosecdef AND proname = any($1::text[])",
        list(FUNCTIONS),
    )
    assert sorted(r["proname"] for r in rows) == sorted(FUNCTIONS)
    for r in rows:
        assert r["proconfig"] == ["search_path=public, pg_temp"], r["proname"]
        # an ACL entry "=X/owner" is EXECUTE for PUBLIC; NULL means the default, which includes it
        assert r["acl"] is not None and not any(entry.startswith("=") for entry in r["acl"]), r["acl"]
