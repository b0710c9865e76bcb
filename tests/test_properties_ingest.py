"""Issue 20, item 2: properties of ingest's subjects per batch (pure: no broker, no database).

Over random objects (deployments of 1..3 namespaces), pods as ReplicaSets name them, error
kinds, interleavings, batch splits, redeliveries and junk records:

* every record of a batch is counted once: an occurrence (duplicates in a batch collapse to
  one), or a dead letter; across every delivery, every valid event sent is an occurrence;
* one analysis event per (error, object) of the batch, and no other, counting that object's
  distinct events;
* each analysis event is its own object's event: the trigger it names is a record of that
  object in the batch, and the event carries that record's message and time (the newest of
  the object's events), never another object's.

Broken variant found: the code before issue 20's fix (each object's event carried the message
of the error's first event in the batch) fails the third property; Hypothesis shrinks it to two
deployments in one namespace, one crash-loop line each (kept below as a plain regression test).
"""

from __future__ import annotations

import hashlib
from datetime import UTC

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from elk_resolver.events.classify import PatternRow, PatternSet
from elk_resolver.events.contracts import AnalysisEvent
from elk_resolver.events.masking import SecretMasker
from handlers.ingest import RawRecord, StoredBatch, build_events, encode_events, prepare_batch
from tests.support.incident import object_of
from tests.support.shapes import Line, Shape, shapes, split

SAMPLE_PATTERNS = PatternSet([
    PatternRow(1, "Pod CrashLoopBackOff", "CrashLoopBackOff.*pod.*", "kubernetes", 1, True),
    PatternRow(2, "Out of Memory", "OutOfMemory|OOMKilled.*", "resource", 2, True),
    PatternRow(3, "Connection Refused", "Connection refused.*port.*", "network", 3, True),
])  # fmt: skip
MASKER = SecretMasker()
JUNK = (b"not json", b'{"no": "message"}', b"[1, 2]")


def event_object(event: AnalysisEvent) -> str:
    """The object an analysis event is about, read from its context as a person reads it."""
    return object_of(event.context.namespace, event.context.pod, event.context.deployment)


def identity(value: bytes) -> str:
    return hashlib.sha256(value).hexdigest()


def stored_as(prepared) -> StoredBatch:
    """What the database would answer for the batch (ids in hash order, every occurrence new)."""
    return StoredBatch({h: (i + 1, True, prepared.errors[h].count) for i, h in enumerate(sorted(prepared.errors))}, [])


def deliver(batch: list[tuple[bytes, Line | None]]) -> tuple[object, list[AnalysisEvent]]:
    records = [RawRecord(v, topic="raw", partition=0, offset=i) for i, (v, _) in enumerate(batch)]
    prepared = prepare_batch(records, patterns=SAMPLE_PATTERNS, masker=MASKER)
    return prepared, build_events(prepared, stored_as(prepared))


def check_batch(batch: list[tuple[bytes, Line | None]]) -> set:
    prepared, events = deliver(batch)
    valid = {identity(v): (v, line) for v, line in batch if line is not None}
    # counted once: an occurrence each (duplicates collapse), or a dead letter
    assert prepared.events_in == len(batch)
    assert len(prepared.dead_letters) == sum(1 for _, line in batch if line is None)  # each delivery of junk
    assert {k[0] for k in prepared.occurrences} == set(valid)
    assert len(prepared.occurrences) == len(valid)
    hash_of = {k[0]: v[0] for k, v in prepared.occurrences.items()}
    # one analysis event per (error, object) of the batch
    expected = {(hash_of[i], line.object) for i, (_, line) in valid.items()}
    got = [(e.hash_signature, event_object(e)) for e in events]
    assert len(got) == len(set(got)) and set(got) == expected
    # each distinct event counted once, on its own object
    per_pair = {}
    for i, (_, line) in valid.items():
        per_pair[(hash_of[i], line.object)] = per_pair.get((hash_of[i], line.object), 0) + 1
    assert {(e.hash_signature, event_object(e)): e.occurrences_in_batch for e in events} == per_pair
    # each event is its own object's newest event: its trigger, message and time
    for e in events:
        value, line = valid[e.trigger_event_id]
        assert line.object == event_object(e)
        assert e.error_message == orjson.loads(value)["message"]
        assert e.context.pod == line.pod
        own = [orjson.loads(v)["@timestamp"] for v, other in valid.values() if other.object == line.object
               and hash_of[identity(v)] == e.hash_signature]  # fmt: skip
        assert e.event_time.replace(tzinfo=UTC).isoformat() == max(own)
    # the published bytes are the same events
    assert [AnalysisEvent.model_validate_json(v) for _, v in encode_events(prepared, stored_as(prepared))] == events
    return set(valid)


@st.composite
def deliveries(draw):
    """A shape's records with junk among them, cut into batches, some stretches delivered again."""
    shape: Shape = draw(shapes())
    items: list[tuple[bytes, Line | None]] = list(zip(shape.records(), shape.lines))
    for _ in range(draw(st.integers(0, 2))):
        items.insert(draw(st.integers(0, len(items))), (draw(st.sampled_from(JUNK)), None))
    batches = split(items, draw(st.lists(st.integers(1, max(1, len(items) - 1)), max_size=4)))
    for _ in range(draw(st.integers(0, 2))):  # a redelivery: a stretch read again, maybe cut otherwise
        a = draw(st.integers(0, len(items) - 1))
        b = draw(st.integers(a + 1, len(items)))
        batches.append(items[a:b])
    for _ in range(draw(st.integers(0, 2))):  # the same record twice in one batch
        batch = draw(st.sampled_from(batches))
        batch.insert(draw(st.integers(0, len(batch))), draw(st.sampled_from(batch)))
    return items, batches


@settings(max_examples=200, deadline=None)
@given(deliveries())
def test_every_batch_counts_each_event_once_and_sends_each_object_its_own_event(delivered):
    items, batches = delivered
    seen: set[str] = set()
    for batch in batches:
        seen |= check_batch(batch)
    # every valid event sent is an occurrence of some delivery (the database keeps it once)
    assert seen == {identity(v) for v, line in items if line is not None}


def test_two_deployments_in_one_batch_each_get_their_own_message():
    """What Hypothesis shrank the pre-fix failure to."""
    import uuid
    from datetime import datetime

    lines = [
        Line("crashloop", "shop", "checkout", "checkout-bbbbbb-bbbbb", uuid.UUID(int=1, version=4), 0),
        Line("crashloop", "shop", "payments", "payments-bbbbbb-bbbbb", uuid.UUID(int=2, version=4), 0),
    ]
    shape = Shape(lines, start=datetime(2026, 12, 1, tzinfo=UTC))
    check_batch(list(zip(shape.records(), lines)))
