"""Issue 20, item 2: properties of the analysis stage's grouping and fold keys.

Pure part (no broker, no database: the batch's solutions are given to :func:`draft` as the
stage reads them once per batch): random incidents go through ingest's batches (random cuts),
their analysis events through the analysis stage's batches (other random cuts); in every batch

* every draft's fold key names the event's own object: the object the action is bound to, or,
  when nothing could be bound (a bare pod), the object the event came from;
* :func:`handlers.analyze.group_drafts` puts two drafts in one group only when they are the same
  error on the same object, makes one group per (error, object), counts every record once, and
  the newest draft stands for its group.

Against real PostgreSQL: the fold (``analyze-fold-repeats``, migration 0060) over batch splits
and redeliveries counts every analysis record once, on its own object's request, and stores one
request per (error, object).

Broken variants found: the code before issue 20's fix (the first property: every object of a
batch bound to the first event's pod); a coalesce key without the object (the second: three
deployments folded into one request); the unbound key of before the fix, by error and solution
only (the second: two bare pods of one error folded together); the fold statement without its
offset check (the third: a redelivered record counted twice).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from elk_resolver.actions.playbooks import load_playbooks
from elk_resolver.actions.policy import ExecutionPolicy
from elk_resolver.settings import make_settings
from handlers.analyze import Draft, Known, content_hash, draft, group_drafts, settle_many
from handlers.ingest import RawRecord, build_events, prepare_batch
from tests.support.shapes import NAMESPACES, shapes, split
from tests.test_properties_ingest import MASKER, SAMPLE_PATTERNS, event_object, stored_as

CATALOGUE = load_playbooks()
POLICY = ExecutionPolicy(kubectl_namespaces=NAMESPACES)
SETTINGS = make_settings(kubectl_namespaces=list(NAMESPACES), rollout_window_s=0)


@dataclass
class Ref:
    partition: int
    offset: int


def analysis_events(records: list[bytes], cuts: list[int]):
    """Ingest's analysis events for ``records`` cut into batches at ``cuts``, in publish order."""
    events = []
    for batch in split(records, cuts):
        prepared = prepare_batch([RawRecord(v) for v in batch], patterns=SAMPLE_PATTERNS, masker=MASKER)
        events += build_events(prepared, stored_as(prepared))
    return events


def known_for(events) -> Known:
    """The solutions a batch reads once: every shipped playbook that fits each error, stored."""
    known = Known(off=set())
    for e in events:
        rows = known.solutions.setdefault(e.hash_signature, [])
        names = {r["playbook_name"] for r in rows}
        pattern = e.pattern
        for playbook in CATALOGUE.find(pattern.name if pattern else None, pattern.category if pattern else e.error_type,
                                       e.error_message):  # fmt: skip
            if playbook.name in names:
                continue
            commands = [c.model_dump(exclude_none=True) for c in playbook.commands]
            rows.append({
                "id": 100 * (len(known.solutions)) + len(rows), "error_hash": e.hash_signature,
                "solution_type": playbook.solution_type, "solution_commands": commands, "success_rate": 0,
                "execution_count": 0, "source": "playbook", "playbook_name": playbook.name,
                "content_hash": content_hash(playbook.solution_type, commands), "approved_success_count": 0,
                "verified_run_count": 0, "verified_success_count": 0, "tripped_at": None,
                "created_at": datetime(2026, 1, 1), "choice_reason": None,
            })  # fmt: skip
            names.add(playbook.name)
    return known


async def drafts_of(events, known: Known) -> list[Draft]:
    out = []
    for e in events:
        d = await draft(e, pool=None, catalogue=CATALOGUE, policy=POLICY, settings=SETTINGS, known=known)
        if isinstance(d, Draft):
            out.append(d)
    return out


def folded_object(d: Draft) -> str:
    """The object part of a draft's coalesce key."""
    return d.key.split("|")[1]


def check_analysis_batch(drafts: list[Draft], offset0: int) -> None:
    refs = [Ref(0, offset0 + i) for i in range(len(drafts))]
    for d in drafts:
        own = event_object(d.event)
        if d.target is not None:
            assert d.target.key == own, (d.target.key, own)
            assert folded_object(d) == own
        else:
            assert folded_object(d).endswith("/" + own), (d.key, own)
    groups = group_drafts(list(zip(drafts, refs)))
    pairs = [(d.event.hash_signature, event_object(d.event)) for d in drafts]
    assert len(groups) == len(set(pairs)) == len({d.key for d, _, _ in groups})
    counted = []
    for d, repeats, ref in groups:
        members = [i for i, r in enumerate(refs) if r.offset in repeats.offsets]
        assert {pairs[i] for i in members} == {(d.event.hash_signature, event_object(d.event))}
        assert repeats.offsets[0] == ref.offset
        assert d.event.event_time == max(drafts[i].event.event_time for i in members)
        counted += repeats.offsets
    assert sorted(counted) == [r.offset for r in refs]


@st.composite
def incidents_in_batches(draw):
    shape = draw(shapes())
    records = shape.records()
    ingest_cuts = draw(st.lists(st.integers(1, max(1, len(records) - 1)), max_size=3))
    analysis_cuts = draw(st.lists(st.integers(1, 30), max_size=3))
    return records, ingest_cuts, analysis_cuts


@settings(max_examples=120, deadline=None)
@given(incidents_in_batches())
def test_each_draft_folds_only_into_its_own_objects_group(case):
    records, ingest_cuts, analysis_cuts = case
    events = analysis_events(records, ingest_cuts)
    known = known_for(events)
    drafts = asyncio.run(drafts_of(events, known))
    offset = 0
    for batch in split(drafts, analysis_cuts):
        check_analysis_batch(batch, offset)
        offset += len(batch)


def test_three_deployments_in_one_batch_make_three_groups():
    """The issue's shape, small: what the pure property shrinks a key without the object to."""
    import random

    from tests.support.incident import kubelet_crashloop

    rng = random.Random(5)
    records = [kubelet_crashloop("shop", d, rng) for d in ("checkout", "payments", "search") for _ in range(2)]
    events = analysis_events(records, [])
    drafts = asyncio.run(drafts_of(events, known_for(events)))
    check_analysis_batch(drafts, 0)
    assert sorted(d.target.key for d, _, _ in group_drafts([(d, Ref(0, i)) for i, d in enumerate(drafts)])) == [
        "k8s:shop/deployment/checkout", "k8s:shop/deployment/payments", "k8s:shop/deployment/search",
    ]  # fmt: skip


def test_two_bare_pods_of_one_error_keep_two_fold_keys():
    """What the property shrinks the unbound key by error and solution to."""
    import random

    from tests.support.incident import kubelet_crashloop

    rng = random.Random(6)
    records = [kubelet_crashloop("shop", "checkout", rng)]
    records += [kubelet_crashloop("shop", "x", rng, pod=pod) for pod in ("toolbox", "debug")]
    events = analysis_events(records, [])
    drafts = asyncio.run(drafts_of(events, known_for(events)))
    check_analysis_batch(drafts, 0)
    unbound = [d for d in drafts if d.target is None]
    assert len(unbound) == 2 and len({d.key for d in unbound}) == 2


# --- the fold against real PostgreSQL ---------------------------------------------------------------


@st.composite
def fold_deliveries(draw):
    """Analysis batches of a small incident (redeliveries: a stretch of records read again)."""
    shape = draw(shapes(max_objects=4, max_lines_per_object=4, bare_pods=True))
    records = shape.records()
    cuts = draw(st.lists(st.integers(1, max(1, len(records) - 1)), max_size=2))
    reads = [(a, b) for a, b in zip([0, *sorted(set(cuts))], [*sorted(set(cuts)), len(records)]) if a < b]
    for _ in range(draw(st.integers(0, 2))):
        a = draw(st.integers(0, len(records) - 1))
        reads.append((a, draw(st.integers(a + 1, len(records)))))
    return records, reads


async def _reset(pool) -> None:
    await pool.execute("TRUNCATE planned_requests, solutions, error_logs RESTART IDENTITY CASCADE")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(case=fold_deliveries())
async def test_the_fold_counts_every_record_once_on_its_own_objects_request(pool, case):
    records, reads = case
    await _reset(pool)
    # ingest in one batch per record (so every object has several analysis records), then the
    # analysis topic read as ``reads`` says: consecutive stretches, and some read again
    events = analysis_events(records, list(range(1, len(records))))
    for e in {e.hash_signature: e for e in events}.values():
        await pool.execute(
            "INSERT INTO error_logs (error_type, error_message, source_system, hash_signature) VALUES ($1, $2, 'x', $3)"
            " ON CONFLICT DO NOTHING", e.error_type, e.error_message, e.hash_signature,
        )  # fmt: skip
    known = known_for(events)
    for rows in known.solutions.values():
        for r in rows:
            await pool.execute(
                "INSERT INTO solutions (id, error_hash, solution_type, solution_commands, source, playbook_name, content_hash,"
                " solution_description) VALUES ($1, $2, $3, $4, $5, $6, $7, 'x')", r["id"], r["error_hash"], r["solution_type"],
                r["solution_commands"], r["source"], r["playbook_name"], r["content_hash"],
            )  # fmt: skip
    drafts = await drafts_of(events, known)
    now = datetime.now(UTC)
    for a, b in reads:
        batch = [(d, Ref(0, i)) for i, d in enumerate(drafts) if a <= i < b]
        if batch:
            items = [(d, repeats) for d, repeats, _ in group_drafts(batch)]
            await settle_many(items, pool=pool, settings=SETTINGS, now=now)
    rows = await pool.fetch("SELECT coalesce_key, repeats FROM planned_requests")
    by_key: dict[str, list[int]] = {}
    for i, d in enumerate(drafts):
        by_key.setdefault(d.key, []).append(i)
    # one request per (error, object), counting each of its records once
    assert sorted(r["coalesce_key"] for r in rows) == sorted(by_key)
    assert {r["coalesce_key"]: r["repeats"] + 1 for r in rows} == {k: len(v) for k, v in by_key.items()}

