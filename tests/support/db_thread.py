"""A PostgreSQL pool on an event loop of its own thread, for plain (not async) tests that drive
async code step by step: Hypothesis' stateful machines and ``@given`` run synchronous steps.

    with DbThread(database_url) as db:
        db.run(lambda pool: pool.fetchval("SELECT 1"))
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from elk_resolver.store.db import create_pool


class DbThread:
    def __init__(self, database_url: str, *, max_size: int = 3) -> None:
        self.database_url = database_url
        self.max_size = max_size
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="db-thread", daemon=True)
        self.pool: Any = None

    def __enter__(self) -> DbThread:
        self._thread.start()
        self.pool = self.call(create_pool(self.database_url, min_size=1, max_size=self.max_size))
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self.pool is not None:
                self.call(self.pool.close())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(10)
            self.loop.close()

    def call(self, coro: Awaitable[Any], timeout: float = 60) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)  # type: ignore[arg-type]

    def run(self, work: Callable[[Any], Awaitable[Any]], timeout: float = 60) -> Any:
        """``work(pool)`` on the thread's loop; its result."""
        return self.call(work(self.pool), timeout)
