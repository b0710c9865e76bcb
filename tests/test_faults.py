"""Fault injection (issue 12): what the service does while something around it breaks.

Each test injects one fault while events flow and asserts the sums afterwards (every event
sent is stored or dead-lettered, none twice) and the health signals during the fault. The
faults: SIGKILL during ingest, PostgreSQL stopped and frozen (SIGSTOP), the broker restarted
(it forgets its topics), ``error_patterns`` rows deleted and edited live, partitions dropped
live, bad records during a replay.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.support.polling import wait_for
from tests.test_ingest_stream import error_event, fast, produce, producer, read_topic, running, total_count  # noqa: F401



def varied_event(i, kind):
    """An event of pattern ``kind`` whose error is new every few events (new rows are what
    refer to a pattern row, so they are what a deleted row breaks)."""
    event = error_event(i, kind)
    word = "".join(chr(97 + int(d)) for d in str(i // 3))
    event["message"] = f"upstream {kind} failed after {i} ms in step {word}"
    return event


async def dlq_count(kafka, topic) -> int:
    return len(await read_topic(kafka.bootstrap_servers, topic, at_least=0, timeout=5))


async def test_pattern_rows_deleted_and_edited_live_never_dead_letter_valid_events(
    running, fast, producer, pool, kafka
):
    ids = []
    for i in range(6):
        ids.append(await pool.fetchval(
            "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category, priority) "
            "VALUES ($1, $2, $3, 2) RETURNING id", f"live-{i}", f"upstream {i} failed", f"cat{i}"))
    # a long refresh interval: the stage keeps the deleted rows cached until a write fails
    stage = await running(fast.model_copy(update={"patterns_refresh_s": 60.0}))
    total = 1200
    sent = 0

    async def feed():
        nonlocal sent
        for start in range(0, total, 50):
            await produce(producer, fast.topic_raw,
                          [varied_event(i, i % 6) for i in range(start, start + 50)], partition=start // 50 % 4)
            sent += 50
            await asyncio.sleep(0.02)

    feeder = asyncio.create_task(feed())
    await wait_for(lambda: total_count(pool), timeout=30, what="first events stored")
    # delete half the patterns and edit the rest while events flow
    for n, pattern_id in enumerate(ids):
        if n % 2:
            await pool.execute("DELETE FROM error_patterns WHERE id = $1", pattern_id)
        else:
            await pool.execute("UPDATE error_patterns SET error_category = error_category || '-edited', "
                               "pattern_regex = pattern_regex || '.*' WHERE id = $1", pattern_id)
        await asyncio.sleep(0.05)  # the scenario: edits spread over the stream
    await feeder
    await wait_for(
        lambda: pool.fetchval("SELECT coalesce(sum(occurrence_count), 0) = $1::bigint FROM error_logs", total),
        timeout=60, interval=0.2, what="every event stored",
    )
    await wait_for(lambda: stage.metrics.events_in >= total, timeout=30, what="all offsets committed")
    assert await pool.fetchval("SELECT count(*) FROM error_occurrences") == total
    assert stage.metrics.dead_lettered == 0
    assert await dlq_count(kafka, fast.topic_dlq) == 0
    # the deleted patterns' errors were classified again, without the deleted rows
    assert await pool.fetchval("SELECT count(*) FROM error_logs WHERE pattern_id IS NOT NULL "
                               "AND pattern_id NOT IN (SELECT id FROM error_patterns)") == 0


async def test_partitions_dropped_live_are_created_again_not_dead_lettered(running, fast, producer, pool, kafka):
    stage = await running()
    await produce(producer, fast.topic_raw, [error_event(i, i % 3) for i in range(30)])
    await wait_for(lambda: pool.fetchval("SELECT count(*) = 30 FROM error_occurrences"), timeout=30)
    # retention (as the owner) drops May 2024 while the stage has it cached as existing
    dropped = await pool.fetch("SELECT drop_expired_error_occurrences_partitions(CURRENT_DATE)")
    assert any("y2024m05" in r[0] for r in dropped)
    await produce(producer, fast.topic_raw, [error_event(i, i % 3) for i in range(30, 60)])
    await wait_for(lambda: pool.fetchval("SELECT count(*) = 30 FROM error_occurrences"), timeout=30,
                   what="the 30 later events stored in a re-created partition")
    await wait_for(lambda: stage.metrics.events_in >= 60, timeout=30)
    assert stage.metrics.dead_lettered == 0
    assert await dlq_count(kafka, fast.topic_dlq) == 0
