"""The ingest stage runner: ``topic_raw`` -> :mod:`handlers.ingest` -> PostgreSQL,
``topic_analysis`` and ``topic_dlq``.

It uses aiokafka directly, not a FastStream subscriber, because the delivery rules below
need control FastStream's batch subscriber does not give (see
``shared/notes/kafka-and-faststream.md``: ``msg.ack()`` commits every partition's position,
and a failing batch is either committed or redelivered at once without backoff).

Three tasks form a pipeline, so Python's CPU work and PostgreSQL's run on different cores:

    fetch+prepare ──(queue, depth 2)──> database ──(queue, depth 2)──> publish-ack+commit

* *fetch*: ``getmany`` a batch, :func:`handlers.ingest.prepare_batch` it (parse, mask,
  classify, fingerprint) while the previous batch is in PostgreSQL. It prepares in slices of
  about 2 ms (:func:`next_slice`), so a reply from PostgreSQL or the broker never waits long
  for the event loop; the broker's fetch wait is 5 ms while records flow and
  ``batch_timeout_ms`` once the topic is quiet (:func:`set_fetch_wait`).
* *database*: one transaction per batch (:func:`handlers.ingest.store_batch`), then the
  analysis events and dead letters are handed to the producer (``send`` only).
* *commit*: waits for the broker's acknowledgements of a batch, then commits its offsets.
  Batches leave this task in fetch order, so offsets are committed strictly in order and
  only after the batch's transaction committed *and* its records were acknowledged. When
  more acknowledged batches wait behind one, the last of them commits for all.

Failures. A database or broker outage keeps the batch in hand and retries it with
exponential backoff (``retry_backoff_initial_s`` .. ``retry_backoff_max_s``) until the
dependency is back; nothing is skipped. While a queue stays full the fetch task pauses its
partitions and keeps polling, so the group membership stays alive. On a rebalance every
batch fetched before it is dropped before its commit: its records are fetched again from the
committed offsets, and writing them twice counts nothing twice (occurrences are keyed by the
event identity). A batch PostgreSQL refuses for its data (not a connection problem) is
stored record by record, and a record that is still refused goes to the DLQ
(``db_rejected``), so one bad value never blocks a partition.

The analysis events go out through an ``AIOKafkaProducer`` this stage owns, keyed by
``hash_signature``: one record batch per partition built here and handed over with
``send_batch``, then one wait for all futures. FastStream's
``publish`` per record does the same with a middleware chain around each call, which costs
more per event than the whole rest of the stage's publishing. No idempotence and no
transactions: Tansu supports neither, and the downstream stages are idempotent instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import logging
import os
import random
import signal
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import asyncpg
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import KafkaError

from elk_resolver.events.masking import SecretMasker
from elk_resolver.kafka.security import client_options
from elk_resolver.kafka.signing import headers_for
from elk_resolver.store.alias_cache import AliasCache
from elk_resolver.store.db import connection_usable, describe_db_failure, is_transient_db_error
from elk_resolver.store.gin_pending_list import GinPendingListCleaner
from elk_resolver.store.pattern_cache import PatternCache
from handlers.ingest import (
    DeadLetter,
    IngestConfig,
    PartitionCache,
    PreparedBatch,
    StoredBatch,
    db_rejected,
    encode_events,
    is_stale_pattern,
    prepare_batch,
    prepare_into,
    store_batch,
)
from streams import metrics as m
from streams.rewind import Rewinds

log = logging.getLogger(__name__)

STAGE = "ingest"
_STOP = object()
_SLICE_SECONDS = 0.002  # time the fetch task holds the event loop between two turns
_SLICE_MAX = 200
# The broker's fetch wait while records flow. Tansu answers a fetch only when its wait is over,
# even with records there, so this wait is time every record spends in the broker; Apache Kafka
# answers as soon as a record is there. While the topic is quiet, batch_timeout_ms applies.
_FETCH_WAIT_FLOWING_MS = 5
_GC_GEN0_THRESHOLD = 10_000
_STALE_PATTERN_RETRIES = 3  # reloads of error_patterns before a batch is stored record by record


def _tune_gc() -> None:
    """Make Python's cyclic garbage collector cheap for this workload, once per process.

    A batch allocates tens of thousands of containers (decoded JSON, records, rows) that
    live until the batch is committed. With the default thresholds (700, 10, 10) the
    collector runs ~13 times per 1,000 events and its older generations keep re-walking
    every module, class and function loaded at start: measured at ~11 µs per event, about
    15 % of this process's CPU. Freezing what exists after start-up (it is never garbage)
    and collecting the youngest generation every 10,000 allocations instead of 700 brings
    it to ~2 µs. Reference counting still frees everything acyclic at once; cycles are
    still collected, just less often. Skipped when the thresholds were already raised."""
    if gc.get_threshold()[0] >= _GC_GEN0_THRESHOLD:
        return
    gc.collect()
    gc.freeze()
    _, gen1, gen2 = gc.get_threshold()
    gc.set_threshold(_GC_GEN0_THRESHOLD, gen1, gen2)


def next_slice(size: int, took_s: float) -> int:
    """Records to prepare in the next slice, so that one slice takes about ``_SLICE_SECONDS``.

    The database and commit tasks share the event loop with preparing: a reply from
    PostgreSQL or the broker waits for the slice in hand before its task resumes, so a slice
    is a delay added to every batch in flight. A record costs 50-300 µs (more on a loaded
    machine, and a 1 MB record far more), so the size follows the measured cost instead of
    being a constant (100 records held the loop for ~25 ms per slice)."""
    if took_s <= 0:
        return min(size * 2, _SLICE_MAX)
    return max(1, min(_SLICE_MAX, size * 2, int(size * _SLICE_SECONDS / took_s)))


def set_fetch_wait(consumer: AIOKafkaConsumer, wait_ms: int) -> bool:
    """Change the fetch wait of a running consumer (aiokafka takes it at construction only;
    its fetcher reads the attribute for every request it builds). False when this aiokafka has
    no such attribute, in which case the wait given at construction stays."""
    fetcher = getattr(consumer, "_fetcher", None)
    if fetcher is None or not hasattr(fetcher, "_fetch_max_wait_ms"):
        return False
    fetcher._fetch_max_wait_ms = wait_ms
    return True


@dataclass
class IngestMetrics:
    """Plain counters of this stage instance (the Prometheus ones are process-wide)."""

    events_in: int = 0
    stored: int = 0
    new_occurrences: int = 0
    new_rows: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    expired: int = 0
    """events in months retention has passed (a replay of old records): not counted again"""
    published: int = 0
    batches: int = 0
    db_retries: int = 0
    broker_retries: int = 0
    dropped_on_rebalance: int = 0
    last_batch_seconds: float = 0.0
    batch_seconds_total: float = 0.0
    first_fetch_at: float | None = None
    """``time.monotonic()`` of the first non-empty fetch; with ``last_commit_at``, a rate."""
    last_commit_at: float | None = None
    committed: dict[TopicPartition, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Batch:
    generation: int
    fetched_at: float
    records: list[Any]
    offsets: dict[TopicPartition, int]
    prepared: PreparedBatch
    messages: list[tuple[str, bytes | None, bytes | None, list[tuple[str, bytes]] | None]] = field(
        default_factory=list
    )
    futures: list[asyncio.Future] = field(default_factory=list)
    stored: StoredBatch | None = None

    def where(self) -> str:
        return ", ".join(f"{tp.topic}[{tp.partition}]@{off - 1}" for tp, off in sorted(self.offsets.items()))


def partition_by_hash(key: bytes | None, all_partitions: list[int], available: list[int]) -> int:
    """The partition of a record keyed by a hex ``hash_signature``: its first 8 hex digits
    modulo the partition count, so every event of one error lands on one partition. Cheaper
    than aiokafka's pure-Python murmur2 by ~10 µs a record; unkeyed records (dead letters)
    spread at random."""
    if key is None:
        return random.choice(available or all_partitions)
    try:
        return all_partitions[int(key[:8], 16) % len(all_partitions)]
    except ValueError:  # not hex: any stable choice will do
        return all_partitions[zlib.crc32(key) % len(all_partitions)]


def analysis_producer(settings: Any, bootstrap_servers: str | None = None) -> AIOKafkaProducer:
    """The producer of analysis events and dead letters (ingest and replay): keyed by hash
    with :func:`partition_by_hash`, requests large enough for the largest record ingest
    accepts (``max_record_bytes``), no idempotence (Tansu has none)."""
    return AIOKafkaProducer(
        **client_options(settings, bootstrap_servers=bootstrap_servers),
        acks=1,
        enable_idempotence=False,
        # Ingest hands over whole record batches (send_batch); lingering would only hold each
        # one back for the linger time before it is sent.
        linger_ms=0,
        max_batch_size=1 << 20,
        max_request_size=max(2 << 20, settings.max_record_bytes + (64 << 10)),
        request_timeout_ms=15000,
        retry_backoff_ms=200,
        partitioner=partition_by_hash,
    )


def raw_fetch_options(settings: Any) -> dict[str, int]:
    """Fetch sizes of a consumer of ``topic_raw`` (ingest, replay): room for the largest
    record ingest accepts."""
    per_partition = max(4 << 20, settings.max_record_bytes + (64 << 10))
    return {"fetch_max_bytes": max(64 << 20, per_partition), "max_partition_fetch_bytes": per_partition}


class _Abandoned(Exception):
    """The stage is stopping (or the batch went stale) while a dependency is down."""


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, stage: IngestStage) -> None:
        self._stage = stage

    async def on_partitions_revoked(self, revoked):
        self._stage._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned):
        self._stage._on_assigned(assigned)


class IngestStage:
    name = STAGE

    def __init__(
        self,
        settings: Any,
        *,
        pool: asyncpg.Pool,
        broker: Any = None,
        replay: bool = False,
        group_id: str | None = None,
        bootstrap_servers: str | None = None,
        queue_depth: int = 2,
        graceful_timeout_s: float | None = None,
        after_db_commit: Callable[[], Any] | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker  # not used for publishing: see the module docstring
        self.replay = replay
        self.group_id = group_id or settings.group_ingest
        self.bootstrap_servers = bootstrap_servers or settings.kafka_bootstrap_servers
        if not self.bootstrap_servers:
            raise ValueError("the ingest stage needs kafka_bootstrap_servers")
        self.config = IngestConfig.from_settings(settings)
        if replay:
            self.config = dataclasses.replace(self.config, history="replay")
        self.masker = SecretMasker(settings.mask_extra_patterns)
        self.patterns = PatternCache(pool, refresh_s=settings.patterns_refresh_s, on_reload=self._patterns_loaded)
        self.aliases = AliasCache(
            pool,
            refresh_s=settings.patterns_refresh_s,
            merge_every_s=settings.merge_pass_every_s,
            version=settings.fingerprint_version,
            settings=settings,  # the merge pass runs in a process of its own (store.merge_worker)
        )
        self.gin_cleaner = GinPendingListCleaner(pool, every_s=settings.gin_cleanup_every_s)
        self.partitions = PartitionCache()
        self.metrics = IngestMetrics()
        self._after_db_commit = after_db_commit
        self._queue_depth = queue_depth
        # half the shutdown deadline drains; the rest closes the clients
        self._graceful_timeout_s = graceful_timeout_s if graceful_timeout_s is not None else settings.shutdown_timeout_s / 2
        self._generation = 0
        self._assigned: set[TopicPartition] = set()
        self._pending_commit: dict[TopicPartition, int] = {}
        self._stopping = False
        self._abandon = False
        self._tasks: list[asyncio.Task] = []
        self._consumer: AIOKafkaConsumer | None = None
        self._producer: AIOKafkaProducer | None = None
        self._db_q: asyncio.Queue = asyncio.Queue(queue_depth)
        self._commit_q: asyncio.Queue = asyncio.Queue(queue_depth)
        self._last_batch_done = time.monotonic()
        self._slice = 16  # records per prepare slice (next_slice adjusts it)
        self._db_conn: asyncpg.Connection | None = None
        self._rewinds = Rewinds(expire_s=max(60.0, 3 * settings.session_timeout_ms / 1000))

    # -- Stage protocol ------------------------------------------------------------------------
    @property
    def ready(self) -> bool:
        return bool(self._assigned) and not self._stopping

    @property
    def assignment(self) -> set[TopicPartition]:
        return set(self._assigned)

    async def start(self) -> None:
        s = self.settings
        await self.patterns.start()
        await self.aliases.start()
        await self.gin_cleaner.start()
        self._producer = analysis_producer(s, self.bootstrap_servers)
        self._consumer = AIOKafkaConsumer(
            **client_options(s, bootstrap_servers=self.bootstrap_servers),
            group_id=self.group_id,
            client_id=f"elk-resolver-{STAGE}",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            # The fetch task polls (paused) at least every second while a dependency is down,
            # so this only bounds a stuck event loop.
            max_poll_interval_ms=300_000,
            max_poll_records=s.batch_max_records,
            **raw_fetch_options(s),
            fetch_max_wait_ms=max(10, s.batch_timeout_ms),  # while quiet; see _fetch_loop
        )
        await self._producer.start()
        try:
            self._consumer.subscribe([s.topic_raw], listener=_Rebalance(self))
            await self._consumer.start()
        except BaseException:
            await self._producer.stop()
            raise
        self._tasks = [
            asyncio.create_task(self._fetch_loop(), name="ingest-fetch"),
            asyncio.create_task(self._db_loop(), name="ingest-db"),
            asyncio.create_task(self._commit_loop(), name="ingest-commit"),
        ]
        _tune_gc()
        log.info("ingest started: topic %s group %s", s.topic_raw, self.group_id, extra={"stage": STAGE})

    async def stop(self) -> None:
        """Stop fetching, finish the batches already fetched (up to ``graceful_timeout_s``;
        unfinished ones are redelivered), commit, leave the group. Bounded whatever the
        database or the broker do: past the deadline every step is abandoned."""
        if self._stopping:
            return
        self._stopping = True
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._graceful_timeout_s
        fetch, db, commit = self._tasks or (None, None, None)
        if fetch is not None:
            fetch.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await fetch
            try:
                async with asyncio.timeout_at(deadline):
                    # the queue may be full while the database is down: waiting for room
                    # is part of the drain, and bounded like it
                    await self._db_q.put(_STOP)
                    await asyncio.gather(db, commit)
            except (TimeoutError, Exception):
                self._abandon = True
                for task in (db, commit):
                    task.cancel()
                await asyncio.gather(db, commit, return_exceptions=True)
        self._tasks = []
        await self._release_db_conn()
        await self.patterns.stop()
        await self.aliases.stop()
        await self.gin_cleaner.stop()
        # What is left (commit, leaving the group, the producer's flush) gets a few seconds
        # each: with the broker down they would otherwise wait for its request timeouts.
        last_steps = max(1.0, deadline - loop.time())
        if self._consumer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._commit_pending(), last_steps)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._consumer.stop(), last_steps)
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._producer.stop(), last_steps)
        m.ASSIGNED_PARTITIONS.labels(STAGE).set(0)
        log.info("ingest stopped", extra={"stage": STAGE})

    async def run_until_stopped(self) -> None:
        """For callers that own no event of their own: return when a task dies."""
        await asyncio.gather(*self._tasks)

    # -- rebalance -----------------------------------------------------------------------------
    def _on_revoked(self, revoked) -> None:
        # Everything fetched so far is dropped before its commit; on reassignment positions
        # restart from the committed offsets, so nothing is lost, and a batch written twice
        # counts nothing twice.
        self._generation += 1
        self._assigned.clear()
        for tp in revoked:
            self._pending_commit.pop(tp, None)
        if revoked:
            log.info("partitions revoked: %s", sorted(revoked), extra={"stage": STAGE})

    def _on_assigned(self, assigned) -> None:
        for tp in self._rewinds.take(assigned):  # a re-created log: the committed offset may be the old one's
            self._consumer.seek(tp, 0)
            log.info("%s[%d] read from its start (re-created or truncated)", tp.topic, tp.partition,
                     extra={"stage": STAGE})
        self._assigned = set(assigned)
        m.ASSIGNED_PARTITIONS.labels(STAGE).set(len(self._assigned))
        log.info("partitions assigned: %s", sorted(assigned), extra={"stage": STAGE})

    async def rewind(self, topic: str, partitions: set[int] | None = None) -> list[TopicPartition]:
        """Read these partitions of ``topic`` (None: all) from their start, now for those this
        copy holds and at their next assignment for the others (:mod:`streams.rewind`): the
        log they had positions in was re-created or truncated. As on a rebalance, every
        batch fetched so far is dropped before its commit and the other partitions go back
        to their committed offsets: what is read again counts nothing twice."""
        consumer = self._consumer
        if consumer is None or topic != self.settings.topic_raw:
            return []
        self._rewinds.request(topic, partitions)
        assigned = set(consumer.assignment())
        moved = self._rewinds.take(assigned)
        if not moved:
            return []
        self._generation += 1
        self._pending_commit.clear()
        for tp in moved:
            consumer.seek(tp, 0)
        for tp in sorted(assigned - set(moved)):
            committed = await consumer.committed(tp)
            consumer.seek(tp, 0 if committed is None else committed)
        return moved

    def _patterns_loaded(self, patterns) -> None:
        m.PATTERNS_INVALID.labels(STAGE).set(len(patterns.invalid))

    # -- pipeline ------------------------------------------------------------------------------
    async def _fetch_loop(self) -> None:
        consumer = self._consumer
        max_records = self.settings.batch_max_records
        timeout_ms = self.settings.batch_timeout_ms
        quiet_wait_ms = max(10, timeout_ms)
        flowing = False
        while True:
            try:
                data = await consumer.getmany(timeout_ms=timeout_ms, max_records=max_records)
            except KafkaError as exc:
                log.warning("fetch failed (%s), polling again", exc, extra={"stage": STAGE, "coalesce": True})
                await asyncio.sleep(self.settings.retry_backoff_initial_s)
                continue
            # A short broker wait while records flow, the configured one once a whole
            # batch_timeout_ms passed without any: an idle copy does not poll the broker
            # every few milliseconds.
            if bool(data) != flowing:
                flowing = bool(data)
                set_fetch_wait(consumer, min(_FETCH_WAIT_FLOWING_MS, quiet_wait_ms) if flowing else quiet_wait_ms)
            if not data:
                continue
            generation = self._generation
            fetched_at = time.monotonic()
            if self.metrics.first_fetch_at is None:
                self.metrics.first_fetch_at = fetched_at
            records = [r for rs in data.values() for r in rs]
            offsets = {tp: rs[-1].offset + 1 for tp, rs in data.items()}
            # In slices, yielding between them: the database and commit tasks get the event
            # loop within ~5 ms to send their next statement or commit, so PostgreSQL and the
            # broker work while this process prepares, instead of waiting for a whole batch.
            prepared = PreparedBatch()
            patterns = self.patterns.current  # one snapshot for the whole batch
            aliases = self.aliases.current
            i = 0
            while i < len(records):
                size = self._slice
                started = time.perf_counter()
                prepare_into(
                    prepared,
                    records[i : i + size],
                    patterns=patterns,
                    masker=self.masker,
                    config=self.config,
                    aliases=aliases,
                )
                i += size
                self._slice = next_slice(size, time.perf_counter() - started)
                await asyncio.sleep(0)
            await self._hand_over(_Batch(generation, fetched_at, records, offsets, prepared))

    async def _hand_over(self, batch: _Batch) -> None:
        """Queue the batch. While the queue stays full (a dependency is slow or down), pause
        the partitions and keep polling so the consumer stays in its group."""
        put = asyncio.ensure_future(self._db_q.put(batch))
        paused = False
        try:
            while True:
                done, _ = await asyncio.wait({put}, timeout=1.0)
                if done:
                    return
                consumer = self._consumer
                consumer.pause(*consumer.assignment())
                paused = True
                stray = await consumer.getmany(timeout_ms=0)
                for tp, rs in stray.items():  # assigned during the pause: fetch them again later
                    consumer.seek(tp, rs[0].offset)
        finally:
            if not put.done():
                put.cancel()
            if paused:
                self._consumer.resume(*self._consumer.assignment())

    async def _db_loop(self) -> None:
        while True:
            batch = await self._db_q.get()
            if batch is _STOP:
                await self._commit_q.put(_STOP)
                return
            if batch.generation != self._generation:
                self._drop(batch)
                continue
            try:
                await self._store(batch)
            except _Abandoned:
                self._drop(batch)
                continue
            if self._after_db_commit is not None:
                self._after_db_commit()
            try:
                await self._send(batch)
            except _Abandoned:
                self._drop(batch)
                continue
            await self._commit_q.put(batch)

    async def _commit_loop(self) -> None:
        while True:
            batch = await self._commit_q.get()
            if batch is _STOP:
                await self._commit_pending()
                return
            try:
                await self._await_acks(batch)
            except _Abandoned:
                self._drop(batch)
                continue
            if batch.generation != self._generation:
                self._drop(batch)
                continue
            for tp, off in batch.offsets.items():
                if tp in self._assigned:
                    self._pending_commit[tp] = off
            if self._commit_q.empty():
                # While batches queue up behind this one, its offsets wait for theirs: one
                # commit (a broker round trip) then covers them all, and the commit loop keeps
                # up with small batches instead of holding the database task back.
                await self._commit_pending()
            self._account(batch)

    # -- steps ---------------------------------------------------------------------------------
    async def _retry(self, dependency: str, batch: _Batch, attempt_fn) -> Any:
        s = self.settings
        delay = s.retry_backoff_initial_s
        failures = 0
        while True:
            try:
                return await attempt_fn()
            except Exception as exc:
                if dependency == "database" and not is_transient_db_error(exc):
                    raise
                if dependency == "broker" and not isinstance(exc, KafkaError | OSError | asyncio.TimeoutError):
                    raise
                failures += 1
                if dependency == "database":
                    self.metrics.db_retries += 1
                else:
                    self.metrics.broker_retries += 1
                m.RETRIES.labels(STAGE, dependency).inc()
                if failures == 1 or failures % 10 == 0:
                    words = describe_db_failure(exc) if dependency == "database" else f"{type(exc).__name__}: {exc}"
                    log.warning(
                        "%s unavailable, batch %s kept, retry %d in %.1fs: %s",
                        dependency,
                        batch.where(),
                        failures,
                        delay,
                        words,
                        extra={"stage": STAGE, "offsets": batch.where(), "coalesce": words.split(":", 1)[0]},
                    )
                if self._abandon or batch.generation != self._generation:
                    raise _Abandoned from exc
                await asyncio.sleep(delay)
                if self._abandon or batch.generation != self._generation:
                    raise _Abandoned from exc
                delay = min(delay * 2, s.retry_backoff_max_s)

    async def _transaction(self, prepared: PreparedBatch) -> StoredBatch:
        # No explicit BEGIN/COMMIT: store_batch's write is one statement (the occurrences and
        # the upsert in one CTE), atomic on its own, so the batch costs one round trip instead
        # of three. Its other statements are idempotent (creating a missing month's
        # partition, before it) or read-only (after it: ids of rows it left untouched).
        # The database task keeps its connection from batch to batch: giving it back to the
        # pool after every batch costs a reset statement (a round trip the batch's analysis
        # events waited for). A failure gives it back, and the next attempt takes another.
        conn = self._db_conn
        if conn is not None and not connection_usable(conn):
            # the server closed it between two batches (asyncpg then gives it back to the pool
            # by itself): take another, whose failure says why the server is gone
            self._db_conn = conn = None
        if conn is None:
            conn = self._db_conn = await self.pool.acquire()
        try:
            try:
                stored = await store_batch(
                    conn, prepared, partitions=self.partitions, fingerprint_version=self.config.fingerprint_version
                )
            except asyncpg.CheckViolationError as exc:
                if not self.partitions.forget_if_vanished(exc):
                    raise
                log.warning("an error_occurrences partition vanished (%s); creating it again", exc,
                            extra={"stage": STAGE})
                stored = await store_batch(
                    conn, prepared, partitions=self.partitions, fingerprint_version=self.config.fingerprint_version
                )
        except BaseException:
            await self._release_db_conn()
            raise
        self.partitions.add(stored.months_created)
        return stored

    async def _release_db_conn(self) -> None:
        conn, self._db_conn = self._db_conn, None
        if conn is not None:
            with contextlib.suppress(Exception):
                # bounded: a connection to a frozen server is closed, not reset
                await self.pool.release(conn, timeout=2.0)

    def _prepare(self, records: list[Any]) -> PreparedBatch:
        return prepare_batch(records, patterns=self.patterns.current, masker=self.masker, config=self.config)

    async def _store(self, batch: _Batch) -> None:
        for attempt in range(_STALE_PATTERN_RETRIES + 1):
            try:
                batch.stored = await self._retry("database", batch, lambda: self._transaction(batch.prepared))
                break
            except asyncpg.PostgresError as exc:
                if is_stale_pattern(exc) and attempt < _STALE_PATTERN_RETRIES:
                    # A pattern row was deleted while cached: valid events, stale cache.
                    log.info("error_patterns changed under batch %s; reloading and classifying it again",
                             batch.where(), extra={"stage": STAGE})
                    await self._retry("database", batch, self.patterns.refresh)
                    batch.prepared = self._prepare(batch.records)
                    continue
                log.error(
                    "database refused batch %s (%s: %s); storing it record by record",
                    batch.where(),
                    type(exc).__name__,
                    exc,
                    extra={"stage": STAGE},
                )
                await self._store_one_by_one(batch)
                return
        batch.messages = self._messages(batch.prepared, batch.stored, batch.prepared.dead_letters)

    async def _store_one_by_one(self, batch: _Batch) -> None:
        """The slow path for a batch PostgreSQL refused for its data: isolate the records."""
        messages: list = []
        for rec in batch.records:
            prepared = self._prepare([rec])
            try:
                try:
                    stored = await self._retry("database", batch, lambda p=prepared: self._transaction(p))
                except asyncpg.PostgresError as exc:
                    if not is_stale_pattern(exc):
                        raise
                    await self._retry("database", batch, self.patterns.refresh)
                    prepared = self._prepare([rec])
                    stored = await self._retry("database", batch, lambda p=prepared: self._transaction(p))
            except asyncpg.PostgresError as exc:
                dead = db_rejected(self.masker, rec, exc)
                messages += self._messages(prepared, None, [dead])
                batch.prepared.dead_letters.append(dead)
                continue
            messages += self._messages(prepared, stored, prepared.dead_letters)
        batch.messages = messages
        batch.stored = None

    def _messages(self, prepared: PreparedBatch, stored: StoredBatch | None, dead: list[DeadLetter]) -> list:
        s = self.settings
        out = []
        if stored is not None:
            for h, value in encode_events(prepared, stored, replay=self.replay):
                out.append((s.topic_analysis, h.encode(), value, headers_for(s.internal_topic_key, s.topic_analysis, value)))
        for d in dead:
            out.append((s.topic_dlq, None, d.value, d.headers()))
        return out

    async def _send(self, batch: _Batch) -> None:
        async def attempt():
            batch.futures = await self._send_grouped(batch.messages)

        if batch.messages:
            await self._retry("broker", batch, attempt)

    async def _send_grouped(self, messages: list) -> list[asyncio.Future]:
        """Hand the messages to the producer as one record batch per (topic, partition),
        built here, instead of one ``send`` each (``send`` runs the partitioner, the
        accumulator and a future per record). Partitions are chosen as the producer's
        partitioner (:func:`partition_by_hash`) would; the order of the messages within a
        partition is kept. Returns one future per message (the future of its record batch),
        so a failed batch re-sends exactly its messages."""
        producer = self._producer
        partitions_of: dict[str, list[int]] = {}
        groups: dict[tuple[str, int], list[int]] = {}
        for i, (topic, key, _value, _headers) in enumerate(messages):
            parts = partitions_of.get(topic)
            if parts is None:
                parts = partitions_of[topic] = sorted(await producer.partitions_for(topic))
            groups.setdefault((topic, partition_by_hash(key, parts, parts)), []).append(i)
        futures: list[Any] = [None] * len(messages)
        for (topic, partition), indices in groups.items():
            builder = producer.create_batch()
            members: list[int] = []
            for i in indices:
                _, key, value, headers = messages[i]
                if builder.append(timestamp=None, key=key, value=value, headers=headers or []) is not None:
                    members.append(i)
                    continue
                # The record batch is full: send it, start the next one with this message.
                if members:
                    future = await producer.send_batch(builder, topic, partition=partition)
                    for j in members:
                        futures[j] = future
                    builder = producer.create_batch()
                    members = []
                    if builder.append(timestamp=None, key=key, value=value, headers=headers or []) is not None:
                        members.append(i)
                        continue
                # Larger than a record batch on its own: the producer's own path.
                futures[i] = await producer.send(topic, value=value, key=key, headers=headers, partition=partition)
            if members:
                future = await producer.send_batch(builder, topic, partition=partition)
                for j in members:
                    futures[j] = future
        return futures

    async def _await_acks(self, batch: _Batch) -> None:
        """Wait for every record of the batch to be acknowledged; re-send the failed ones."""
        s = self.settings
        delay = s.retry_backoff_initial_s
        while batch.futures:
            results = await asyncio.gather(*batch.futures, return_exceptions=True)
            failed = [(msg, r) for msg, r in zip(batch.messages, results) if isinstance(r, BaseException)]
            if not failed:
                return
            self.metrics.broker_retries += 1
            m.RETRIES.labels(STAGE, "broker").inc()
            log.warning(
                "broker did not acknowledge %d records of batch %s (%s), re-sending in %.1fs",
                len(failed),
                batch.where(),
                failed[0][1],
                delay,
                extra={"stage": STAGE, "offsets": batch.where()},
            )
            if self._abandon or batch.generation != self._generation:
                raise _Abandoned
            await asyncio.sleep(delay)
            delay = min(delay * 2, s.retry_backoff_max_s)
            batch.messages = [msg for msg, _ in failed]
            batch.futures = []
            await self._send(batch)

    async def _commit_pending(self) -> None:
        if not self._pending_commit or self._consumer is None:
            return
        offsets = {tp: off for tp, off in self._pending_commit.items() if tp in self._assigned}
        if not offsets:
            return
        try:
            await self._consumer.commit(offsets)
        except KafkaError as exc:
            # A rebalance or a broker hiccup: the next batch commits these offsets too, or
            # the records are redelivered, which is harmless.
            log.warning("offset commit failed (%s), kept for the next commit", exc,
                        extra={"stage": STAGE, "coalesce": True})
            return
        for tp, off in offsets.items():
            if self._pending_commit.get(tp) == off:
                del self._pending_commit[tp]
            self.metrics.committed[tp] = off

    def _account(self, batch: _Batch) -> None:
        p = batch.prepared
        mt = self.metrics
        elapsed = time.monotonic() - batch.fetched_at
        mt.events_in += p.events_in
        mt.stored += p.error_events
        mt.skipped += p.skipped
        mt.dead_lettered += len(p.dead_letters)
        mt.published += len(batch.messages)
        mt.batches += 1
        mt.last_batch_seconds = elapsed
        mt.last_commit_at = time.monotonic()
        mt.batch_seconds_total += elapsed
        if batch.stored is not None and batch.stored.expired:
            mt.expired += batch.stored.expired
            log.info("%d events of batch %s are in months retention has dropped: not counted again",
                     batch.stored.expired, batch.where(), extra={"stage": STAGE, "coalesce": True})
        if batch.stored is not None:
            rows = batch.stored.rows.values()
            mt.new_rows += sum(1 for r in rows if r[1])
            mt.new_occurrences += sum(r[2] for r in rows)
            m.NEW_OCCURRENCES.labels(STAGE).inc(sum(r[2] for r in rows))
        m.EVENTS_IN.labels(STAGE).inc(p.events_in)
        m.EVENTS_STORED.labels(STAGE).inc(p.error_events)
        m.EVENTS_SKIPPED.labels(STAGE).inc(p.skipped)
        for d in p.dead_letters:
            m.DEAD_LETTERED.labels(STAGE, d.reason).inc()
            log.warning(
                "dead-lettered %s[%d]@%d: %s", d.topic, d.partition, d.offset, d.reason,
                extra={"stage": STAGE, "topic": d.topic, "partition": d.partition, "offset": d.offset},
            )
        m.PUBLISHED.labels(STAGE).inc(len(batch.messages))
        m.BATCHES.labels(STAGE).inc()
        m.BATCH_SECONDS.labels(STAGE).observe(elapsed)

    def _drop(self, batch: _Batch) -> None:
        self.metrics.dropped_on_rebalance += 1
        log.info("batch %s dropped before commit; it will be redelivered", batch.where(), extra={"stage": STAGE})


def build_ingest(
    settings: Any,
    *,
    pool: asyncpg.Pool,
    broker: Any = None,
    replay: bool = False,
    group_id: str | None = None,
    **options: Any,
) -> IngestStage:
    """The ingest :class:`~streams.stage.Stage`. ``replay`` marks every analysis event as a
    replay; ``group_id`` overrides ``settings.group_ingest`` (replays use a fresh group)."""
    return IngestStage(settings, pool=pool, broker=broker, replay=replay, group_id=group_id, **options)


async def main(after_db_commit: Callable[[], Any] | None = None) -> None:
    """``python -m streams.ingest``: this stage alone, until SIGTERM or SIGINT."""
    from elk_resolver.kafka.topics import ensure_topics, forbid_client_auto_create
    from elk_resolver.settings import make_settings
    from elk_resolver.store.db import close_pool, create_pool, pool_options

    logging.basicConfig(level=os.environ.get("ELK_RESOLVER_LOG_LEVEL", "INFO"))
    settings = make_settings()
    if not settings.database_url or not settings.kafka_bootstrap_servers:
        raise SystemExit("set ELK_RESOLVER_DATABASE_URL and ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS")
    forbid_client_auto_create()
    await ensure_topics(
        client_options(settings),
        settings.topics(),
        partitions=settings.topic_partitions,
        replication_factor=settings.topic_replication_factor,
    )
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)
    pool = await create_pool(settings.database_url, min_size=1, max_size=4, **pool_options(settings))
    try:
        stage = build_ingest(settings, pool=pool, after_db_commit=after_db_commit)
        await stage.start()
        try:
            runner = asyncio.ensure_future(stage.run_until_stopped())
            await asyncio.wait({runner, asyncio.ensure_future(stopped.wait())}, return_when=asyncio.FIRST_COMPLETED)
            if runner.done():
                runner.result()
        finally:
            await stage.stop()
    finally:
        await close_pool(pool, 2.0)


if __name__ == "__main__":
    asyncio.run(main())
