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
        next_month = await app.fetchval("SELECT (date_trunc('month', CURRENT_DATE) + INTERVAL '1 month')::date")
        assert await app.fetchval("SELECT ensure_error_occurrences_partition($1)", next_month) == \
            f"error_occurrences_y{next_month:%Y}m{next_month:%m}"
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
        assert after in (before, before + 1)  # next month's may exist already
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


async def test_the_service_role_cannot_drop_a_partition_inside_the_retention_nor_create_far_ahead(database_url):
    """Issue 21: as elk_resolver_user, drop(current_date) dropped a month inside the 90-day
    retention and ensure('9999-12-01') created a partition."""
    await apply_roles(database_url, readonly_password="ro-secret", app_password="app-secret")
    owner = await asyncpg.connect(database_url)
    try:
        last_month = await owner.fetchval("SELECT (date_trunc('month', CURRENT_DATE) - INTERVAL '1 month')::date")
        kept = await owner.fetchval("SELECT ensure_error_occurrences_partition($1)", last_month)
        old = await owner.fetchval("SELECT ensure_error_occurrences_partition('2020-03-01')")
        assert await owner.fetchval("SELECT retention_days FROM retention_policy") == 90
    finally:
        await owner.close()
    app = await asyncpg.connect(_as_role(database_url, "elk_resolver_user", "app-secret"))
    try:
        for cutoff in ("CURRENT_DATE", "CURRENT_DATE - 89", "CURRENT_DATE - 31"):
            with pytest.raises(asyncpg.InvalidParameterValueError, match="inside the configured retention"):
                await app.fetch(f"SELECT drop_expired_error_occurrences_partitions({cutoff})")
        # more than a month ahead of the database's clock (0095: 0080's bound and 0090's in one)
        for month in ("9999-12-01", "2200-01-01"):
            with pytest.raises(asyncpg.DatetimeFieldOverflowError, match="ahead of the database clock"):
                await app.fetch(f"SELECT ensure_error_occurrences_partition('{month}')")
        with pytest.raises(asyncpg.DatetimeFieldOverflowError):
            await app.fetch("SELECT ensure_error_occurrences_partition(CURRENT_DATE + 100)")
        # nor move the bound it is held to
        with pytest.raises(asyncpg.InsufficientPrivilegeError):
            await app.execute("UPDATE retention_policy SET retention_days = 1")
        # what lies past the retention it may still drop
        dropped = [r[0] for r in await app.fetch("SELECT drop_expired_error_occurrences_partitions(CURRENT_DATE - 90)")]
        assert old in dropped and kept not in dropped
    finally:
        await app.close()
    owner = await asyncpg.connect(database_url)
    try:
        assert await owner.fetchval("SELECT to_regclass($1)", kept) is not None
        assert await owner.fetchval("SELECT to_regclass('error_occurrences_y9999m12')") is None
    finally:
        await owner.close()


async def test_maintain_as_the_owner_records_the_retention_the_service_role_is_held_to(pool):
    from elk_resolver.store.maintain import maintain

    await maintain(pool, retention_days=120)
    assert await pool.fetchval("SELECT retention_days FROM retention_policy") == 120
    await maintain(pool, retention_days=90)
    assert await pool.fetchval("SELECT retention_days FROM retention_policy") == 90
