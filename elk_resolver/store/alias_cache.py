"""The alias table as an in-memory :class:`AliasIndex`, kept current while ingest runs; and
the supervision of the merge pass, which runs in a process of its own.

Every ``refresh_s`` seconds one cheap query (``fingerprint_state.alias_generation``, a
counter every merge, split and remap moves) tells whether the aliases changed; only then are
they read again. So every ingest copy applies the same aliases within ``refresh_s`` seconds
of a change (a pass's merges too). The pass itself never runs in this process: when one is
first due (``merge_every_s`` after start) the copy starts its
:class:`~elk_resolver.store.merge_worker.MergeWorker` process, which runs the passes from then
on (the advisory lock lets one copy's process run one at a time), and starts it again if it
died.

Per event the cost is one dictionary lookup of the fingerprint (the index memoises its
answers); a fingerprint not seen since the last reload also splits its template and probes
the learned templates of its shape (a few dictionary lookups).

When the database is unreachable the last index stays in use.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import asyncpg

from elk_resolver.events.merging import AliasIndex
from elk_resolver.store.db import queries
from elk_resolver.store.merge_pass import run_merge_pass
from elk_resolver.store.merge_worker import MERGE_PASS_SHARE, MergeWorker, next_pass_in
from elk_resolver.store.periodic import keep_refreshing, stop_task

__all__ = ["MERGE_PASS_SHARE", "AliasCache", "next_pass_in"]

log = logging.getLogger(__name__)


class AliasCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        refresh_s: float = 2.0,
        merge_every_s: float | None = 30.0,
        version: str = "template",
        settings: Any = None,
    ) -> None:
        """``settings`` (the database URL and pool options) lets the copy start its merge-pass
        process; without a database URL, or with ``merge_every_s`` None or 0, no pass runs."""
        self._pool = pool
        self._refresh_s = refresh_s
        self._merge_every_s = merge_every_s
        self._version = version
        self._generation: int | None = None
        self._task: asyncio.Task | None = None
        self._next_pass = 0.0
        self.worker = (
            MergeWorker(settings, every_s=merge_every_s, version=version)
            if merge_every_s and getattr(settings, "database_url", None)
            else None
        )
        self.current = AliasIndex()
        self.reloads = 0
        self.passes = 0

    async def refresh(self) -> bool:
        """Reload if the aliases changed; True when a new index was built."""
        q = queries()
        async with self._pool.acquire() as conn:
            generation = await conn.fetchval(q.alias_generation)
            if generation == self._generation:
                return False
            aliases = await conn.fetch(q.alias_all)
            learned = await conn.fetch(q.alias_learned)
        self.current = AliasIndex.build(((r[0], r[1]) for r in aliases), ((r[0], r[1], r[2]) for r in learned))
        self._generation = generation
        self.reloads += 1
        log.info("error aliases loaded: %d aliases, %d learned templates", len(aliases), len(learned),
                 extra={"stage": "ingest"})
        return True

    async def merge_pass(self) -> None:
        """One pass in this process, now (tests, commands): the service's passes run in the
        worker process."""
        result = await run_merge_pass(self._pool, version=self._version)
        if result.ran:
            self.passes += 1
            await self.refresh()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="alias-cache")

    async def _tick(self) -> None:
        await self.refresh()
        if self.worker is not None and time.monotonic() >= self._next_pass:
            # started when the first pass is due, and again (at most once an interval) if it died
            self._next_pass = time.monotonic() + (self._merge_every_s or 0)
            self.worker.ensure_running()

    async def _loop(self) -> None:
        self._next_pass = time.monotonic() + (self._merge_every_s or 0)
        await keep_refreshing(self._tick, self._refresh_s, "error aliases", log)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
        if self.worker is not None:
            await self.worker.stop()
