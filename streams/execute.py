"""The execution stage on Kafka: ``elk.errors.execution`` -> handler -> ``elk.errors.results``.

One FastStream batch subscriber (group ``elk-resolver-execute``), ``AckPolicy.MANUAL``, up to
``execute_batch_records`` records at a time: one error's pointers in their order, different errors
concurrently (``execute_concurrency``; the guards hold under the database's locks, as between
executor copies). For each record:

1. Validate it into :class:`ExecutionRequest` (a pointer: ids and a digest); a record that is
   not one goes to the dead-letter topic with the reason and its origin
   (:class:`DeadLetterHeaders`), then it is acked.
2. :func:`handlers.execute.handle_request` loads the stored request the pointer names (refusing
   a message that is not what the database holds), decides and maybe runs (see its module
   docstring for the guard order). Approvals are carried out here too: the approver's CLI
   records the decision and publishes a pointer; this stage runs the approved request once. It is retried on transient errors with backoff; a retry after the claim
   committed answers ``duplicate`` and runs nothing, so a retry can never run a command twice.
3. Every :class:`ExecutionResult` is published to ``elk.errors.results`` keyed by hash_signature
   (pending approvals also as :class:`ApprovalEvent` on ``elk.errors.approvals``), each awaited
   until the broker acknowledges it. Publishing is retried on its own, with the results already
   computed, so a broker blip never turns a real outcome into a ``duplicate``.
4. Once every record of the batch is finished, ``msg.ack()``.

The handler never returns with a record unfinished (``msg.ack()`` commits the position of every
assigned partition): it finishes the record or raises only while the stage is stopping, when no
later ack follows. A background task, every ``maintenance_interval_s``, expires approvals and
incidents, judges verifications, records lost runs (the reaper), runs approved requests whose
pointer never arrived, and publishes what they decide.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg
from faststream.kafka.annotations import KafkaMessage

from elk_resolver import notify
from elk_resolver.actions.executors.elasticsearch import make_client
from elk_resolver.actions.playbooks import Catalogue, load_from_settings
from elk_resolver.actions.policy import ExecutionPolicy
from elk_resolver.events.contracts import ApprovalEvent, ExecutionRequest, ExecutionResult
from elk_resolver.kafka.signing import pointer_record
from handlers.effect import deferred_due, record_outcomes
from handlers.execute import (
    Runtime,
    approved_waiting,
    expire_approvals,
    handle_request,
    refuse_message,
    reap_lost_runs,
    verify_outcomes,
)
from streams import metrics
from streams.record_worker import ManualAckSubscription, RecordWorker, SubscribedStage, describe_failure, is_transient

if TYPE_CHECKING:
    from collections.abc import Mapping

    from faststream.kafka import KafkaBroker

    from elk_resolver.settings import Settings

__all__ = ["ExecuteStage", "build_execute", "in_key_order", "publish_outcomes"]

T = TypeVar("T")

log = logging.getLogger("elk_resolver.streams.execute")



async def publish_outcomes(
    broker: KafkaBroker,
    settings: Settings,
    results: list[ExecutionResult],
    approvals: list[ApprovalEvent] = (),  # type: ignore[assignment]
    pointers: list[ExecutionRequest] = (),  # type: ignore[assignment]
) -> None:
    """Publish results (and approval events, including those carried by ``pending_approval``
    results) keyed by hash_signature, and pointers at approved requests on the execution topic
    (the execute stage carries them out); return once the broker has acknowledged every one."""
    for pointer in pointers:
        value, headers = pointer_record(settings.internal_topic_key, settings.topic_execution, pointer)
        await broker.publish(value, topic=settings.topic_execution, key=pointer.hash_signature.encode(), headers=headers)
    events = list(approvals)
    for result in results:
        carried = result.details.get("approval") if result.outcome == "pending_approval" else None
        if carried:
            events.append(ApprovalEvent.model_validate(carried))
    for result in results:
        await broker.publish(result, topic=settings.topic_results, key=result.hash_signature.encode())
    for event in events:
        await broker.publish(event, topic=settings.topic_approvals, key=event.hash_signature.encode())


async def in_key_order(items: Sequence[T], key: Callable[[T], str], handle: Callable[[T], Awaitable[None]]) -> None:
    """``handle`` every item once: the items of one key one after another in their order (one
    error's pointers: a forged message and the genuine pointer are judged in the order they
    came), different keys concurrently. The property tests call it with the real handler."""
    by_key: dict[str, list[T]] = {}
    for item in items:
        by_key.setdefault(key(item), []).append(item)

    async def in_order(group: list[T]) -> None:
        for item in group:
            await handle(item)

    await asyncio.gather(*(in_order(group) for group in by_key.values()))


class ExecuteStage(SubscribedStage):
    name = "execute"

    def __init__(
        self,
        settings: Settings,
        *,
        pool: asyncpg.Pool,
        broker: KafkaBroker,
        group_id: str | None = None,
        policy: ExecutionPolicy | None = None,
        env: Mapping[str, str] | None = None,
        instance: str | None = None,
        maintenance_interval_s: float = 2.0,
        catalogue: Catalogue | None = None,
    ) -> None:
        self.settings = settings
        self.pool = pool
        self.broker = broker
        self.group_id = group_id or settings.group_execute
        self.policy = policy or ExecutionPolicy.from_settings(settings)
        self.catalogue = catalogue if catalogue is not None else load_from_settings(settings)
        self.maintenance_interval_s = maintenance_interval_s
        self._env = env
        self._instance = instance
        self._runtime: Runtime | None = None
        self._subscription = ManualAckSubscription(
            self.name, settings, broker, topic=settings.topic_execution, group_id=self.group_id
        )
        self._maintenance: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self.handled = 0
        self._worker = RecordWorker(self.name, settings, broker, self._stopping)

    # -- Stage -----------------------------------------------------------------------------

    async def start(self) -> None:
        if self._subscription.subscriber is not None:
            return
        instance = self._instance or Runtime().instance
        self._runtime = Runtime(elasticsearch=make_client(self.settings), env=self._env, instance=instance)
        self._stopping.clear()
        await self._subscription.start(self.on_elk_errors_execution, max_records=self.settings.execute_batch_records)
        self._maintenance = asyncio.create_task(self._maintain(), name="execute-maintenance")

    async def stop(self) -> None:
        self._stopping.set()
        task, self._maintenance = self._maintenance, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await self._subscription.stop()
        runtime, self._runtime = self._runtime, None
        if runtime is not None and runtime.elasticsearch is not None:
            await runtime.elasticsearch.close()

    # -- the subscriber ---------------------------------------------------------------------

    async def on_elk_errors_execution(self, msg: KafkaMessage) -> None:
        """One batch of pointers (up to ``execute_batch_records``): the pointers of one error
        (its key) in their order, different errors concurrently (at most
        ``execute_concurrency`` at a time), each one's outcomes published as soon as it is
        decided; acked when every record is finished. Concurrency changes nothing about what
        may run: every guard holds under the database's locks (per object, fleet-wide), exactly
        as between executor copies."""
        pointers: list[tuple[ExecutionRequest, Any]] = await self._worker.validated(
            msg, ExecutionRequest, "invalid-execution-request", refuse=self._refuse
        )
        slots = asyncio.Semaphore(self.settings.execute_concurrency)
        await in_key_order(pointers, lambda item: item[0].hash_signature, lambda item: self._handle(*item, slots))
        await self._subscription.ack(msg)

    async def _refuse(self, record: Any, problem: str) -> None:
        """A pointer without the internal topics' signature: logged ('refused'), nothing claimed."""
        where = f"{record.topic}:{record.partition}@{record.offset}"
        await self._worker.retrying(lambda: refuse_message(self.pool, where, record.value, problem), record)
        metrics.REFUSED.labels(self.name).inc()
        self.handled += 1

    async def _handle(self, req: ExecutionRequest, record: Any, slots: asyncio.Semaphore) -> None:
        results: list[ExecutionResult] = []

        async def decide() -> None:
            results[:] = await handle_request(
                req, pool=self.pool, settings=self.settings, policy=self.policy, runtime=self._runtime,
                catalogue=self.catalogue,
            )

        async with slots:
            await self._worker.retrying(decide, record, failed_reason="execution-failed")
        await self._worker.retrying(lambda: publish_outcomes(self.broker, self.settings, results), record)
        await self._worker.retrying(lambda: notify.outcomes(self.pool, self.settings, results), record)
        metrics.PUBLISHED.labels(self.name).inc(len(results))
        metrics.REFUSED.labels(self.name).inc(sum(1 for r in results if r.outcome == "refused"))
        self.handled += 1

    # -- approvals expiry and verification ------------------------------------------------------

    async def maintain_once(self, now: datetime | None = None) -> list[ExecutionResult]:
        """Expire approvals, judge verifications, reap lost runs, run approvals whose pointer was
        lost; publish what changed; return the results."""
        events, results = await expire_approvals(pool=self.pool, now=now)
        results += await verify_outcomes(pool=self.pool, settings=self.settings, now=now)
        results += await reap_lost_runs(pool=self.pool, settings=self.settings, now=now)
        waiting = await approved_waiting(pool=self.pool, settings=self.settings, now=now)
        for pointer in waiting + await deferred_due(pool=self.pool, now=now):
            results += await handle_request(
                pointer, pool=self.pool, settings=self.settings, policy=self.policy,
                runtime=self._runtime, catalogue=self.catalogue, now=now,
            )  # fmt: skip
        if results or events:
            await publish_outcomes(self.broker, self.settings, results, events)
            await notify.outcomes(self.pool, self.settings, results, events)
        await notify.sweep(self.pool, self.settings)
        await record_outcomes(pool=self.pool, settings=self.settings, now=now)  # did the fix help? (issue 25)
        return results

    async def _maintain(self) -> None:
        while not self._stopping.is_set():
            try:
                await self.maintain_once()
            except Exception as exc:
                if is_transient(exc):
                    words = describe_failure(exc)
                    log.warning("approval expiry / verification pass failed, the next pass retries: %s", words,
                                extra={"coalesce": words.split(":", 1)[0]})
                else:
                    # Not a message: nothing is lost by trying again next pass, but say it loudly.
                    log.exception("approval expiry / verification pass failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.maintenance_interval_s)


def build_execute(
    settings: Settings,
    *,
    pool: asyncpg.Pool,
    broker: KafkaBroker,
    group_id: str | None = None,
    env: Mapping[str, str] | None = None,
    maintenance_interval_s: float | None = None,
) -> ExecuteStage:
    """The execution stage; nothing connects until :meth:`ExecuteStage.start`."""
    return ExecuteStage(
        settings, pool=pool, broker=broker, group_id=group_id, env=env,
        maintenance_interval_s=(
            settings.execution_maintenance_interval_s if maintenance_interval_s is None else maintenance_interval_s
        ),
    )
