"""The ``error_patterns`` table as a :class:`PatternSet`, kept current while the service runs.

Every ``refresh_s`` seconds one cheap query (row count and an md5 over the rows) tells whether
the table changed; only then are the rows read and compiled again. A pattern inserted or
edited while the consumer runs therefore classifies events within ``refresh_s`` seconds,
without a restart. Unusable regexes are reported by :class:`PatternSet` (one warning per
row, each time the table changes, not per event) and counted in ``invalid``.

When the database is unreachable the last good set stays in use.
"""

from __future__ import annotations

import asyncio
import logging

import asyncpg

from elk_resolver.events.classify import PatternSet
from elk_resolver.store.db import queries
from elk_resolver.store.periodic import keep_refreshing, stop_task

log = logging.getLogger(__name__)


class PatternCache:
    def __init__(self, pool: asyncpg.Pool, *, refresh_s: float = 2.0, on_reload=None) -> None:
        self._pool = pool
        self._refresh_s = refresh_s
        self._version: tuple[int, str] | None = None
        self._task: asyncio.Task | None = None
        self._on_reload = on_reload
        self.current: PatternSet = PatternSet(())
        self.reloads = 0

    @property
    def invalid(self) -> int:
        return len(self.current.invalid)

    async def refresh(self) -> bool:
        """Reload if the table changed; True when a new set was built."""
        q = queries()
        async with self._pool.acquire() as conn:
            row = await conn.fetchrow(q.ingest_pattern_version)
            version = (row["n"], row["digest"])
            if version == self._version:
                return False
            rows = await conn.fetch(q.ingest_patterns)
        self.current = PatternSet(rows)
        self._version = version
        self.reloads += 1
        log.info(
            "error_patterns loaded: %d usable, %d skipped",
            len(self.current),
            len(self.current.invalid),
            extra={"stage": "ingest"},
        )
        if self._on_reload is not None:
            self._on_reload(self.current)
        return True

    async def start(self) -> None:
        """Load once (failing loudly if the database is not there), then keep refreshing."""
        await self.refresh()
        self._task = asyncio.create_task(self._loop(), name="pattern-cache")

    async def _loop(self) -> None:
        await keep_refreshing(self.refresh, self._refresh_s, "error_patterns", log)

    async def stop(self) -> None:
        task, self._task = self._task, None
        await stop_task(task)
