"""The opt-in roles step: ``elk_readonly`` and ``elk_resolver_user`` as the document defines them.

Run it as a superuser after ``migrate``. The service then connects as ``elk_resolver_user``
(INSERT, SELECT, UPDATE: no DELETE, no DDL); ``maintain`` deletes, so run it as the owner.
"""

from __future__ import annotations

from importlib import resources

import asyncpg


def roles_sql() -> str:
    return resources.files("schema").joinpath("roles", "roles.sql").read_text(encoding="utf-8")


async def apply_roles(dsn: str, *, readonly_password: str, app_password: str) -> None:
    conn = await asyncpg.connect(dsn)
    try:
        async with conn.transaction():
            await conn.execute(
                "SELECT set_config('elk.readonly_password', $1, true), set_config('elk.app_password', $2, true)",
                readonly_password,
                app_password,
            )
            await conn.execute(roles_sql())
    finally:
        await conn.close()
