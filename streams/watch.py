"""What a stage cannot see from inside: how far its group is behind, whether the topics it
depends on still exist, and whether PostgreSQL answers. The app runs one :class:`LagWatch` per
consuming stage, one :class:`TopicWatch` and one :class:`DatabaseWatch`; ``/ready``,
``/metrics`` and the monitor read what they found last, so they answer at once whatever the
broker and the database do, and say how old each finding is.

* Lag is the group's *committed* offset against the log end, for every partition of the
  stage's topic, read from the broker by a probe consumer that assigns (never joins) and
  fetches a few bytes: the log end comes from the fetch response's highwater, because
  Tansu's ``end_offsets`` is wrong after a batched send (shared notes). A stage whose fetch
  is paused (database down) or whose partitions vanished still shows its true lag, where
  the consumer's own ``highwater - position`` read 0.
* A stage is *stalled* when the lag of the partitions it holds is above
  ``stall_lag_threshold`` and its group committed nothing for ``stall_after_s``.
* Topics: a broker that restarted without its data (the embedded one keeps everything in
  memory) has none of the service's topics. The watch says so in one log line, reports the
  cause, creates the topics again with the configured partition count (``manage_topics``),
  and logs once more when they are back; the consumers then rejoin by themselves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from aiokafka import TopicPartition

import asyncpg

from elk_resolver.kafka.offsets import probe_consumer, seek_to_committed
from elk_resolver.kafka.security import KafkaOptions, client_options
from elk_resolver.kafka.topics import describe_topics, ensure_topics, too_few_partitions
from elk_resolver.store.db import SERVER_SETTINGS, describe_db_failure
from elk_resolver.store.periodic import cancel_and_wait

log = logging.getLogger("elk_resolver.watch")


class _Probe:
    """A long-lived probe consumer that reconnects after a failure."""

    def __init__(self, kafka: KafkaOptions, group_id: str | None) -> None:
        self._kafka = kafka
        self._group_id = group_id
        self.consumer: Any = None

    async def get(self) -> Any:
        if self.consumer is None:
            consumer = probe_consumer(self._kafka, group_id=self._group_id, metadata_max_age_ms=5000)
            try:
                await asyncio.wait_for(consumer.start(), 10)
            except BaseException:
                with contextlib.suppress(Exception):
                    await consumer.stop()
                raise
            self.consumer = consumer
        return self.consumer

    async def reset(self) -> None:
        consumer, self.consumer = self.consumer, None
        if consumer is None:
            return
        try:
            await asyncio.wait_for(consumer.stop(), 5)
        except asyncio.CancelledError:
            # aiokafka's stop of a consumer without a group re-raises the cancellation of its
            # own internal task; only a cancellation of ours may leave
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception:  # noqa: BLE001 - closing a client of a broker that is gone
            pass


class _Periodic:
    interval_s: float
    name: str

    def __init__(self) -> None:
        self._task: asyncio.Task | None = None
        self._stopped = False
        self.checked_at: float | None = None
        """``time.monotonic()`` when the last check ended, well or not."""

    @property
    def age_s(self) -> float | None:
        """Seconds since the last check ended (None before the first)."""
        return None if self.checked_at is None else time.monotonic() - self.checked_at

    async def start(self) -> None:
        self._stopped = False
        self._task = asyncio.create_task(self._loop(), name=self.name)

    async def stop(self) -> None:
        task, self._task = self._task, None
        self._stopped = True  # a cancel swallowed inside check() still ends the loop
        if task is not None:
            await cancel_and_wait(task, what=self.name, log=log)
        await self._close()

    async def _loop(self) -> None:
        while not self._stopped:
            await self.check()
            await asyncio.sleep(self.interval_s)

    async def check(self) -> None:  # pragma: no cover - overridden
        raise NotImplementedError

    async def _close(self) -> None:
        pass


class LagWatch(_Periodic):
    def __init__(
        self,
        settings: Any,
        *,
        stage: str,
        topic: str,
        group_id: str,
        assignment: Callable[[], Iterable[TopicPartition]],
        rewind: Rewind | None = None,
    ) -> None:
        super().__init__()
        self.name = f"lag-{stage}"
        self.rewind = rewind
        self._rewound: set[int] = set()
        self.stage = stage
        self.topic = topic
        self.group_id = group_id
        self.interval_s = settings.lag_interval_s
        self.stall_after_s = settings.stall_after_s
        self.threshold = settings.stall_lag_threshold
        self._assignment = assignment
        self._probe = _Probe(client_options(settings), group_id)
        self._assigned_in_probe: set[TopicPartition] = set()
        self.per_partition: dict[int, int] = {}
        """Committed offset to log end, per partition of the topic (last good reading)."""
        self.committed: dict[int, int | None] = {}
        self.error: str | None = None
        self._progress_at = time.monotonic()
        self._last_committed: dict[int, int | None] = {}

    @property
    def group_lag(self) -> int | None:
        return sum(self.per_partition.values()) if self.per_partition else (None if self.error else 0)

    @property
    def lag(self) -> int | None:
        """Lag of the partitions this stage's consumer holds (0 when it holds none)."""
        if self.error and not self.per_partition:
            return None
        held = {tp.partition for tp in self._assignment() if tp.topic == self.topic}
        return sum(v for p, v in self.per_partition.items() if p in held)

    @property
    def stalled_for(self) -> float | None:
        """Seconds without progress while behind, once past ``stall_after_s``; else None."""
        lag = self.lag
        if lag is None or lag <= self.threshold:
            return None
        idle = time.monotonic() - self._progress_at
        return idle if idle >= self.stall_after_s else None

    async def check(self) -> None:
        try:
            await asyncio.wait_for(self._read(), max(5.0, self.interval_s * 2))
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - any failure to read offsets is reported, not raised
            if self.error is None:
                log.warning("lag of %s unknown: %s: %s", self.stage, type(exc).__name__, exc,
                            extra={"stage": self.stage})
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            self.per_partition = {}
            self._assigned_in_probe = set()
            self.checked_at = time.monotonic()
            await self._probe.reset()
            return
        if self.error is not None:
            log.info("lag of %s readable again", self.stage, extra={"stage": self.stage})
        self.error = None
        self.checked_at = time.monotonic()

    async def _read(self) -> None:
        consumer = await self._probe.get()
        parts = consumer.partitions_for_topic(self.topic)
        if not parts:
            await consumer.topics()  # a metadata request
            parts = consumer.partitions_for_topic(self.topic)
        if not parts:
            raise LookupError(f"topic {self.topic} does not exist")
        tps = {TopicPartition(self.topic, p) for p in parts}
        if tps != self._assigned_in_probe:
            consumer.assign(sorted(tps))
            self._assigned_in_probe = tps
        committed = await seek_to_committed(consumer, tps)
        starts = {tp: await consumer.position(tp) for tp in tps}
        asked = time.time() * 1000
        deadline = time.monotonic() + 5
        while True:
            await consumer.getmany(timeout_ms=100, max_records=1)
            fresh = all((consumer.last_poll_timestamp(tp) or 0) >= asked for tp in tps)
            if fresh or time.monotonic() > deadline:
                break
        if not fresh:
            raise TimeoutError("no fetch response for every partition")
        self.per_partition = {tp.partition: max(0, (consumer.highwater(tp) or 0) - starts[tp]) for tp in tps}
        now_committed = {tp.partition: committed[tp] for tp in tps}
        await self._check_truncated({tp.partition: consumer.highwater(tp) for tp in tps}, now_committed)
        if now_committed != self._last_committed or self.lag == 0:
            self._progress_at = time.monotonic()
        self._last_committed = now_committed
        self.committed = now_committed

    async def _check_truncated(self, ends: dict[int, int | None], committed: dict[int, int | None]) -> None:
        """A log that ends below the group's committed offset was truncated or re-created
        (Tansu answers a fetch past the end with nothing, not OFFSET_OUT_OF_RANGE, so the
        consumer would wait there until the new log grows past it and skip what came
        before): the partitions this copy holds are read from their start, said once."""
        behind = {p for p, end in ends.items() if end is not None and committed.get(p) is not None
                  and committed[p] > end}
        held = {tp.partition for tp in self._assignment() if tp.topic == self.topic}
        new = (behind & held) - self._rewound
        self._rewound = (self._rewound & behind) | new
        if not new:
            return
        log.warning("%s: the log of %s ends below the offset its group committed (%s): truncated or re-created; "
                    "reading it from its start", self.stage,
                    ", ".join(f"{self.topic}[{p}]" for p in sorted(new)),
                    ", ".join(f"end {ends[p]} < committed {committed[p]}" for p in sorted(new)),
                    extra={"stage": self.stage, "topic": self.topic})
        if self.rewind is not None:
            await self.rewind(self.topic, new)

    def snapshot(self) -> dict[str, Any]:
        out: dict[str, Any] = {"lag": self.lag, "group_lag": self.group_lag}
        stalled = self.stalled_for
        if stalled is not None:
            out["stalled_s"] = round(stalled)
        if self.error:
            out["error"] = self.error
        return out

    async def _close(self) -> None:
        await self._probe.reset()


Rewind = Callable[[str, "set[int] | None"], Awaitable[None]]
"""``rewind(topic, partitions)``: every stage consuming ``topic`` reads those partitions (None:
all) from their start."""


class TopicWatch(_Periodic):
    """The service's topics on the broker: there, with the configured partition count, and the
    same topics as before. A broker restarted without its data (the embedded one keeps only
    memory), or an operator re-creating a topic, gives the topic a new id: its consumers'
    positions belong to the old log, so every copy reads the new one from its start
    (``rewind``), and says so in one line. While the broker is unreachable or topics are
    missing it checks every ``RECOVERING_INTERVAL_S``, so it creates them again, with the
    configured count, as soon as the broker answers."""

    name = "topic-watch"
    RECOVERING_INTERVAL_S = 0.1

    def __init__(self, settings: Any, *, rewind: Rewind | None = None) -> None:
        super().__init__()
        self.settings = settings
        self.interval_s = settings.topic_check_interval_s
        self.topics = list(dict.fromkeys(settings.topics()))
        self.manage = settings.manage_topics
        self.rewind = rewind
        self._probe = _Probe(client_options(settings), None)
        self.missing: list[str] = []
        self.error: str | None = None
        self.recreated = 0
        self.since: float | None = None
        self.ids: dict[str, Any] = {}
        self.counts: dict[str, int] = {}
        self.too_few: str | None = None

    @property
    def cause(self) -> str | None:
        if self.error:
            return f"broker unreachable: {self.error}"
        if self.missing:
            return f"topics missing on the broker: {', '.join(self.missing)}"
        if self.too_few and not self.settings.allow_fewer_partitions:
            return self.too_few
        return None

    async def _loop(self) -> None:
        while not self._stopped:
            await self.check()
            recovering = self.error or (self.missing and self.manage)
            await asyncio.sleep(self.RECOVERING_INTERVAL_S if recovering else self.interval_s)

    async def check(self) -> None:
        try:
            await self._check()
        finally:
            self.checked_at = time.monotonic()

    async def _describe(self) -> dict[str, Any]:
        consumer = await self._probe.get()
        return await asyncio.wait_for(describe_topics(consumer._client, self.topics), 10)  # noqa: SLF001

    async def _check(self) -> None:
        try:
            found = await self._describe()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - reported as the cause, once per episode
            if self.error is None:
                log.warning("broker unreachable for the topic check: %s: %s", type(exc).__name__, exc)
                self.since = self.since or time.monotonic()
            self.error = f"{type(exc).__name__}: {exc}"[:300]
            await self._probe.reset()
            return
        self.error = None
        missing = [t for t in self.topics if t not in found]
        if missing and not self.missing:
            self.since = self.since or time.monotonic()
            log.error(
                "topics missing on the broker (restarted without its data?): %s; %s", ", ".join(missing),
                "creating them again" if self.manage else "not ready until they exist (manage_topics is off)",
            )
        self.missing = missing
        if missing and self.manage:
            try:
                created = await asyncio.wait_for(
                    ensure_topics(client_options(self.settings), missing,
                                  partitions=self.settings.topic_partitions,
                                  replication_factor=self.settings.topic_replication_factor), 15)
                found = await self._describe()  # their new ids, at once
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - tried again next check
                log.warning("creating topics %s failed: %s", ", ".join(missing), exc)
                return
            self.recreated += len(created)
            self.missing = [t for t in self.topics if t not in found]
        self._check_counts(found)
        await self._check_ids(found)
        if not self.missing and self.since is not None:
            log.warning("topics present again after %.1fs", time.monotonic() - self.since)
            self.since = None

    async def _check_ids(self, found: dict[str, Any]) -> None:
        for topic, state in found.items():
            before = self.ids.get(topic)
            if state.topic_id is None:
                continue
            self.ids[topic] = state.topic_id
            if before is None or before == state.topic_id:
                continue
            log.warning("topic %s was deleted and created again (topic id %s, was %s; a broker restarted without "
                        "its data?): its consumers read it from its start", topic, state.topic_id, before)
            if self.rewind is not None:
                await self.rewind(topic, None)

    def _check_counts(self, found: dict[str, Any]) -> None:
        """A broker that auto-creates topics may have created one on a client's request (a
        producer outside the service) before this watch could, with the broker's own count.
        Fewer partitions than configured is a cause of not being ready, said once, unless
        allow_fewer_partitions; partitions cannot be removed."""
        counts = {t: st.partitions for t, st in found.items()}
        too_few = too_few_partitions(counts, self.settings.topic_partitions)
        if too_few != self.too_few and too_few is not None:
            log.error("%s%s", too_few, " (allowed: running on it)" if self.settings.allow_fewer_partitions else "")
        self.too_few = too_few
        self.counts = counts

    async def _close(self) -> None:
        await self._probe.reset()


class DatabaseWatch(_Periodic):
    """Whether PostgreSQL answers and takes writes, checked every ``db_check_interval_s`` on a
    connection of its own (a frozen server never holds a pool connection /ready needs), each
    check bounded by ``timeout_s``. A change is logged once: the cause in words when PostgreSQL
    stops answering or taking writes, and how long it lasted when it is back."""

    name = "database-watch"

    def __init__(self, settings: Any, *, timeout_s: float = 2.0) -> None:
        super().__init__()
        self.dsn = settings.database_url
        self.interval_s = settings.db_check_interval_s
        self.timeout_s = timeout_s
        self.cause: str | None = "not checked yet"
        self.since: float | None = None
        self._conn: asyncpg.Connection | None = None

    @property
    def ok(self) -> bool:
        return self.cause is None

    async def start(self) -> None:
        # The first check runs before start returns: /ready answers from a real finding at
        # once, and a start that fails next (a busy HTTP port) never cancels this connect
        # between its TCP connection and PostgreSQL's answer to the SSL request, where asyncpg
        # leaves a future holding ConnectionError that nobody retrieves (an asyncio error on
        # stderr). Bounded by timeout_s like every check.
        await self.check()
        await super().start()

    async def _loop(self) -> None:
        while not self._stopped:
            await asyncio.sleep(self.interval_s)
            await self.check()

    async def check(self) -> None:
        try:
            async with asyncio.timeout(self.timeout_s):
                if self._conn is None or self._conn.is_closed():
                    self._conn = await asyncpg.connect(self.dsn, server_settings=dict(SERVER_SETTINGS))
                read_only, standby = await self._conn.fetchrow(
                    "SELECT current_setting('transaction_read_only') = 'on', pg_is_in_recovery()")
            cause = None
            if read_only or standby:
                cause = ("PostgreSQL accepts no writes (" + ("a standby in recovery" if standby else
                         "default_transaction_read_only is on: a demoted primary, or a replica after a failover")
                         + "): every stage waits and retries until it does")
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every failure is a cause to report
            cause = describe_db_failure(exc)
            self._drop()
        self._record(cause)

    def _record(self, cause: str | None) -> None:
        now = time.monotonic()
        was = self.cause
        self.checked_at = now
        self.cause = cause
        if cause is not None and cause != was:
            if was is None or was == "not checked yet":
                self.since = now
            log.warning("database: %s", cause)
        elif cause is None and was is not None and was != "not checked yet":
            log.warning("database: PostgreSQL answers and takes writes again, after %.1fs",
                        now - (self.since or now))
            self.since = None

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.terminate()  # never waits: the server may be frozen

    def snapshot(self) -> dict[str, Any]:
        age = self.age_s
        return {"ok": self.ok, "cause": self.cause, "checked_s_ago": None if age is None else round(age, 1)}

    async def _close(self) -> None:
        self._drop()
