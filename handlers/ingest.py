"""Ingest: raw Logstash records in, classified and deduplicated errors in ``error_logs`` out.

A batch goes through two steps, kept apart so the stage runner can overlap them (the CPU
step of the next batch runs in this process while PostgreSQL works on the previous one):

1. :func:`prepare_batch` (pure CPU, no I/O): parse each record (a :class:`BadRecord` becomes
   a :class:`DeadLetter`), keep errors (severity ERROR and above, or a pattern match) and
   count the rest as skipped, mask secrets before anything else sees the text, classify,
   fingerprint, and collapse the batch to one entry per distinct hash and one occurrence per
   distinct event identity.
2. :func:`store_batch` (one transaction, opened by the caller): create missing monthly
   partitions, then one statement records the occurrences idempotently and upserts the
   errors, counting only occurrences never recorded before. Replays and redeliveries
   therefore never double count.

:func:`build_events` turns the stored batch into one :class:`AnalysisEvent` per distinct
hash and object (the workload the events came from: the same error from three deployments is
three events, each bound to its own deployment; 1,000 pods of one deployment are one), also when the batch brought no new occurrence: a batch whose commit succeeded but whose
publish was lost is published again on redelivery (the later stages are idempotent).

Two marks decide what may be remediated, and both are stored where the later stages read
them from the database:

* Level: a pattern match keeps a line whose own level is below ERROR (``warn``, ``info``,
  ``debug``...) but never raises it. Such a line is stored (occurrence counted, the row's
  severity is the worst level seen) and not published to analysis, so it is never remediated.
  A line with no level at all that matches a pattern is an ERROR (the topic carries errors).
* History: a record with the ``elk-history`` header (backfill-es, replay) is stored with that
  mark in ``error_occurrences.history`` and its analysis event says ``replay: true`` and
  ``history``, unless the operator asked to act on it. ``error_logs.last_actionable_at`` is
  the newest occurrence that may be remediated (live, error or worse).

:func:`handle_batch` chains the three for callers that need no pipelining (tests, CLI).
Nothing here imports a broker.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import asyncpg
import orjson

from elk_resolver.actions.targets import subject_key, subject_of
from elk_resolver.events.classify import PatternRow, PatternSet
from elk_resolver.events.contracts import AnalysisEvent, DeadLetterHeaders, ErrorContext, PatternRef
from elk_resolver.events.fingerprint import fingerprint, rule_fingerprint
from elk_resolver.events.logstash_event import (
    DEFAULT_MAX_BYTES,
    ERROR_RANK,
    SEVERITY_RANK,
    SOURCE_SYSTEM_MAX,
    BadRecord,
    history_mark,
    level_name,
    parse_record,
)
from elk_resolver.events.masking import SecretMasker
from elk_resolver.events.signs import dependency_of
from elk_resolver.events.merging import AliasIndex
from elk_resolver.store.db import queries

__all__ = [
    "DeadLetter",
    "IngestConfig",
    "IngestCounts",
    "IngestResult",
    "PartitionCache",
    "PreparedBatch",
    "RawRecord",
    "StoredBatch",
    "build_events",
    "db_rejected",
    "encode_events",
    "handle_batch",
    "is_stale_pattern",
    "prepare_batch",
    "prepare_into",
    "store_batch",
]

ERROR_TYPE_MAX = 100  # error_logs.error_type VARCHAR(100)
UNCLASSIFIED = "unclassified"
STAGE = "ingest"


class RecordLike(Protocol):
    """What the handler reads from a record: aiokafka's ``ConsumerRecord`` fits as is."""

    topic: str
    partition: int
    offset: int
    timestamp: int | None
    value: bytes | None
    headers: Sequence[tuple[str, bytes]]


@dataclass(slots=True)
class RawRecord:
    """A record outside Kafka (tests, replay from a file): the fields the handler reads."""

    value: bytes | None
    topic: str = ""
    partition: int = 0
    offset: int = 0
    timestamp: int | None = None
    headers: Sequence[tuple[str, bytes]] = ()


@dataclass(frozen=True, slots=True)
class IngestConfig:
    max_record_bytes: int = DEFAULT_MAX_BYTES
    fingerprint_version: str = "template"
    id_field: str = "event.hash"
    id_header: str = "event_id"
    history: str | None = None
    """The history mark of records that carry none (``replay`` for elk-resolver replay)."""
    act_on_history: bool = False
    """The operator asked for history to be remediated (``replay --execute``)."""
    believed_days: int = 88
    """An event's own time is believed when the broker received it at most this many days
    later (and at most a day earlier): ``retention_days`` less two, so a live event never lands
    in a month retention is dropping (see :func:`occurrence_time`)."""

    @classmethod
    def from_settings(cls, settings: Any) -> IngestConfig:
        return cls(
            max_record_bytes=settings.max_record_bytes,
            fingerprint_version=settings.fingerprint_version,
            id_field=settings.elasticsearch_id_field,
            id_header=settings.elasticsearch_id_header,
            believed_days=max(1, settings.retention_days - 2),
        )


@dataclass(slots=True)
class DeadLetter:
    """A record that cannot become an event. ``value`` is the record's bytes with any secret
    masked (byte for byte otherwise; see :func:`_masked_bytes`)."""

    value: bytes | None
    reason: str
    detail: str
    topic: str
    partition: int
    offset: int
    timestamp: int | None = None
    """The record's Kafka timestamp: with topic, partition and offset it names the record even
    after its topic was re-created and the offsets were handed out again."""

    def headers(self) -> list[tuple[str, bytes]]:
        headers = [
            (DeadLetterHeaders.REASON, self.reason.encode()),
            (DeadLetterHeaders.DETAIL, self.detail[:512].encode("utf-8", "replace")),
            (DeadLetterHeaders.TOPIC, self.topic.encode()),
            (DeadLetterHeaders.PARTITION, str(self.partition).encode()),
            (DeadLetterHeaders.OFFSET, str(self.offset).encode()),
            (DeadLetterHeaders.STAGE, STAGE.encode()),
        ]
        if self.timestamp is not None:
            headers.append((DeadLetterHeaders.TIMESTAMP, str(self.timestamp).encode()))
        return headers

    @property
    def coordinates(self) -> tuple[str, int, int, int | None]:
        return self.topic, self.partition, self.offset, self.timestamp


@dataclass(slots=True)
class _Trigger:
    """An occurrence an analysis event may name: its key in ``error_occurrences`` (identity and
    time), its history mark, and what that event itself says: its message and its object
    (context), masked. An analysis event carries its own trigger's message and object, never
    another event's: a playbook's extraction reads the message, and the message of another
    object's event would bind the action to that object (issue 20)."""

    identity: str
    when: datetime
    mark: str | None
    message: str
    context: dict[str, str]
    source: str


@dataclass(slots=True)
class _Error:
    """One distinct hash of the batch; the fields come from its first event in the batch."""

    hash: str
    error_type: str
    message: str
    template: str
    version: str
    own_hash: str
    """the fingerprint before the alias index (``hash`` is where it counts)."""
    severity: str
    source_system: str
    stack_trace: str | None
    elasticsearch_id: str | None
    raw: Any
    """The event with secrets masked (decoded JSON)."""
    raw_json: str
    """``raw`` as JSON text, what ``raw_log_data`` receives: the record's own text when
    masking changed nothing (no re-encoding), else ``raw`` encoded."""
    pattern: PatternRow | None
    context: dict[str, str]
    first_time: datetime
    last_time: datetime
    first: _Trigger
    """the batch's first event of this error (the one stored in ``error_logs``)."""
    rank: int = ERROR_RANK
    """``SEVERITY_RANK`` of ``severity``: the worst level of this error in the batch."""
    error_trigger: _Trigger | None = None
    """The first error-or-worse occurrence in the batch."""
    act_trigger: _Trigger | None = None
    """The newest occurrence that may be remediated: error-or-worse and not history (unless
    the operator asked). None: the batch gives this error nothing to act on."""
    count: int = 1

    others: dict[tuple[str | None, str | None], _Subject] | None = None
    """Other objects this error came from in the batch (:func:`elk_resolver.actions.targets.subject_key`),
    each analysed on its own: an action is bound to the event's own workload, so the same
    error from another workload is another request, never this one's target."""

    def note(self, rank: int, trigger: _Trigger, actionable: bool) -> None:
        _note(self, rank, trigger, actionable)

    @property
    def reported(self) -> bool:
        """Only error-or-worse lines go on to analysis; lower ones are stored, marked by
        their own severity, and never remediated."""
        return self.error_trigger is not None

    def trigger(self) -> _Trigger:
        """The occurrence the analysis event names (its identity and time key the
        ``error_occurrences`` row, whose ``history`` column the later stages can read)."""
        return self.act_trigger or self.error_trigger or self.first

    def add_subject(self, rank: int, trigger: _Trigger, actionable: bool) -> None:
        """A repeat event of this error (already counted): note it on the error and on its object."""
        key = subject_key(trigger.context)
        if self.others is None:
            own = subject_key(self.context)
            if key == own:
                _note(self, rank, trigger, actionable)
                return
            # until now every event was about the first event's object
            self.others = {own: _Subject(self.context, self.count - 1, self.error_trigger, self.act_trigger)}
        subject = self.others.get(key)
        if subject is None:
            subject = self.others[key] = _Subject(trigger.context, 0)
        subject.count += 1
        _note(subject, rank, trigger, actionable)
        _note(self, rank, trigger, actionable)


# the context fields elk_resolver.actions.targets.subject_key reads: equal on all, the same object
_SUBJECT_FIELDS = ("pod", "namespace", "deployment", "index")


@dataclass(slots=True)
class _Subject:
    """The events of one error about one object (workload, else pod, service, host)."""

    context: dict[str, str]
    count: int
    error_trigger: _Trigger | None = None
    act_trigger: _Trigger | None = None

    def trigger(self) -> _Trigger | None:
        return self.act_trigger or self.error_trigger


def _note(target: _Error | _Subject, rank: int, trigger: _Trigger, actionable: bool) -> None:
    if rank >= ERROR_RANK and target.error_trigger is None:
        target.error_trigger = trigger
    if actionable and (target.act_trigger is None or trigger.when >= target.act_trigger.when):
        target.act_trigger = trigger


def _subjects(batch: PreparedBatch) -> Iterable[tuple[str, _Error, int, _Trigger, bool]]:
    """``(hash, error, events, trigger, actionable)`` per error and object of the batch that
    reached ERROR: one analysis event each, carrying its trigger's own message and object."""
    for h, e in batch.errors.items():
        if not e.reported:
            continue
        if e.others is None:
            yield h, e, e.count, e.trigger(), e.act_trigger is not None
            continue
        for subject in e.others.values():
            trigger = subject.trigger()
            if trigger is not None:
                yield h, e, subject.count, trigger, subject.act_trigger is not None


def _masked_context(context: dict[str, str], source: str, nul: bool, mask_text: Any) -> tuple[dict[str, str], str]:
    """An event's context and source with NULs stripped and secrets masked: one masking pass
    over all the values (they rarely hold a secret), then each value only when it found one."""
    if nul:
        context = {k: _strip_nul(v) for k, v in context.items()}
        source = _strip_nul(source)
    joined = "\x1f".join((source, *context.values()))
    if mask_text(joined) != joined:
        context = {k: mask_text(v) for k, v in context.items()}
        source = mask_text(source)[:SOURCE_SYSTEM_MAX]
    return context, source


@dataclass(slots=True)
class PreparedBatch:
    errors: dict[str, _Error] = field(default_factory=dict)
    occurrences: dict[tuple[str, datetime], tuple[str, str, int, int, str | None, date]] = field(default_factory=dict)
    """(identity, occurred_at) -> (hash, topic, partition, offset, history mark, month): one per
    distinct event. ``month`` is the month retention judges it by: its own time's, or where
    that is not believed (then ``occurred_at`` is :data:`ODD_TIME`) the month it was received."""
    dead_letters: list[DeadLetter] = field(default_factory=list)
    events_in: int = 0
    skipped: int = 0
    months: set[date] = field(default_factory=set)

    @property
    def error_events(self) -> int:
        return sum(e.count for e in self.errors.values())


@dataclass(slots=True)
class StoredBatch:
    """What the transaction returned: per hash, (error_log_id, first_seen, new_occurrences)."""

    rows: dict[str, tuple[int, bool, int]]
    months_created: list[date]
    expired: int = 0
    """Occurrences in months retention has passed: not stored, not counted (again)."""


@dataclass(slots=True)
class IngestCounts:
    events_in: int = 0
    errors: int = 0
    skipped: int = 0
    dead_lettered: int = 0
    distinct: int = 0
    new_rows: int = 0
    new_occurrences: int = 0
    expired: int = 0


@dataclass(slots=True)
class IngestResult:
    events: list[AnalysisEvent]
    dead_letters: list[DeadLetter]
    counts: IngestCounts


class PartitionCache:
    """Months whose ``error_occurrences`` partition is known to exist, to skip asking, and
    months retention has passed (expired: never created again, their occurrences not counted)."""

    def __init__(self) -> None:
        self.known: set[date] = set()
        self.expired: set[date] = set()

    def missing(self, months: Iterable[date]) -> list[date]:
        return sorted(m for m in months if m not in self.known and m not in self.expired)

    def add(self, months: Iterable[date]) -> None:
        self.known.update(months)

    def forget_if_vanished(self, exc: BaseException) -> bool:
        """Forget every known month when ``exc`` says a partition is missing (dropped by
        retention or by hand while the service runs); True when the write should be tried
        again (it then creates the partition), False when ``exc`` is about something else."""
        if isinstance(exc, asyncpg.CheckViolationError) and "no partition of relation" in str(exc) and self.known:
            self.known.clear()
            return True
        return False


def is_stale_pattern(exc: BaseException) -> bool:
    """The write refers to an ``error_patterns`` row deleted since the patterns were loaded
    (the schema allows deleting one: ``error_logs.pattern_id`` is ON DELETE SET NULL). The
    events are valid: reload the patterns and classify them again."""
    if not isinstance(exc, asyncpg.ForeignKeyViolationError):
        return False
    return "pattern_id" in (exc.constraint_name or "") or "error_patterns" in (exc.detail or "")


# --- step 1: CPU ------------------------------------------------------------------------------


_AHEAD = timedelta(days=1)
ODD_TIME = datetime(1, 1, 1, 12)  # not datetime.min: asyncpg sends that as -infinity
"""``occurred_at`` of every occurrence whose own time is not believed (:func:`occurrence_time`):
they are told apart by their identity alone, in a partition of their own that no month of
retention's covers; retention removes them by when they were received (migration 0090)."""


def occurrence_time(parsed: datetime | None, fallback: datetime, kafka_ms: int | None,
                    believed: timedelta) -> tuple[datetime, bool]:
    """The time an event is stored and counted at, and whether it is its own ``@timestamp``.

    The time keys the event's ``error_occurrences`` row, so it must be the same on every
    delivery and replay, and it decides the monthly partition, so it must lie where retention
    keeps and removes partitions. ``@timestamp`` is used when the broker received the record
    at most ``believed`` after it and at most a day before it; otherwise (1975, 2150, a clock
    gone wrong, an unreadable value) the record's Kafka timestamp, which is stored with the
    record: the same on every delivery. Only a record without one (not from Kafka) falls back
    to ``@timestamp`` as it is, else the parse time."""
    if kafka_ms is not None and kafka_ms >= 0:
        try:
            received = datetime.fromtimestamp(kafka_ms / 1000, UTC).replace(tzinfo=None)
        except (OverflowError, OSError, ValueError):
            received = None
        if received is not None:
            if parsed is not None and received - believed <= parsed <= received + _AHEAD:
                return parsed, True
            return received, False
    if parsed is not None:
        return parsed, True
    return fallback, False


def _strip_nul(obj: Any) -> Any:
    """PostgreSQL text and jsonb cannot hold U+0000; JSON can (as ``\\u0000``)."""
    if isinstance(obj, str):
        return obj.replace("\x00", "") if "\x00" in obj else obj
    if isinstance(obj, dict):
        return {_strip_nul(k): _strip_nul(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_strip_nul(v) for v in obj]
    return obj


_ESCAPED_BYTES = re.compile("([\udc80-\udcff]+)")


def _masked_bytes(masker: SecretMasker, value: bytes | None) -> bytes | None:
    """The record's bytes with secrets masked: a dead letter leaves on an output topic too.
    Invalid UTF-8 bytes are kept as they were; the valid text between them is masked."""
    if not value:
        return value
    try:
        text = bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        pieces = _ESCAPED_BYTES.split(bytes(value).decode("utf-8", "surrogateescape"))
        pieces[::2] = [masker.mask_text(p) for p in pieces[::2]]
        masked = "".join(pieces).encode("utf-8", "surrogateescape")
        return value if masked == value else masked
    masked_text = masker.mask_text(text)
    return value if masked_text == text else masked_text.encode()


def db_rejected(masker: SecretMasker, rec: RecordLike, exc: BaseException) -> DeadLetter:
    """The dead letter of a record PostgreSQL refuses on its own (not a connection problem)."""
    return DeadLetter(
        _masked_bytes(masker, rec.value), "db_rejected", f"{type(exc).__name__}: {exc}",
        rec.topic, rec.partition, rec.offset, rec.timestamp,
    )


def prepare_batch(
    records: Iterable[RecordLike],
    *,
    patterns: PatternSet,
    masker: SecretMasker,
    config: IngestConfig = IngestConfig(),
    aliases: AliasIndex | None = None,
) -> PreparedBatch:
    """Parse, filter, mask, classify, fingerprint and collapse a batch. Pure CPU."""
    batch = PreparedBatch()
    prepare_into(batch, records, patterns=patterns, masker=masker, config=config, aliases=aliases)
    return batch


def prepare_into(
    batch: PreparedBatch,
    records: Iterable[RecordLike],
    *,
    patterns: PatternSet,
    masker: SecretMasker,
    config: IngestConfig = IngestConfig(),
    aliases: AliasIndex | None = None,
) -> None:
    """:func:`prepare_batch` in steps: add ``records`` to ``batch``. Feeding a batch's records
    in slices gives the same result as one call (the stage runner does so to let the event
    loop serve the database and the broker between slices).

    ``aliases`` (the learned and operators' merges) maps a fingerprint to its canonical
    error before anything is keyed by it: one dictionary lookup per event."""
    errors = batch.errors
    occurrences = batch.occurrences
    months = batch.months
    mask_text = masker.mask_text
    is_clean = masker.record_is_clean
    match = patterns.match
    version = config.fingerprint_version
    max_bytes = config.max_record_bytes
    id_field = config.id_field
    id_header = config.id_header
    default_mark = config.history
    act_on_history = config.act_on_history
    believed = timedelta(days=config.believed_days)
    resolve = aliases.resolve if aliases is not None and (aliases.exact or aliases.learned) else None
    n = 0
    for rec in records:
        n += 1
        value = rec.value
        try:
            ev = parse_record(value, max_bytes=max_bytes, headers=rec.headers, id_field=id_field, id_header=id_header)
        except BadRecord as bad:
            batch.dead_letters.append(
                DeadLetter(_masked_bytes(masker, value), bad.reason, bad.detail, rec.topic, rec.partition, rec.offset,
                           rec.timestamp)
            )
            continue
        # One RE2 pass over the record's text: most records hold nothing to mask, and then
        # no part of them is masked one by one (the same result, see record_is_clean).
        clean = is_clean(value)
        nul = not clean and b"\\u0000" in value  # type: ignore[operator]
        message = ev.message
        ecs_type = ev.error_type_ecs
        if not clean:
            message = mask_text(_strip_nul(message) if nul else message)
            if ecs_type is not None:
                ecs_type = mask_text(_strip_nul(ecs_type) if nul else ecs_type)
        pattern = match(message, ecs_type)
        severity = ev.severity
        if severity is None:
            if pattern is None:
                batch.skipped += 1
                continue
            # A pattern keeps a line whose level is below ERROR, but never raises it: the line
            # is stored with its own level and not reported (see _Error.reported). A line with
            # no level at all is on the error topic and matches a pattern: an error.
            severity = "ERROR" if ev.level_raw is None else level_name(ev.level_raw)
        rank = SEVERITY_RANK.get(severity, 0)
        mark, act = history_mark(rec.headers)
        if mark is None:
            mark = default_mark
        when, own_time = occurrence_time(ev.event_time, ev.timestamp, rec.timestamp, believed)
        # an event whose own time cannot be believed is stored when the broker received it, and
        # never remediated automatically: how old it really is, nobody knows
        actionable = rank >= ERROR_RANK and (mark is None or act or act_on_history) and own_time
        if pattern is not None:
            error_type = pattern.error_category
        else:
            error_type = (ecs_type or UNCLASSIFIED)[:ERROR_TYPE_MAX]
        if pattern is not None and pattern.fingerprint_fields:
            fp = rule_fingerprint(error_type, pattern, message, ev.context)
        else:
            fp = fingerprint(error_type, message, version)
        h = fp.hash if resolve is None else resolve(error_type, fp.template, fp.hash)
        # an event whose own time is not believed is one occurrence by its identity alone: a
        # producer's resend of it has another Kafka timestamp, and must count nothing again
        key = (ev.event_identity, when if own_time else ODD_TIME)
        if key in occurrences:
            continue  # the same event twice in one batch: one occurrence
        month = date(when.year, when.month, 1)
        occurrences[key] = (h, rec.topic, rec.partition, rec.offset, mark, month)
        months.add(month)
        err = errors.get(h)
        if err is not None:
            err.count += 1
            if when > err.last_time:
                err.last_time = when
            if when < err.first_time:
                err.first_time = when
            if rank > err.rank:
                err.rank, err.severity = rank, severity
            ctx, source = ev.context, ev.source_system
            if not clean:
                ctx, source = _masked_context(ctx, source, nul, mask_text)
            trigger = _Trigger(ev.event_identity, when, mark, message, ctx, source)
            first = err.context
            if err.others is None and all(ctx.get(k) == first.get(k) for k in _SUBJECT_FIELDS):
                err.note(rank, trigger, actionable)  # the common case: the same pod again
            else:
                err.add_subject(rank, trigger, actionable)
            continue
        # The first event of an error in this batch is the one that may be stored: mask the
        # rest of it now (only now: repeats are counted, never stored).
        raw = _strip_nul(ev.raw) if nul else ev.raw
        stack = ev.stack_trace
        context = ev.context
        source = ev.source_system
        if clean:
            masked_raw = raw
            # the source may be made of two context values ("namespace/deployment"), a text
            # the record does not hold as such
            if source not in context.values():
                source = mask_text(source)[:SOURCE_SYSTEM_MAX]
        else:
            if stack is not None:
                stack = mask_text(_strip_nul(stack) if nul else stack)
            context, source = _masked_context(context, source, nul, mask_text)
            masked_raw = masker.mask_obj(raw)
        if masked_raw is raw and not nul:
            # orjson accepted these bytes, so they are UTF-8 JSON PostgreSQL accepts too
            # (U+0000 aside, which ``nul`` covers)
            raw_json = value.decode() if type(value) is bytes else bytes(value).decode()  # type: ignore[union-attr]
        else:
            raw_json = orjson.dumps(masked_raw).decode()
        trigger = _Trigger(ev.event_identity, when, mark, message, context, source)
        errors[h] = _Error(
            hash=h,
            error_type=error_type,
            message=message,
            template=fp.template,
            version=fp.version,
            own_hash=fp.hash,
            severity=severity,
            source_system=source,
            stack_trace=stack,
            elasticsearch_id=ev.elasticsearch_id,
            raw=masked_raw,
            raw_json=raw_json,
            pattern=pattern,
            context=context,
            first_time=when,
            last_time=when,
            first=trigger,
            rank=rank,
        )
        errors[h].note(rank, trigger, actionable)
    batch.events_in += n


# --- step 2: the transaction ------------------------------------------------------------------


async def store_batch(
    conn: asyncpg.Connection,
    batch: PreparedBatch,
    *,
    partitions: PartitionCache | None = None,
    fingerprint_version: str = "template",
) -> StoredBatch:
    """Write a prepared batch, and add ``months_created`` to the :class:`PartitionCache`
    only after the write committed. The write is one statement, atomic on its own, so a
    transaction around the call is optional (the stage runner opens none, saving two round
    trips); the statements around it are idempotent (partitions) or read-only (row ids)."""
    q = queries()
    months = partitions.missing(batch.months) if partitions is not None else sorted(batch.months)
    expired = (partitions.expired & batch.months) if partitions is not None else set()
    created: list[date] = []
    if months:
        for month, partition in await conn.fetch(q.ingest_ensure_partitions, months):
            if partition is None:
                expired.add(month)
            else:
                created.append(month)
        if partitions is not None:
            partitions.expired.update(expired)
    rows: dict[str, tuple[int, bool, int]] = {}
    if not batch.errors:
        return StoredBatch(rows, created)

    occ = sorted(batch.occurrences.items())
    errs = [batch.errors[h] for h in sorted(batch.errors)]
    triggers = sorted(((t.when, t.identity), h, t) for h, _, _, t, _ in _subjects(batch))
    gone = 0
    if expired:
        # retention has passed these months: the occurrence may have been counted and dropped,
        # so it is never counted again, and an error with nothing else in the batch not written
        kept = [item for item in occ if item[1][5] not in expired]
        gone = len(occ) - len(kept)
        occ = kept
        live = {v[0] for _, v in occ}
        errs = [e for e in errs if e.hash in live]
        triggers = [x for x in triggers if x[1] in live and date(x[2].when.year, x[2].when.month, 1) not in expired]
        if not errs:
            return StoredBatch(rows, created, gone)
    o_ids = [k[0] for k, _ in occ]
    o_at = [k[1] for k, _ in occ]
    o_hash = [v[0] for _, v in occ]
    o_topic = [v[1] for _, v in occ]
    o_part = [v[2] for _, v in occ]
    o_off = [v[3] for _, v in occ]
    o_history = [v[4] for _, v in occ]

    result = await conn.fetch(
        q.ingest_upsert_batch,
        o_ids,
        o_at,
        o_hash,
        o_topic,
        o_part,
        o_off,
        [e.hash for e in errs],
        [e.first_time for e in errs],
        [e.error_type for e in errs],
        [e.message for e in errs],
        [e.source_system for e in errs],
        [e.severity for e in errs],
        [e.stack_trace for e in errs],
        [e.elasticsearch_id for e in errs],
        [e.raw_json for e in errs],
        [e.version for e in errs],
        [e.template for e in errs],
        [e.pattern.id if e.pattern is not None else None for e in errs],
        [e.last_time for e in errs],
        o_history,
        [e.act_trigger.when if e.act_trigger is not None else None for e in errs],
        [t.identity for _, _, t in triggers],
        [t.when for _, _, t in triggers],
        [h for _, h, _ in triggers],
        [subject_of(t.context) for _, _, t in triggers],
        [t.message for _, _, t in triggers],
        [orjson.dumps(_event_context(t.context)).decode() for _, _, t in triggers],
        [t.source for _, _, t in triggers],
        [t.mark for _, _, t in triggers],
        [dependency_of(t.message) for _, _, t in triggers],
    )
    for r in result:
        rows[r[1]] = (r[0], r[2], r[3])
    if len(rows) < len(errs):
        missing = [e.hash for e in errs if e.hash not in rows]
        for r in await conn.fetch(q.ingest_row_ids, missing):
            rows[r[1]] = (r[0], False, 0)
    return StoredBatch(rows, created, gone)


# --- step 3: what the stage emits --------------------------------------------------------------


def _event_context(ctx: dict[str, str]) -> dict[str, str | None]:
    """An ingest context as the analysis event's ``context`` (its field names)."""
    return {name: ctx.get(key) for name, key in _CONTEXT_FIELDS}


def _context(ctx: dict[str, str]) -> ErrorContext:
    return ErrorContext(**_event_context(ctx))


def _pattern_ref(p: PatternRow | None) -> PatternRef | None:
    if p is None:
        return None
    return PatternRef(
        id=p.id, name=p.pattern_name, category=p.error_category, priority=p.sort_key[0], auto_resolve=p.auto_resolve
    )


def build_events(batch: PreparedBatch, stored: StoredBatch, *, replay: bool = False) -> list[AnalysisEvent]:
    """One analysis event per distinct hash and object of the batch, in the batch's order."""
    events = []
    for h, e, n, t, actionable in _subjects(batch):
        if h not in stored.rows:
            continue  # every occurrence of it in the batch had expired: nothing to analyse
        row_id, first_seen, new = stored.rows[h]
        events.append(
            AnalysisEvent(
                error_log_id=row_id,
                hash_signature=h,
                error_type=e.error_type,
                error_message=t.message,
                fingerprint_template=e.template,
                severity=e.severity,
                source_system=t.source,
                pattern=_pattern_ref(e.pattern),
                context=_context(t.context),
                occurrences_in_batch=n,
                new_occurrences=min(new, n),
                first_seen=first_seen,
                event_time=t.when,
                trigger_event_id=t.identity,
                replay=replay or not actionable,
                history=t.mark,
            )
        )
    return events


_CONTEXT_FIELDS = (
    ("namespace", "namespace"),
    ("pod", "pod"),
    ("container", "container"),
    ("deployment", "deployment"),
    ("service", "service"),
    ("host", "host"),
    ("index", "index"),
    ("path", "file"),
)


def encode_events(batch: PreparedBatch, stored: StoredBatch, *, replay: bool = False) -> list[tuple[str, bytes]]:
    """``(hash_signature, JSON)`` of the events :func:`build_events` would build, without
    building them: the same document (the tests check it validates to the same model) for a
    tenth of the cost, which matters at one event per distinct error per batch."""
    out = []
    dumps = orjson.dumps
    for h, e, n, t, actionable in _subjects(batch):
        if h not in stored.rows:
            continue  # every occurrence of it in the batch had expired: nothing to analyse
        row_id, first_seen, new = stored.rows[h]
        p = e.pattern
        out.append(
            (
                h,
                dumps(
                    {
                        "error_log_id": row_id,
                        "hash_signature": h,
                        "error_type": e.error_type,
                        "error_message": t.message,
                        "fingerprint_template": e.template,
                        "severity": e.severity,
                        "source_system": t.source,
                        "pattern": None
                        if p is None
                        else {
                            "id": p.id,
                            "name": p.pattern_name,
                            "category": p.error_category,
                            "priority": p.sort_key[0],
                            "auto_resolve": p.auto_resolve,
                        },
                        "context": _event_context(t.context),
                        "occurrences_in_batch": n,
                        "new_occurrences": min(new, n),
                        "first_seen": first_seen,
                        "event_time": t.when,
                        "trigger_event_id": t.identity,
                        "replay": replay or not actionable,
                        "history": t.mark,
                    }
                ),
            )
        )
    return out


def count(batch: PreparedBatch, stored: StoredBatch | None) -> IngestCounts:
    rows = stored.rows.values() if stored is not None else ()
    return IngestCounts(
        events_in=batch.events_in,
        errors=batch.error_events,
        skipped=batch.skipped,
        dead_lettered=len(batch.dead_letters),
        distinct=len(batch.errors),
        new_rows=sum(1 for r in rows if r[1]),
        new_occurrences=sum(r[2] for r in rows),
        expired=stored.expired if stored is not None else 0,
    )


async def handle_batch(
    records: Iterable[RecordLike],
    *,
    pool: asyncpg.Pool,
    patterns: PatternSet,
    masker: SecretMasker,
    config: IngestConfig = IngestConfig(),
    partitions: PartitionCache | None = None,
    replay: bool = False,
    aliases: AliasIndex | None = None,
) -> IngestResult:
    """Prepare, store (one transaction) and build the events of one batch."""
    batch = prepare_batch(records, patterns=patterns, masker=masker, config=config, aliases=aliases)
    async with pool.acquire() as conn, conn.transaction():
        stored = await store_batch(conn, batch, partitions=partitions, fingerprint_version=config.fingerprint_version)
    if partitions is not None:
        partitions.add(stored.months_created)
    return IngestResult(build_events(batch, stored, replay=replay), batch.dead_letters, count(batch, stored))
