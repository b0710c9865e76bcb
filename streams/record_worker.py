"""What the per-record FastStream stages (analyze, execute) share: retry, dead-letter, join.

Both subscribe with ``AckPolicy.MANUAL`` and handle one record at a time. A record is acked
only after its work and its publishes succeeded, so every failure path here either succeeds
eventually (transient errors back off and retry while the stage runs), or dead-letters the
record (an error that would fail the same way forever), or leaves it uncommitted (the stage
stops): a later ``msg.ack()`` can then never commit past an unhandled record.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from elk_resolver.events.contracts import DeadLetterHeaders
from elk_resolver.kafka.signing import unsigned_problem
from elk_resolver.store.db import describe_db_failure, is_transient_db_error
from streams import metrics
from streams.rewind import Rewinds

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker
    from faststream.message import StreamMessage

    from elk_resolver.settings import Settings


def is_transient(exc: BaseException) -> bool:
    """Errors that go away by themselves: a database restart or failover, a broker leader change."""
    return is_transient_db_error(exc) or isinstance(exc, KafkaError)


def describe_failure(exc: BaseException) -> str:
    """A transient failure in words: the database's (:func:`describe_db_failure`) or the broker's."""
    if isinstance(exc, KafkaError):
        return f"the Kafka broker: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    return describe_db_failure(exc)


# Anything else (a bug, a constraint the data violates) is tried this many times, then the
# record goes to the dead-letter topic: it would fail the same way forever and block its
# partition.
MAX_ATTEMPTS_NON_TRANSIENT = 3


class Stopping(Exception):
    """The stage stops while a record is unfinished: leave it uncommitted."""


class JoinListener(ConsumerRebalanceListener):
    """Tracks the assignment, for readiness (FastStream's own ping cannot tell), and reads
    from their start the partitions of a re-created log it is given (:mod:`streams.rewind`)."""

    def __init__(self) -> None:
        self.assigned: set[Any] = set()
        self.joined = asyncio.Event()
        self.rewinds = Rewinds()
        self.consumer: Callable[[], Any] = lambda: None

    async def on_partitions_revoked(self, revoked: Any) -> None:
        self.assigned -= set(revoked)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        consumer = self.consumer()
        if consumer is not None:
            for tp in self.rewinds.take(assigned):
                consumer.seek(tp, 0)
        self.assigned = set(assigned)
        self.joined.set()


async def raw_body(msg: StreamMessage[Any]) -> bytes:
    """Decoder that leaves the body as bytes: the stage validates it and dead-letters junk."""
    return msg.body


def where(records: Any) -> str:
    """Where a message's records are: ``topic[partition]@first-last`` per partition. A batch
    subscriber's message holds a tuple of records, a single one holds one."""
    if not isinstance(records, tuple | list):
        records = (records,)
    spans: dict[tuple[str, int], list[int]] = {}
    for r in records:
        span = spans.setdefault((r.topic, r.partition), [r.offset, r.offset])
        span[0], span[1] = min(span[0], r.offset), max(span[1], r.offset)
    return ", ".join(f"{t}[{p}]@{a}" + (f"-{b}" if b != a else "") for (t, p), (a, b) in sorted(spans.items()))


def validation_detail(exc: ValidationError) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()[:5])


class RecordWorker:
    """Runs a stage's work for one record with the retry and dead-letter rules above."""

    def __init__(self, stage: str, settings: Settings, broker: KafkaBroker, stopping: asyncio.Event) -> None:
        self.stage = stage
        self.settings = settings
        self.broker = broker
        self.stopping = stopping
        self.log = logging.getLogger(f"elk_resolver.streams.{stage}")
        self.dead_lettered = 0

    async def dead_letter(self, record: Any, reason: str, detail: str) -> None:
        self.log.warning(
            "dead-lettering %s:%s@%s: %s: %s", record.topic, record.partition, record.offset, reason, detail
        )
        await self.broker.publish(
            record.value or b"",
            topic=self.settings.topic_dlq,
            key=record.key,
            headers={
                DeadLetterHeaders.REASON: reason,
                DeadLetterHeaders.DETAIL: detail[:1000],
                DeadLetterHeaders.TOPIC: record.topic,
                DeadLetterHeaders.PARTITION: str(record.partition),
                DeadLetterHeaders.OFFSET: str(record.offset),
                DeadLetterHeaders.TIMESTAMP: str(record.timestamp),
                DeadLetterHeaders.STAGE: self.stage,
            },
        )
        self.dead_lettered += 1
        metrics.DEAD_LETTERED.labels(self.stage, reason).inc()

    async def validated(
        self, msg: Any, model: Any, reason: str, *, refuse: Callable[[Any, str], Awaitable[None]] | None = None
    ) -> list[tuple[Any, Any]]:
        """The records of a batch subscriber's message (or of a single-record one) as
        ``(model instance, record)``; a record that does not validate is dead-lettered with
        ``reason``. With ``refuse`` (the internal topics), a record without the service's
        signature (``internal_topic_key`` set, :mod:`elk_resolver.kafka.signing`) is handed to
        it with the problem instead, before it is read."""
        records = msg.raw_message
        if not isinstance(records, tuple):
            records = (records,)
        metrics.EVENTS_IN.labels(self.stage).inc(len(records))
        valid = []
        for record in records:
            if refuse is not None:
                problem = unsigned_problem(self.settings.internal_topic_key, record.topic, record.value, record.headers)
                if problem:
                    await refuse(record, problem)
                    continue
            try:
                valid.append((model.model_validate_json(record.value or b""), record))
            except ValidationError as exc:
                detail = validation_detail(exc)
                await self.retrying(lambda r=record, d=detail: self.dead_letter(r, reason, d), record)
        return valid

    async def retrying(
        self, work: Callable[[], Awaitable[Any]], record: Any, *, failed_reason: str = "publish-failed",
        records: list[Any] | None = None,
    ) -> None:
        """Run ``work`` until it succeeds: transient errors back off and retry while the stage
        runs; other errors get a few tries, then the record (or every one of ``records``, the
        records ``work`` stands for) is dead-lettered with ``failed_reason``."""
        s = self.settings
        attempt = failures = 0
        dead_lettering = False
        while True:
            # The first attempt always runs (a stopping stage drains the record it holds); only
            # retries give way to stopping.
            if attempt and self.stopping.is_set():
                raise Stopping(f"stopping with {record.topic}:{record.partition}@{record.offset} unfinished")
            try:
                await work()
                return
            except Stopping:
                raise
            except Exception as exc:
                if is_transient(exc):
                    metrics.RETRIES.labels(self.stage, type(exc).__module__.split(".")[0]).inc()
                    # one line per cause and window (the log's RepeatFilter), not one per record
                    # and attempt: an outage holds every record in flight
                    words = describe_failure(exc)
                    self.log.warning(
                        "waiting for a dependency, %s kept and retried: %s", where(record), words,
                        extra={"stage": self.stage, "coalesce": words.split(":", 1)[0]},
                    )
                elif dead_lettering:
                    # Nowhere left to put the record: keep it uncommitted and keep trying.
                    self.log.exception("dead-lettering %s@%s failed", record.partition, record.offset)
                else:
                    failures += 1
                    self.log.exception(
                        "%s of %s@%s failed (%d/%d)", self.stage, record.partition, record.offset, failures,
                        MAX_ATTEMPTS_NON_TRANSIENT,
                    )  # fmt: skip
                    if failures >= MAX_ATTEMPTS_NON_TRANSIENT:
                        detail = f"{type(exc).__name__}: {exc}"

                        async def work(detail: str = detail) -> None:
                            for one in records or [record]:
                                await self.dead_letter(one, failed_reason, detail)

                        dead_lettering = True
                        attempt = 0
                        continue
            delay = min(s.retry_backoff_max_s, s.retry_backoff_initial_s * 2**attempt)
            attempt += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), delay)


class ManualAckSubscription:
    """One FastStream subscriber with ``AckPolicy.MANUAL``, the stages' readiness and ack rules."""

    def __init__(self, stage: str, settings: Settings, broker: KafkaBroker, *, topic: str, group_id: str) -> None:
        self.stage = stage
        self.settings = settings
        self.broker = broker
        self.topic = topic
        self.group_id = group_id
        self.listener = JoinListener()
        self.subscriber: Any = None
        self.log = logging.getLogger(f"elk_resolver.streams.{stage}")

    async def start(self, handler: Callable[[Any], Awaitable[None]], *, max_records: int | None = None) -> None:
        """Register ``handler`` on the (connected) broker and join the group. With
        ``max_records`` the handler gets up to that many records at once (a batch subscriber:
        ``msg.raw_message`` is the tuple of records, ``msg.ack()`` commits after all of them)."""
        from faststream import AckPolicy

        from streams.tolerant_parser import tolerant_parser

        await self.broker.connect()
        s = self.settings
        batching = {"batch": True, "max_records": max_records, "batch_timeout_ms": 20} if max_records else {}
        subscriber = self.broker.subscriber(
            self.topic,
            group_id=self.group_id,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            session_timeout_ms=s.session_timeout_ms,
            heartbeat_interval_ms=s.heartbeat_interval_ms,
            listener=self.listener,
            persistent=False,
            title=handler.__name__,
            **batching,
        )
        subscriber(self._unless_stopping(handler), decoder=raw_body, parser=tolerant_parser)
        self.subscriber = subscriber
        self.listener.consumer = lambda: subscriber.consumer
        await subscriber.start()

    def _unless_stopping(self, handler: Callable[[Any], Awaitable[None]]) -> Callable[[Any], Awaitable[None]]:
        """``handler``, except that a record left unfinished because the stage stops (a
        dependency is down at SIGTERM) ends the call quietly: it is not acked, so it is read
        again after the restart. Raised out of the handler, FastStream would log it as an
        ERROR with a traceback on every clean shutdown during an outage."""

        @functools.wraps(handler)
        async def guarded(msg: Any) -> None:
            try:
                await handler(msg)
            except Stopping as exc:
                self.log.info("%s; it is read again after the restart", exc, extra={"stage": self.stage})

        return guarded

    async def stop(self) -> None:
        subscriber, self.subscriber = self.subscriber, None
        if subscriber is not None:
            await subscriber.stop()

    @property
    def ready(self) -> bool:
        sub = self.subscriber
        return sub is not None and sub.consumer is not None and self.listener.joined.is_set()

    @property
    def assignment(self) -> set[Any]:
        sub = self.subscriber
        if sub is None or sub.consumer is None:
            return set()
        return set(sub.consumer.assignment())

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await asyncio.wait_for(self.listener.joined.wait(), timeout)

    async def ack(self, msg: Any) -> None:
        """Commit after a handled record. A failed commit means the partition moved in a
        rebalance: the new owner re-reads the record, and every stage is idempotent per record."""
        from aiokafka.errors import CommitFailedError

        try:
            await msg.ack()
        except CommitFailedError as exc:
            self.log.warning(
                "commit after %s failed (the partitions moved to another copy, which reads these records "
                "again): %s", where(msg.raw_message), " ".join(str(exc).split()), extra={"stage": self.stage},
            )


class SubscribedStage:
    """What a stage built on one :class:`ManualAckSubscription` and one :class:`RecordWorker`
    answers about itself (the Stage protocol's ``ready``, plus lag and test helpers)."""

    _subscription: ManualAckSubscription
    _worker: RecordWorker

    @property
    def dead_lettered(self) -> int:
        return self._worker.dead_lettered

    @property
    def ready(self) -> bool:
        return self._subscription.ready

    @property
    def assignment(self) -> set[Any]:
        return self._subscription.assignment

    @property
    def consumer(self) -> Any:
        """The aiokafka consumer, for lag; None before start."""
        sub = self._subscription.subscriber
        return None if sub is None else sub.consumer

    async def wait_ready(self, timeout: float = 30.0) -> None:
        await self._subscription.wait_ready(timeout)

    async def rewind(self, topic: str, partitions: set[int] | None = None) -> list[Any]:
        """Read these partitions of ``topic`` (None: all) from their start, now for those this
        copy holds and at their next assignment for the others (:mod:`streams.rewind`): the
        log they had positions in was re-created or truncated. A batch in hand is finished
        and acked as usual; reading it again is harmless."""
        consumer = self.consumer
        rewinds = self._subscription.listener.rewinds
        rewinds.request(topic, partitions)
        if consumer is None:
            return []
        moved = rewinds.take(consumer.assignment())
        for tp in moved:
            consumer.seek(tp, 0)
        return moved
