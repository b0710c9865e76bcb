"""`elk-resolver maintain`: the design document's maintenance section, made safe to run live.

What is deleted, in this order (the order respects every foreign key, so no step can fail on
one that a later step would have cleared):

1. ``decision_log`` rows (dry runs, skips, denials) older than the retention;
2. ``verifications`` of runs older than the retention, then those ``execution_history`` rows;
3. decided or expired ``approvals`` and incidents (with their objects), then
   ``execution_requests`` no approval or incident refers to, stored ``planned_requests``,
   and ``llm_requests`` cache rows, all older than the retention;
4. ``error_occurrences`` partitions whose whole month is older than the retention
   (``DROP TABLE``: no row-by-row delete, no bloat);
5. ``solutions`` that never ran, of errors last seen before the retention: nothing was learned
   from them;
6. ``error_logs`` last seen before the retention that no remaining solution or run refers to.

What survives, on purpose: a solution that has run keeps its row, its ``success_rate``,
``execution_count`` and ``success_count`` (the trigger fires on INSERT only and, since
migration 0008, counts incrementally, so deleting old history changes none of them and later
runs carry on from the learned counts), and the ``error_logs`` row its ``error_hash`` points
at, so the solution is still found when the error comes back.

Every delete runs in batches of ``batch_size`` rows, one short transaction each, with a short
``lock_timeout``: it never holds a lock for long and gives way to the service (a batch that
cannot get its locks is retried). Then ``ANALYZE`` on error_logs, solutions, execution_history.
Deleting needs the DELETE and DROP rights the application role does not have: run it as the
schema owner.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import asyncpg

from elk_resolver.store.db import queries

log = logging.getLogger("elk_resolver.maintain")

MAINTENANCE_LOCK_KEY = 0x454C4B5F4D41494E  # "ELK_MAIN": one maintenance run at a time
BATCH_SIZE = 1000
LOCK_TIMEOUT = "2s"
LOCK_RETRIES = 5

# (key in the summary, query name) for the batched deletes, in foreign-key-safe order.
_BEFORE_PARTITIONS = (
    ("decision_log", "maintain_delete_decision_log"),
    ("analysis_triggers", "maintain_delete_analysis_triggers"),
    ("verifications", "maintain_delete_verifications"),
    ("execution_history", "maintain_delete_execution_history"),
    ("approvals", "maintain_delete_approvals"),
    ("incident_objects", "maintain_delete_incident_objects"),
    ("incidents", "maintain_delete_incidents"),
    ("execution_requests", "maintain_delete_execution_requests"),
    ("planned_requests", "maintain_delete_planned_requests"),
    ("llm_requests", "maintain_delete_llm_requests"),
)
_AFTER_PARTITIONS = (
    ("solutions", "maintain_delete_unexecuted_solutions"),
    ("error_logs", "maintain_delete_error_logs"),
    ("error_templates", "maintain_delete_error_templates"),
    ("error_aliases", "maintain_delete_error_aliases"),
    ("backfill_cursors", "maintain_delete_backfill_cursors"),
)
_ANALYZE = ("error_logs", "solutions", "execution_history")
_UPPER_BOUND = re.compile(r"TO \('([^']+)'\)")


@dataclass
class MaintenanceResult:
    retention_days: int
    cutoff: datetime
    deleted: dict[str, int] = field(default_factory=dict)
    dropped_partitions: list[str] = field(default_factory=list)
    seconds: float = 0.0
    skipped: bool = False  # another copy holds the maintenance lock

    def summary(self) -> dict:
        return {**self.deleted, "error_occurrences_partitions": self.dropped_partitions}


async def _batched_delete(pool: asyncpg.Pool, sql: str, cutoff: datetime, batch_size: int) -> int:
    total = 0
    failures = 0
    while True:
        try:
            async with pool.acquire() as conn, conn.transaction():
                await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                status = await conn.execute(sql, cutoff, batch_size)
        except asyncpg.LockNotAvailableError:
            failures += 1
            if failures > LOCK_RETRIES:
                log.warning("maintain: gave up on a batch after %d lock timeouts", failures)
                return total
            await asyncio.sleep(0.2 * failures)
            continue
        n = int(status.rsplit(" ", 1)[1])
        total += n
        if n < batch_size:
            return total


ODD_PARTITION = "error_occurrences_odd"


async def _drop_partitions(pool: asyncpg.Pool, cutoff: datetime) -> list[str]:
    q = queries()
    dropped = []
    async with pool.acquire() as conn:
        # first the horizon: from now on nothing creates or counts a month retention drops
        # (a replay would otherwise count its records again)
        await conn.execute(q.maintain_advance_occurrence_horizon, cutoff.date())
        await conn.execute(q.maintain_prune_odd_occurrences)
        rows = await conn.fetch(q.maintain_occurrence_partitions)
    for row in rows:
        if row["name"] == ODD_PARTITION:
            continue  # no month: its rows go by when they were received (pruned above)
        match = _UPPER_BOUND.search(row["bound"] or "")
        if not match:
            continue  # a DEFAULT partition has no upper bound: never expires as a whole
        upper = datetime.fromisoformat(match[1])
        if upper > cutoff:
            continue
        for attempt in range(LOCK_RETRIES):
            try:
                async with pool.acquire() as conn, conn.transaction():
                    await conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
                    await conn.execute(f'DROP TABLE IF EXISTS "{row["name"]}"')
                dropped.append(row["name"])
                break
            except asyncpg.LockNotAvailableError:
                await asyncio.sleep(0.2 * (attempt + 1))
        else:
            log.warning("maintain: could not drop partition %s (busy); next run will", row["name"])
    return dropped


async def _record_retention(conn: asyncpg.Connection, retention_days: int) -> None:
    """The schema owner's retention becomes the one the partition functions hold the service
    role to (``retention_policy``, migration 0080); the service role may not change it."""
    try:
        async with conn.transaction():
            await conn.execute(queries().maintain_record_retention, retention_days)
    except asyncpg.InsufficientPrivilegeError:
        log.debug("maintain: this role may not change retention_policy; the owner's retention stays")


async def maintain(
    pool: asyncpg.Pool, *, retention_days: int, batch_size: int = BATCH_SIZE, wait_for_lock: bool = True
) -> MaintenanceResult:
    """Delete what is older than ``retention_days`` (see the module docstring), then ANALYZE."""
    if retention_days < 1:
        raise ValueError("retention must be at least one day")
    q = queries()
    started = time.monotonic()
    async with pool.acquire() as lock_conn:
        now = await lock_conn.fetchval("SELECT LOCALTIMESTAMP")
        result = MaintenanceResult(retention_days, now - timedelta(days=retention_days))
        if wait_for_lock:
            await lock_conn.execute("SELECT pg_advisory_lock($1)", MAINTENANCE_LOCK_KEY)
        elif not await lock_conn.fetchval("SELECT pg_try_advisory_lock($1)", MAINTENANCE_LOCK_KEY):
            result.skipped = True
            return result
        try:
            await _record_retention(lock_conn, retention_days)
            run_id = await lock_conn.fetchval(q.maintenance_start, retention_days)
            for key, name in _BEFORE_PARTITIONS:
                result.deleted[key] = await _batched_delete(pool, q[name], result.cutoff, batch_size)
            result.dropped_partitions = await _drop_partitions(pool, result.cutoff)
            for key, name in _AFTER_PARTITIONS:
                result.deleted[key] = await _batched_delete(pool, q[name], result.cutoff, batch_size)
            for table in _ANALYZE:
                await lock_conn.execute(f"ANALYZE {table}")
            result.seconds = time.monotonic() - started
            await lock_conn.execute(q.maintenance_finish, run_id, result.summary())
        finally:
            await lock_conn.execute("SELECT pg_advisory_unlock($1)", MAINTENANCE_LOCK_KEY)
    log.info("maintain: retention %d days, deleted %s", retention_days, result.summary())
    return result


async def maintenance_due(pool: asyncpg.Pool, every: timedelta = timedelta(days=1)) -> bool:
    async with pool.acquire() as conn:
        last = await conn.fetchval(queries().maintenance_last_finished)
        now = await conn.fetchval("SELECT LOCALTIMESTAMP")
    return last is None or now - last >= every
