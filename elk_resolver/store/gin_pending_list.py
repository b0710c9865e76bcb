"""The pass that moves the pending list of error_logs' GIN index into the index, run beside
the ingest stage's writes instead of inside one of them (migration 0065 says why).

Every ``every_s`` one call of ``clean_error_logs_gin_pending_list()`` on a pooled connection.
With the list drained twice a second it stays far below ``gin_pending_list_limit``, so no
ingest INSERT ever makes the pass itself. Several ingest copies may each run it: a second pass
waits for the first and finds little left. A database outage is logged once and the pass
resumes with the database (:func:`elk_resolver.store.periodic.keep_refreshing`)."""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from elk_resolver.store.db import queries
from elk_resolver.store.periodic import keep_refreshing, stop_task

log = logging.getLogger(__name__)


class GinPendingListCleaner:
    def __init__(self, pool: asyncpg.Pool, *, every_s: float = 0.5) -> None:
        self._pool = pool
        self._every_s = every_s
        self._task: asyncio.Task | None = None
        self.passes = 0
        self.pages = 0

    async def clean(self) -> int:
        """One pass; the pending-list pages it moved into the index."""
        async with self._pool.acquire() as conn:
            pages = await conn.fetchval(queries().ingest_clean_gin_pending_list)
        self.passes += 1
        self.pages += pages or 0
        return pages or 0

    async def start(self) -> None:
        if self._every_s > 0 and self._task is None:
            self._task = asyncio.create_task(
                keep_refreshing(self.clean, self._every_s, "GIN pending-list pass", log), name="gin-pending-list"
            )

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
