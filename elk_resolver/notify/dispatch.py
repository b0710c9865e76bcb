"""The sender: every copy of the service runs one; PostgreSQL decides which copy sends what.

Each pass takes, under one advisory lock, the rows that are due (``pending``, or ``sending``
whose lease ran out because its sender died) and that the channel's rate limit allows this
minute, marks them ``sending`` with a lease, commits, sends, and records ``sent`` or a retry
with exponential backoff (``failed`` after ``notify_max_attempts``). Two copies never hold
the same row; a channel that is down delays only its own rows.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
from collections import defaultdict
from datetime import timedelta
from typing import TYPE_CHECKING

from prometheus_client import Counter

from elk_resolver.events.masking import mask_text
from elk_resolver.notify.channels import SEND_TIMEOUT_S, Channel, configured_channels
from elk_resolver.store.db import describe_db_failure, is_transient_db_error, queries

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings

log = logging.getLogger("elk_resolver.notify")

SENT = Counter(
    "elk_resolver_notifications", "notification sends by channel and outcome (sent, retry, failed)",
    ["channel", "outcome"],
)  # fmt: skip
BATCH = 50
LEASE_S = SEND_TIMEOUT_S * 4
BACKOFF_MAX_S = 600.0


def backoff_s(attempts: int) -> float:
    return min(2.0 ** attempts, BACKOFF_MAX_S)




class Dispatcher:
    def __init__(
        self,
        settings: Settings,
        pool: asyncpg.Pool,
        *,
        channels: list[Channel] | None = None,
        instance: str | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.channels = {c.name: c for c in (channels if channels is not None else configured_channels(settings))}
        self.instance = instance or f"{socket.gethostname()}:{os.getpid()}"
        self._task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    async def _claim(self) -> list[dict]:
        q = queries()
        async with self.pool.acquire() as conn, conn.transaction():
            await conn.execute(q.notify_claim_lock)
            now = await conn.fetchval("SELECT LOCALTIMESTAMP")
            due = await conn.fetch(q.notify_due, now, BATCH)
            if not due:
                return []
            used = {r["channel"]: r["n"] for r in await conn.fetch(q.notify_recent_by_channel, now)}
            room: dict[str, int] = defaultdict(int)
            taken = []
            for row in due:
                channel = row["channel"]
                if used.get(channel, 0) + room[channel] >= self.settings.notify_rate_per_minute:
                    continue  # stays pending; a later pass sends it when the minute has room
                room[channel] += 1
                taken.append(dict(row))
            if taken:
                await conn.execute(q.notify_claim, [r["id"] for r in taken], self.instance, now + timedelta(seconds=LEASE_S))
        return taken

    async def _deliver(self, row: dict) -> None:
        q = queries()
        channel = self.channels.get(row["channel"])
        error = None
        if channel is None:
            error = "channel no longer configured"
        else:
            try:
                await asyncio.wait_for(channel.send(row["event_key"], row["payload"]), SEND_TIMEOUT_S * 2)
            except Exception as exc:  # noqa: BLE001 - any failure of a channel is a retry, never a crash
                error = mask_text(str(exc) or type(exc).__name__)[:500]
        async with self.pool.acquire() as conn:
            now = await conn.fetchval("SELECT LOCALTIMESTAMP")
            if error is None:
                await conn.execute(q.notify_sent, row["id"], now)
                SENT.labels(row["channel"], "sent").inc()
                return
            attempts = row["attempts"] + 1
            final = attempts >= self.settings.notify_max_attempts
            await conn.execute(
                q.notify_retry, row["id"], now + timedelta(seconds=backoff_s(attempts)),
                "failed" if final else "pending", error,
            )  # fmt: skip
        SENT.labels(row["channel"], "failed" if final else "retry").inc()
        log.warning("notification %s to %s: %s (%s)", row["event_key"], row["channel"], error,
                    "giving up" if final else f"attempt {attempts}, retrying")

    async def run_once(self) -> int:
        """One pass; returns how many messages were attempted."""
        rows = await self._claim()
        await asyncio.gather(*(self._deliver(r) for r in rows))
        return len(rows)

    async def start(self) -> None:
        if self._task is None and self.channels:
            self._stopping.clear()
            self._task = asyncio.create_task(self._run(), name="notify-dispatcher")

    async def stop(self) -> None:
        self._stopping.set()
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                busy = await self.run_once()
            except Exception as exc:
                busy = 0
                if is_transient_db_error(exc):
                    words = describe_db_failure(exc)
                    log.warning("notification pass failed, the next one retries: %s", words,
                                extra={"coalesce": words.split(":", 1)[0]})
                else:
                    log.exception("notification pass failed")
            if busy < BATCH:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), self.settings.notify_interval_s)
