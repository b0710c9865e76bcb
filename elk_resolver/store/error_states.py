"""Error states as the stages read them (migration 0130): whether messages about an error are
held back (muted, or snoozed while the snooze stands), and the pass that records a resolved
error that occurred again, or a snooze that ended, as open again (the monitor stage runs it).
People set states through :mod:`elk_resolver.operations.triage`."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from elk_resolver.store.db import queries

if TYPE_CHECKING:
    import asyncpg

log = logging.getLogger("elk_resolver.error_states")


async def silenced(conn: asyncpg.Connection | asyncpg.Pool, error_log_id: int | None) -> bool:
    """True when no message should go out about this error now."""
    if error_log_id is None:
        return False
    return bool(await conn.fetchval(queries().error_silenced, error_log_id))


async def reopen_due(pool: asyncpg.Pool) -> list[dict[str, Any]]:
    """Reopen, once, every resolved error with new occurrences and every ended snooze; the
    audit log's trigger records each as the service's decision, with why."""
    rows = [dict(r) for r in await pool.fetch(queries().error_states_reopen_due)]
    for row in rows:
        log.info("error %s %s", row["error_log_id"], row["reopen_reason"])
    return rows
