"""The analysis stage on Kafka: ``elk.errors.analysis`` -> handler -> ``elk.errors.execution``.

One FastStream subscriber (group ``elk-resolver-analyze``), ``AckPolicy.MANUAL``, one message at
a time in partition order. For each record:

1. Validate it into :class:`AnalysisEvent`. A record that is not one goes to the dead-letter
   topic with the reason and its origin (:class:`DeadLetterHeaders`), then it is acked.
2. Run :func:`handlers.analyze.analyze`.
3. Publish the pointer (:class:`ExecutionRequest`) at the request the handler stored in
   ``planned_requests`` to ``elk.errors.execution`` keyed by hash_signature and wait for the
   broker's acknowledgement.
4. Only then ``msg.ack()``.

Why this shape (see shared/notes/kafka-and-faststream.md): FastStream's default ``ACK_FIRST``
commits before the handler runs, so a crash loses the event; ``NACK_ON_ERROR`` re-reads a
failing record with no backoff. Here a transient failure (database, broker) is retried inside
the handler with exponential backoff, so the record is never committed before its request is
on the execution topic and never spun on. Because ``msg.ack()`` commits the consumer's position
on *every* assigned partition, the handler never returns normally with a record unhandled:
it either finishes the record (published, or dead-lettered) or raises only while the stage is
stopping, when no later ack follows. A redelivered record produces the same request id (see
:func:`handlers.analyze.request_id_for`), which the execution stage claims once.

The body is decoded by this module, not by FastStream (a raw-bytes decoder), so a record that is
not JSON reaches the dead-letter path instead of failing in the framework where nobody acks it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import asyncpg
from faststream.kafka.annotations import KafkaMessage
from pydantic import ValidationError

from elk_resolver.llm import LLMClient
from elk_resolver.playbooks import Catalogue, load_from_settings
from elk_resolver.policy import ExecutionPolicy
from handlers.analyze import analyze
from streams import metrics
from streams.record_worker import ManualAckSubscription, SubscribedStage, RecordWorker, validation_detail
from streams.contracts import AnalysisEvent

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker

    from elk_resolver.settings import Settings

__all__ = ["AnalyzeStage", "build_analyze"]

log = logging.getLogger("elk_resolver.streams.analyze")



class AnalyzeStage(SubscribedStage):
    name = "analyze"

    def __init__(
        self,
        settings: Settings,
        *,
        pool: asyncpg.Pool,
        broker: KafkaBroker,
        llm_client: LLMClient | None = None,
        group_id: str | None = None,
        catalogue: Catalogue | None = None,
        policy: ExecutionPolicy | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker
        self.group_id = group_id or settings.group_analyze
        self.catalogue = catalogue if catalogue is not None else load_from_settings(settings)
        self.policy = policy or ExecutionPolicy.from_settings(settings)
        self._own_llm = llm_client is None and settings.llm_enabled
        self.llm = llm_client
        if self._own_llm:
            self.llm = LLMClient(settings, policy=self.policy, catalogue=self.catalogue)
        self._subscription = ManualAckSubscription(
            self.name, settings, broker, topic=settings.topic_analysis, group_id=self.group_id
        )
        self._stopping = asyncio.Event()
        self.handled = 0
        self.published = 0
        self._worker = RecordWorker(self.name, settings, broker, self._stopping)

    # -- Stage -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Register the subscriber on the (connected) broker and join the group."""
        if self._subscription.subscriber is not None:
            return
        self._stopping.clear()
        await self._subscription.start(self.on_elk_errors_analysis)

    async def stop(self) -> None:
        self._stopping.set()
        await self._subscription.stop()
        if self._own_llm and self.llm is not None:
            await self.llm.aclose()

    # -- the subscriber ---------------------------------------------------------------------

    async def on_elk_errors_analysis(self, msg: KafkaMessage) -> None:
        record = msg.raw_message
        metrics.EVENTS_IN.labels(self.name).inc()
        try:
            event = AnalysisEvent.model_validate_json(msg.body)
        except ValidationError as exc:
            detail = validation_detail(exc)
            await self._worker.retrying(lambda: self._worker.dead_letter(record, "invalid-analysis-event", detail), record)
        else:
            await self._worker.retrying(lambda: self._handle(event, record), record)
        await self._subscription.ack(msg)

    async def _handle(self, event: AnalysisEvent, record: Any) -> None:
        result = await analyze(
            event,
            pool=self.pool,
            catalogue=self.catalogue,
            policy=self.policy,
            llm=self.llm,
            settings=self.settings,
        )
        if result.request is not None:
            await self.broker.publish(
                result.request.pointer(),
                topic=self.settings.topic_execution,
                key=event.hash_signature.encode(),
            )
            metrics.PUBLISHED.labels(self.name).inc()
            self.published += 1
        else:
            log.info("no execution request for %s: %s", event.hash_signature[:12], result.note)
        self.handled += 1



def build_analyze(
    settings: Settings,
    *,
    pool: asyncpg.Pool,
    broker: KafkaBroker,
    llm_client: LLMClient | None = None,
    group_id: str | None = None,
) -> AnalyzeStage:
    """The analysis stage; nothing connects until :meth:`AnalyzeStage.start`."""
    return AnalyzeStage(settings, pool=pool, broker=broker, llm_client=llm_client, group_id=group_id)
