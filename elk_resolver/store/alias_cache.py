"""The alias table as an in-memory :class:`AliasIndex`, kept current while ingest runs; and
the periodic merge pass.

Every ``refresh_s`` seconds one cheap query (``fingerprint_state.alias_generation``, a
counter every merge, split and remap moves) tells whether the aliases changed; only then are
they read again. So every ingest copy applies the same aliases within ``refresh_s`` seconds
of a change. Every ``merge_every_s`` seconds this copy also tries the merge pass; the
advisory lock lets one copy run it at a time, the others skip. A long pass spaces the next
ones out, so passes take at most ``MERGE_PASS_SHARE`` of the copy's time.

Per event the cost is one dictionary lookup of the fingerprint (the index memoises its
answers); a fingerprint not seen since the last reload also splits its template and probes
the learned templates of its shape (a few dictionary lookups).

When the database is unreachable the last index stays in use.
"""

from __future__ import annotations

import asyncio
import logging
import time

import asyncpg

from elk_resolver.events.merging import AliasIndex
from elk_resolver.store.db import queries
from elk_resolver.store.merge_pass import run_merge_pass
from elk_resolver.store.periodic import keep_refreshing, stop_task

log = logging.getLogger(__name__)

# The pass shares the ingest process (its SQL and its planning thread): after a pass that took
# ``t`` seconds the next one waits at least ``t * (1 / MERGE_PASS_SHARE - 1)``, so passes take
# at most this share of the copy's time however many new errors a burst brings (the benchmark's
# 70,000 new errors made passes cost ~60 % of one copy's rate at a fixed 30 s interval).
MERGE_PASS_SHARE = 0.05


def next_pass_in(every_s: float, took_s: float, share: float = MERGE_PASS_SHARE) -> float:
    """Seconds until the next merge pass: the interval, or longer after a long pass."""
    return max(every_s, took_s * (1.0 / share - 1.0))


class AliasCache:
    def __init__(
        self,
        pool: asyncpg.Pool,
        *,
        refresh_s: float = 2.0,
        merge_every_s: float | None = 30.0,
        version: str = "template",
    ) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._merge_every_s = merge_every_s
        self._version = version
        self._generation: int | None = None
        self._task: asyncio.Task | None = None
        self._next_pass = 0.0
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
        result = await run_merge_pass(self._pool, version=self._version)
        if result.ran:
            self.passes += 1
            await self.refresh()

    async def start(self) -> None:
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="alias-cache")

    async def _tick(self) -> None:
        await self.refresh()
        if self._merge_every_s and time.monotonic() >= self._next_pass:
            started = time.monotonic()
            try:
                await self.merge_pass()
            finally:
                took = time.monotonic() - started
                self._next_pass = started + took + next_pass_in(self._merge_every_s, took)

    async def _loop(self) -> None:
        self._next_pass = time.monotonic() + (self._merge_every_s or 0)
        await keep_refreshing(self._tick, self._refresh_s, "error aliases", log)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
