"""`elk-resolver replay`: read ``topic_raw`` again from a time, through a fresh consumer group.

* A fresh group id per run (``<group_ingest>-replay-<time>-<random>``): a group that has had
  members cannot have its offsets reset in place on Tansu, and the service's own group must
  not move.
* Start offsets from ``offsets_for_times`` per partition (Tansu answers ``(0, -1)`` past the
  end: that is "the end"); the stop offsets are the highwater marks captured at the start (or
  ``--until``'s offsets), so a replay ends even while Logstash keeps writing.
* Every batch goes through the ingest handler (:func:`handlers.ingest.handle_batch`):
  occurrences are keyed by event identity, so records already counted change nothing; the
  analysis events it publishes carry ``replay: true`` and ``history: replay`` (no remediation)
  unless ``--execute``, and occurrences it records first are stored with ``history = 'replay'``.
  Bad records are counted, not dead-lettered again (the live stage did that the first time).
* A record PostgreSQL refuses (a value a constraint forbids) goes to the DLQ as
  ``db_rejected`` with its topic, partition and offset, and the replay goes on; rows of a
  deleted pattern or a dropped partition are handled as ingest handles them. The producer
  and the fetch sizes are ingest's: analysis events land on the partition of their hash,
  and a record as large as ingest accepts replays too.
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import datetime

import asyncpg
from aiokafka import AIOKafkaConsumer, TopicPartition

from elk_resolver.events.masking import SecretMasker
from elk_resolver.kafka.signing import headers_for
from elk_resolver.kafka.offsets import fetch_highwaters, offset_for_time, partitions_of, start_or_close
from elk_resolver.operations.progress import Progress
from elk_resolver.settings import Settings
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
    db_rejected: int = 0
    """Records PostgreSQL refused, dead-lettered with their offsets."""
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
        bootstrap_servers=s.kafka_bootstrap_servers,
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
            futures = []
            for outcome in outcomes:
                for event in outcome.events:
                    value = event.model_dump_json().encode()
                    futures.append(await producer.send(
                        s.topic_analysis, value, key=event.hash_signature.encode(),
                        headers=headers_for(s.internal_topic_key, s.topic_analysis, value),
                    ))  # fmt: skip
            for dead in refused:
                log.error("replay: PostgreSQL refused %s[%d]@%d (%s); dead-lettered", dead.topic, dead.partition,
                          dead.offset, dead.detail)
                futures.append(await producer.send(s.topic_dlq, dead.value, headers=dead.headers()))
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
                result.published += len(outcome.events)
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


async def _store_or_isolate(records, ingest, cache: PatternCache, partitions: PartitionCache, masker: SecretMasker):
    """Store a batch; when PostgreSQL refuses it for its data, store its records one by one
    and return the ones still refused as dead letters. A deleted pattern row reloads the
    patterns, a vanished partition is created again, before a record counts as refused."""
    for attempt in range(_RELOADS + 1):
        try:
            return [await ingest(records)], []
        except asyncpg.PostgresError as exc:
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
