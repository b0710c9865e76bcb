"""Issue 24: the learned-merge pass runs off the ingest path, in a process of its own
(:mod:`elk_resolver.store.merge_worker`), and when it runs does not change what ingest counts.

* An ingest copy's alias cache starts the merge-pass process when the first pass is due; the
  process merges, the copy's alias index picks the merges up from the generation counter, and
  a process that died is started again.
* Property (over random batch splits, orders, redeliveries and the points where passes land
  between batches): every event is counted once whatever the passes do (the sum of the
  counts is the number of distinct events), merged rows keep no count and point at a live
  row, and the grouping of the events is the one a single pass after every batch gives.

Broken variants checked: a pass that forgets the sweep (counts a copy made on a merged row
before its reload stay there) fails the second property; ingest without the alias index
(``aliases=None`` after a pass) fails the grouping equality.
"""

from __future__ import annotations

import asyncio
import os
import time

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elk_resolver.settings import make_settings
from elk_resolver.store.alias_cache import AliasCache
from elk_resolver.store.merge_pass import run_merge_pass
from tests.test_merging import TENANTS, event, ingest
from handlers.ingest import handle_batch
from elk_resolver.events.classify import PatternSet
from elk_resolver.events.masking import SecretMasker

FAMILY = [f"quota exceeded for {t} tenant" for t in TENANTS]


async def _wait_for(predicate, timeout_s: float = 60.0, every_s: float = 0.1):
    deadline = time.monotonic() + timeout_s
    while True:
        value = await predicate()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(every_s)


async def test_the_merge_pass_runs_in_its_own_process_and_ingest_sees_its_merges(pool, database_url):
    await ingest(pool, FAMILY)
    cache = AliasCache(pool, refresh_s=0.1, merge_every_s=0.2, settings=make_settings(database_url=database_url))
    await cache.start()
    try:
        merged = await _wait_for(lambda: pool.fetchval("SELECT count(*) FROM error_logs WHERE merged_into IS NOT NULL"))
        assert merged == len(TENANTS) - 1
        worker = cache.worker
        assert worker is not None and worker.alive and worker.pid != os.getpid()
        assert cache.passes == 0  # no pass ran in this process
        canonical = await pool.fetchval("SELECT hash_signature FROM error_logs WHERE merged_into IS NULL")
        member = await pool.fetchrow("SELECT hash_signature, error_type, error_message FROM error_logs"
                                     " WHERE merged_into IS NOT NULL LIMIT 1")  # fmt: skip

        async def reloaded():
            return cache.current.resolve(member["error_type"], member["error_message"], member["hash_signature"]) == canonical

        # the copy's index follows the generation the process moved (a new value at the learned slot)
        await _wait_for(reloaded)

        # a process that died is started again when the next pass is due
        os.kill(worker.pid, 9)
        await _wait_for(lambda: asyncio.sleep(0, result=worker.starts == 2 and worker.alive))
    finally:
        await cache.stop()
    assert not cache.worker.alive


async def test_no_merge_process_without_an_interval_or_settings(pool, database_url):
    assert AliasCache(pool, merge_every_s=0, settings=make_settings(database_url=database_url)).worker is None
    assert AliasCache(pool, merge_every_s=30).worker is None


# --- the property ---------------------------------------------------------------------------

OTHERS = [f"volume {s} for claim data" for s in ("Pending", "Bound", "Released", "Failed")] + [
    "disk full on node alpha", "cache warmup skipped for region beta",
]


@st.composite
def deliveries(draw):
    """Events (message, identity), the batches a consumer reads them in (splits, a stretch
    read again), and after which batches a merge pass runs."""
    # the whole family in some order (so passes have something to merge), then anything
    messages = draw(st.permutations(FAMILY)) + draw(st.lists(st.sampled_from(FAMILY + OTHERS), max_size=20))
    events = list(enumerate(messages))
    cuts = sorted(set(draw(st.lists(st.integers(1, len(events) - 1), max_size=5))))
    batches = [events[a:b] for a, b in zip([0, *cuts], [*cuts, len(events)])]
    for _ in range(draw(st.integers(0, 2))):  # a redelivery of a stretch
        a = draw(st.integers(0, len(events) - 1))
        batches.insert(draw(st.integers(0, len(batches))), events[a : draw(st.integers(a + 1, len(events)))])
    passes = set(draw(st.lists(st.integers(0, len(batches) - 1), max_size=len(batches))))
    # a copy reloads its alias index within refresh_s of a pass, not at once: batches in
    # between count with the index it has
    reloads = set(draw(st.lists(st.integers(0, len(batches) - 1), max_size=len(batches))))
    return events, batches, passes, reloads


async def _reset(pool) -> None:
    await pool.execute(
        "TRUNCATE error_logs, error_occurrences, error_aliases, error_templates, error_merge_log, analysis_triggers"
        " RESTART IDENTITY CASCADE"
    )
    await pool.execute("UPDATE fingerprint_state SET tokenized_upto = 0, rules_digest = NULL, alias_generation = 0")


async def _run(pool, batches, passes, reloads) -> dict[int, int]:
    """Ingest ``batches``, a pass after those in ``passes``, the copy's alias index reloaded
    after those in ``reloads``; a final pass, then event number -> the row its occurrence
    counts on in the end."""
    await _reset(pool)
    cache = AliasCache(pool, merge_every_s=None)
    await cache.refresh()
    for i, batch in enumerate(batches):
        records = [event(m, n) for n, m in batch]
        await handle_batch(records, pool=pool, patterns=PatternSet(()), masker=SecretMasker(), aliases=cache.current)
        if i in passes:
            await run_merge_pass(pool)
        if i in reloads:
            await cache.refresh()
    await run_merge_pass(pool)
    rows = await pool.fetch(
        "SELECT o.event_identity, coalesce(e.merged_into, e.id) AS grp FROM error_occurrences o"
        " JOIN error_logs e USING (hash_signature)"
    )
    ids = {f"ev-{n}-{abs(hash(m))}": n for batch in batches for n, m in batch}
    return {ids[r["event_identity"]]: r["grp"] for r in rows}


def _partition(groups: dict[int, int]) -> set[frozenset[int]]:
    by: dict[int, set[int]] = {}
    for n, g in groups.items():
        by.setdefault(g, set()).add(n)
    return {frozenset(v) for v in by.values()}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=deliveries())
async def test_when_merge_passes_run_changes_no_count_and_no_grouping(pool, case):
    events, batches, passes, reloads = case
    groups = await _run(pool, batches, passes, reloads)
    # every distinct event counted once, on a live row; merged rows keep nothing
    assert set(groups) == {n for n, _ in events}
    assert await pool.fetchval("SELECT sum(occurrence_count) FROM error_logs") == len(events)
    assert not await pool.fetchval(
        "SELECT count(*) FROM error_logs m JOIN error_logs c ON c.id = m.merged_into"
        " WHERE m.occurrence_count > 0 OR c.merged_into IS NOT NULL"
    )
    live = {r["id"]: r["occurrence_count"] for r in await pool.fetch("SELECT id, occurrence_count FROM error_logs WHERE merged_into IS NULL")}
    assert all(g in live for g in groups.values())
    # the grouping does not depend on where the passes landed: a pass after every batch
    every = set(range(len(batches)))
    assert _partition(groups) == _partition(await _run(pool, batches, every, every))


async def test_counts_made_with_a_stale_index_move_to_the_canonical_row(pool):
    """What Hypothesis shrinks the pass without its sweep to: ten tenants, a pass, then the
    stretch read again with two more events by a copy that has not reloaded its index yet
    (acme's second event counts on acme's merged row until the next pass moves it)."""
    events = list(enumerate(FAMILY + FAMILY[:1]))
    groups = await _run(pool, [events[:10], events], {0}, set())
    assert await pool.fetchval("SELECT sum(occurrence_count) FROM error_logs") == len(events)
    assert not await pool.fetchval("SELECT count(*) FROM error_logs WHERE merged_into IS NOT NULL AND occurrence_count > 0")
    assert len(set(groups.values())) == 1
