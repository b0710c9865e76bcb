"""`elk-resolver replay`: read ``topic_raw`` again from a time, through a fresh consumer group.

* A fresh group id per run (``<group_ingest>-replay-<time>-<random>``): a group that has had
  members cannot have its offsets reset in place on Tansu, and the service's own group must
  not move.
* Start offsets from ``offsets_for_times`` per partition (Tansu answers ``(0, -1)`` past the
  end: that is "the end"); the stop offsets are the highwater marks captured at the start (or
  ``--until``'s offsets), so a replay ends even while Logstash keeps writing.
* Every batch goes through the ingest handler (:func:`handlers.ingest.handle_batch`):
  occurrences are keyed by event identity, so records already counted change nothing. It
  publishes the analysis events of what it counted for the first time only (a second replay
  publishes nothing); they carry ``replay: true`` and ``history: replay`` (no remediation)
  unless ``--execute``, and occurrences it records first are stored with ``history = 'replay'``.
* A bad record (not JSON, too large, no message...) and a record PostgreSQL refuses (a value a
  constraint forbids) go to the DLQ exactly as live ingest sends them: reason, topic,
  partition, offset and the record's timestamp, unless a dead letter of that record is already
  there (sent by the live stage or an earlier replay): the DLQ topic is read from ``--since``
  first. The replay goes on past them; rows of a deleted pattern or a dropped partition are
  handled as ingest handles them. A database that is down or read-only stops the replay
  (nothing is dead-lettered for it); run it again.
* The producer and the fetch sizes are ingest's: analysis events land on the partition of
  their hash, and a record as large as ingest accepts replays too.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from elk_resolver.events.contracts import DeadLetterHeaders
from elk_resolver.events.masking import SecretMasker
from elk_resolver.kafka.signing import headers_for
from elk_resolver.kafka.offsets import fetch_highwaters, offset_for_time, partitions_of, start_or_close
from elk_resolver.kafka.security import client_options
from elk_resolver.operations.progress import Progress
from elk_resolver.settings import Settings
from elk_resolver.store.db import is_transient_db_error
from elk_resolver.store.pattern_cache import PatternCache
from handlers.ingest import (
    DeadLetter,
    IngestConfig,
    IngestResult,
    PartitionCache,
    db_rejected,
    handle_batch,
    is_stale_pattern,
)
from streams.ingest import analysis_producer, raw_fetch_options

log = logging.getLogger("elk_resolver.replay")


@dataclass
class ReplayResult:
    group_id: str
    records: int = 0
    errors: int = 0
    new_occurrences: int = 0
    new_rows: int = 0
    skipped: int = 0
    bad_records: int = 0
    """Records that cannot become an event (not JSON, too large...)."""
    db_rejected: int = 0
    """Records PostgreSQL refused."""
    expired: int = 0
    """Records in months retention has dropped: counted before, never again."""
    dead_lettered: int = 0
    """Dead letters this replay sent (bad and refused records not on the DLQ yet)."""
    already_dead_lettered: int = 0
    """Bad and refused records whose dead letter was already on the DLQ."""
    published: int = 0
    ranges: dict[int, tuple[int, int]] = field(default_factory=dict)


def _ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


async def replay(
    settings: Settings,
    pool: asyncpg.Pool,
    *,
    since: datetime,
    until: datetime | None = None,
    execute: bool = False,
    progress: Progress | None = None,
) -> ReplayResult:
    s = settings
    group_id = f"{s.group_ingest}-replay-{datetime.now().strftime('%Y%m%dT%H%M%S')}-{uuid.uuid4().hex[:6]}"
    result = ReplayResult(group_id)
    consumer = AIOKafkaConsumer(
        **client_options(s),
        group_id=group_id,
        client_id="elk-resolver-replay",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        max_poll_records=s.batch_max_records,
        fetch_max_wait_ms=100,
        **raw_fetch_options(s),
    )
    await start_or_close(consumer)
    producer = analysis_producer(s)
    try:
        await producer.start()
        tps = await partitions_of(consumer, s.topic_raw)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        highwater = await fetch_highwaters(consumer, tps)
        starts = await consumer.offsets_for_times({tp: _ms(since) for tp in tps})
        start = {tp: offset_for_time(starts.get(tp), highwater[tp]) for tp in tps}
        stop = dict(highwater)
        if until is not None:
            ends = await consumer.offsets_for_times({tp: _ms(until) for tp in tps})
            stop = {tp: offset_for_time(ends.get(tp), highwater[tp]) for tp in tps}
        for tp in tps:
            result.ranges[tp.partition] = (start[tp], stop[tp])
            consumer.seek(tp, start[tp])
        remaining = {tp for tp in tps if start[tp] < stop[tp]}
        if progress is not None:
            progress.total = sum(max(0, stop[tp] - start[tp]) for tp in tps)
        paused = [tp for tp in tps if tp not in remaining]
        if paused:
            consumer.pause(*paused)

        already = await dead_lettered_since(s, since)
        cache = PatternCache(pool)
        await cache.refresh()
        masker = SecretMasker(s.mask_extra_patterns)
        # Marked as history in the database too (error_occurrences.history = 'replay' for the
        # records the live stage never counted); --execute is the operator asking to act on it.
        config = replace(IngestConfig.from_settings(s), history="replay", act_on_history=execute)
        partitions = PartitionCache()
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=500, max_records=s.batch_max_records)
            records = []
            for tp, recs in batches.items():
                records.extend(r for r in recs if r.offset < stop[tp])
                if recs and recs[-1].offset + 1 >= stop[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            for tp in list(remaining):  # an empty partition range, or compacted gaps at the end
                if await consumer.position(tp) >= stop[tp]:
                    remaining.discard(tp)
                    consumer.pause(tp)
            if not records:
                continue
            async def ingest(batch: list) -> IngestResult:
                return await handle_batch(
                    batch, pool=pool, patterns=cache.current, masker=masker, config=config,
                    partitions=partitions, replay=not execute,
                )

            outcomes, refused = await _store_or_isolate(records, ingest, cache, partitions, masker)
            # what this replay counted first goes on to analysis; what was counted before
            # already went there (a second replay publishes nothing)
            futures = []
            for outcome in outcomes:
                for event in outcome.events:
                    if event.new_occurrences <= 0:
                        continue
                    value = event.model_dump_json().encode()
                    futures.append(await producer.send(
                        s.topic_analysis, value, key=event.hash_signature.encode(),
                        headers=headers_for(s.internal_topic_key, s.topic_analysis, value),
                    ))  # fmt: skip
            published = len(futures)
            for dead in [d for outcome in outcomes for d in outcome.dead_letters] + refused:
                if dead.coordinates in already or dead.coordinates[:3] in already:
                    result.already_dead_lettered += 1
                    continue
                log.warning("replay: dead-lettered %s[%d]@%d: %s (%s)", dead.topic, dead.partition, dead.offset,
                            dead.reason, dead.detail)
                # a tombstone's dead letter is one too; the producer wants a key or a value
                key = b"" if dead.value is None else None
                futures.append(await producer.send(s.topic_dlq, dead.value, key=key, headers=dead.headers()))
                already.add(dead.coordinates)
                result.dead_lettered += 1
            for future in futures:
                await future
            for outcome in outcomes:
                c = outcome.counts
                result.records += c.events_in
                result.errors += c.errors
                result.new_occurrences += c.new_occurrences
                result.new_rows += c.new_rows
                result.skipped += c.skipped
                result.bad_records += c.dead_lettered
                result.expired += c.expired
            result.published += published
            result.records += len(refused)
            result.db_rejected += len(refused)
            # the fresh group's offsets say how far this replay got (visible to the lag tools)
            await consumer.commit({TopicPartition(r.topic, r.partition): r.offset + 1 for r in records})
            if progress is not None:
                progress.update(len(records))
    finally:
        await producer.stop()
        await consumer.stop()
    return result



_RELOADS = 3


async def dead_lettered_since(settings: Settings, since: datetime) -> set[tuple]:
    """The records (topic, partition, offset, timestamp) a dead letter on the DLQ topic names,
    among the dead letters sent since ``since`` (a dead letter is sent after its record
    arrived, so none of the replay's records has an older one). Dead letters sent before the
    timestamp header existed name (topic, partition, offset)."""
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False,
                                client_id="elk-resolver-replay-dlq", fetch_max_wait_ms=100,
                                **raw_fetch_options(settings))
    await start_or_close(consumer)
    found: set[tuple] = set()
    try:
        try:
            tps = await partitions_of(consumer, settings.topic_dlq, timeout=2.0)
        except LookupError:
            return found
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await fetch_highwaters(consumer, tps)
        starts = await consumer.offsets_for_times({tp: _ms(since) for tp in tps})
        for tp in tps:
            consumer.seek(tp, offset_for_time(starts.get(tp), ends[tp]))
        remaining = {tp for tp in tps if await consumer.position(tp) < ends[tp]}
        while remaining:
            for tp, records in (await consumer.getmany(*remaining, timeout_ms=500)).items():
                for r in records:
                    h = {k: v.decode("utf-8", "replace") for k, v in (r.headers or ())}
                    if DeadLetterHeaders.OFFSET not in h:
                        continue
                    coords = (h.get(DeadLetterHeaders.TOPIC), int(h.get(DeadLetterHeaders.PARTITION, -1)),
                              int(h[DeadLetterHeaders.OFFSET]))
                    stamp = h.get(DeadLetterHeaders.TIMESTAMP)
                    found.add((*coords, int(stamp)) if stamp and stamp.lstrip("-").isdigit() else coords)
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await consumer.stop()
    return found


async def _store_or_isolate(records, ingest, cache: PatternCache, partitions: PartitionCache, masker: SecretMasker):
    """Store a batch; when PostgreSQL refuses it for its data, store its records one by one
    and return the ones still refused as dead letters. A deleted pattern row reloads the
    patterns, a vanished partition is created again, before a record counts as refused."""
    for attempt in range(_RELOADS + 1):
        try:
            return [await ingest(records)], []
        except asyncpg.PostgresError as exc:
            if is_transient_db_error(exc):
                raise  # the database, not the record: the replay stops, nothing is dead-lettered
            if attempt < _RELOADS and (partitions.forget_if_vanished(exc) or is_stale_pattern(exc)):
                await cache.refresh()
                continue
            if len(records) == 1:
                return [], [db_rejected(masker, records[0], exc)]
            break
    outcomes: list = []
    refused: list = []
    for rec in records:
        done, dead = await _store_or_isolate([rec], ingest, cache, partitions, masker)
        outcomes += done
        refused += dead
    return outcomes, refused
