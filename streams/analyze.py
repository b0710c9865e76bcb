"""The analysis stage on Kafka: ``elk.errors.analysis`` -> handler -> ``elk.errors.execution``.

One FastStream batch subscriber (group ``elk-resolver-analyze``), ``AckPolicy.MANUAL``, up to
``analyze_batch_records`` records at a time. For each batch:

1. Validate each record into :class:`AnalysisEvent`. A record that is not one goes to the
   dead-letter topic with the reason and its origin (:class:`DeadLetterHeaders`). A record is a
   pointer: what the stage acts on is loaded from the database
   (:func:`handlers.analyze.from_database`: what ingest stored about the event, the error row,
   its stored pattern); a record that disagrees with it is refused in ``decision_log``.
2. Draft each event's request (:func:`handlers.analyze.draft`: solutions, choice, binding to
   its object; the solutions of every hash and the switched-off playbooks are read once for
   the batch). Errors seen for the first time go first (steps 2-3 for them, then for the rest).
3. Group the drafts by the request they would make (error, bound object, history mark: during
   an incident most of a batch repeats a few errors) and settle each group once
   (:func:`handlers.analyze.settle`) with its newest event standing for all. A repeat of an error on an object whose request is
   still open is counted on that request (``planned_requests.repeats``) instead of becoming a
   new request the execute stage must decide again; otherwise the handler stores the request
   in ``planned_requests`` and the pointer (:class:`ExecutionRequest`) is published to
   ``elk.errors.execution`` keyed by hash_signature, awaiting the broker's acknowledgement.
4. Only then ``msg.ack()`` (which commits the whole batch).

Why this shape (see shared/notes/kafka-and-faststream.md): FastStream's default ``ACK_FIRST``
commits before the handler runs, so a crash loses the event; ``NACK_ON_ERROR`` re-reads a
failing record with no backoff. Here a transient failure (database, broker) is retried inside
the handler with exponential backoff, so the record is never committed before its request is
on the execution topic and never spun on. Because ``msg.ack()`` commits the consumer's position
on *every* assigned partition, the handler never returns normally with a record unhandled:
it either finishes the record (published, or dead-lettered) or raises only while the stage is
stopping, when no later ack follows. A redelivered record produces the same request id (see
:func:`handlers.analyze.request_id_for`), which the execution stage claims once, or is folded
again without being counted twice (the newest counted offset is stored with the request).

The body is decoded by this module, not by FastStream (a raw-bytes decoder), so a record that is
not JSON reaches the dead-letter path instead of failing in the framework where nobody acks it.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

import asyncpg
from faststream.kafka.annotations import KafkaMessage

from elk_resolver.actions.llm import LLMClient
from elk_resolver.actions.playbooks import Catalogue, load_from_settings
from elk_resolver.actions.policy import ExecutionPolicy
from elk_resolver.events.contracts import AnalysisEvent
from elk_resolver.kafka.signing import pointer_record
from handlers.analyze import Analysis, Draft, Known, Repeats, draft, from_database, group_drafts, refuse_record, settle_many
from streams import metrics
from streams.record_worker import ManualAckSubscription, RecordWorker, SubscribedStage

if TYPE_CHECKING:
    from faststream.kafka import KafkaBroker

    from elk_resolver.settings import Settings

__all__ = ["AnalyzeStage", "build_analyze"]

log = logging.getLogger("elk_resolver.streams.analyze")



_DRAFT_SLICE = 25  # drafts between two turns of the event loop (~5 ms)


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
        await self._subscription.start(self.on_elk_errors_analysis, max_records=self.settings.analyze_batch_records)

    async def stop(self) -> None:
        self._stopping.set()
        await self._subscription.stop()
        if self._own_llm and self.llm is not None:
            await self.llm.aclose()

    # -- the subscriber ---------------------------------------------------------------------

    async def on_elk_errors_analysis(self, msg: KafkaMessage) -> None:
        """One batch of analysis records (up to ``analyze_batch_records``), acked after every
        record in it is finished: counted on an open request, its request stored and the
        pointer acknowledged by the broker, answered with no request, or dead-lettered."""
        claimed: list[tuple[AnalysisEvent, Any]] = await self._worker.validated(
            msg, AnalysisEvent, "invalid-analysis-event", refuse=self._refuse
        )
        events = await self._from_database(claimed)
        if not events:
            await self._subscription.ack(msg)
            return
        known = Known()
        await self._worker.retrying(lambda: known.load(self.pool, [e.hash_signature for e, _ in events]), events[-1][1])
        # errors seen for the first time go first, drafted, stored and published before the
        # batch's repeats are drafted: nothing of theirs can be folded, and their first
        # decision is what an operator waits for
        first = [item for item in events if item[0].first_seen]
        for part in (first, [item for item in events if not item[0].first_seen]):
            if part:
                await self._analyse(part, known)
        await self._subscription.ack(msg)

    async def _from_database(self, claimed: list[tuple[AnalysisEvent, Any]]) -> list[tuple[AnalysisEvent, Any]]:
        """Each record as the database holds it (:func:`handlers.analyze.from_database`: the
        record is a pointer); a record that disagrees is refused in ``decision_log`` and goes no
        further."""
        if not claimed:
            return []
        loaded: list[AnalysisEvent | str] = []

        async def load() -> None:
            loaded[:] = await from_database(self.pool, [e for e, _ in claimed])

        await self._worker.retrying(load, claimed[-1][1])
        events = []
        for (event, record), trusted in zip(claimed, loaded):
            if isinstance(trusted, str):
                await self._refuse(record, trusted, event.hash_signature)
                continue
            events.append((trusted, record))
        return events

    async def _refuse(self, record: Any, problem: str, hash_signature: str | None = None) -> None:
        """A record that disagrees with the database, or lacks the internal topics' signature:
        logged in ``decision_log``, counted as handled, nothing stored."""
        where = f"{record.topic}:{record.partition}@{record.offset}"
        if hash_signature is None:
            hash_signature = (record.key or b"").decode("utf-8", "replace")
        await self._worker.retrying(
            lambda: refuse_record(self.pool, where, hash_signature, record.value, problem), record
        )
        metrics.REFUSED.labels(self.name).inc()
        self.handled += 1

    async def _analyse(self, events: list[tuple[AnalysisEvent, Any]], known: Known) -> None:
        """Draft each event, group the drafts by the request they would make, settle each group."""
        drafts: list[tuple[Draft, Any]] = []
        for index, (event, record) in enumerate(events):
            if index and index % _DRAFT_SLICE == 0:
                await asyncio.sleep(0)  # drafting is CPU only: let ingest and execute run between slices
            drafted: list[Analysis | Draft] = []

            async def work(event: AnalysisEvent = event) -> None:
                drafted[:] = [await draft(
                    event, pool=self.pool, catalogue=self.catalogue, policy=self.policy, llm=self.llm,
                    settings=self.settings, known=known,
                )]  # fmt: skip

            await self._worker.retrying(work, record)
            if not drafted:  # dead-lettered
                continue
            if isinstance(drafted[0], Analysis):
                log.info("no execution request for %s: %s", event.hash_signature[:12], drafted[0].note)
                self.handled += 1
                continue
            drafts.append((drafted[0], record))
        items = group_drafts(drafts)
        if items:
            await self._settle(items, [r for _, r in drafts])

    async def _settle(self, items: list[tuple[Draft, Repeats, Any]], records: list[Any]) -> None:
        """Fold every group in one statement, store the requests that must be, and publish
        their pointers (awaiting the broker's acknowledgement of each)."""

        async def work() -> None:
            results = await settle_many([(d, r) for d, r, _ in items], pool=self.pool, settings=self.settings)
            pending = []
            for (d, _, _), result in zip(items, results):
                if result.request is not None:
                    value, headers = pointer_record(self.settings.internal_topic_key, self.settings.topic_execution,
                                                    result.request.pointer())  # fmt: skip
                    pending.append(await self.broker.publish(
                        value, topic=self.settings.topic_execution, key=d.event.hash_signature.encode(),
                        headers=headers, no_confirm=True,
                    ))  # fmt: skip
            if pending:
                await asyncio.gather(*pending)
            metrics.PUBLISHED.labels(self.name).inc(len(pending))
            self.published += len(pending)

        await self._worker.retrying(work, items[-1][2], records=records)
        self.handled += sum(len(r.offsets) for _, r, _ in items)


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
