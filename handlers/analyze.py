"""The analysis stage: for one classified error, find or make solutions, choose one, decide.

A plain async function over a pool; it imports no broker, so the stage runner, the CLI and the
tests call it directly. One call per :class:`AnalysisEvent`:

1. Load the solutions stored for the hash.
2. Render every playbook that fits the event (by pattern name, category, message) and store the
   renders that are not stored yet. Playbooks are offline, cheap and trusted, so they are always
   candidates; storing them is ``INSERT ... ON CONFLICT (error_hash, content_hash) DO NOTHING``,
   so concurrent analyzers create one row per distinct solution.
3. Ask the LLM only when it is enabled, no playbook fits and no stored solution is usable (all
   tripped, or none): playbook first, LLM for what the playbooks do not know. An LLM failure
   therefore "falls back to the playbooks" by leaving whatever candidates exist. The same hash is
   asked at most once per ``llm_cache_ttl_s``, across instances and restarts: the caller first
   claims the hash in ``llm_requests`` (one row per hash) and only the winner calls the model.
4. Rank the candidates with :mod:`elk_resolver.actions.ranking` (Wilson lower bound over verified or
   executed outcomes) and store why the winner won (``choice_reason``).
5. Bind the chosen solution to the event's own object (:mod:`elk_resolver.actions.targets`), render it,
   give the analysis stage's view (``auto`` or ``approval``), and store the
   :class:`PlannedRequest` in ``planned_requests``; the stream publishes only its pointer.

The decision is ``auto`` only when all of these hold, otherwise ``approval`` with every reason
that failed: the event is not a replay and not stale; a pattern matched and allows
``auto_resolve``; every command is claimed safe by its source and allowed by the CURRENT policy
(re-evaluated here, the stored flag is not trusted alone); the solution is trusted (playbook and
manual solutions are; an LLM solution after ``llm_trust_after_successes`` approved successes);
the circuit breaker has not tripped it; every placeholder could be filled with a valid name.
The model's own confidence is stored but never unlocks anything.

Transient database errors propagate to the caller (the stage retries the whole call with
backoff; every step is idempotent: the inserts dedupe on content, the request id is
deterministic, and a second LLM call within the TTL is prevented by the claim and the client's
in-process cache).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

import asyncpg
import orjson

from elk_resolver.actions.llm import AnalysisRequest, LLMFallback, LLMSolution
from elk_resolver.actions.playbooks import PLACEHOLDER, Catalogue, RenderError, validate_value
from elk_resolver.actions.policy import Command, ExecutionPolicy, evaluate, safe_flag
from elk_resolver.actions.ranking import Candidate, choose
from elk_resolver.actions.targets import Target, Workload, subject_of, target_of_command, workload_of
from elk_resolver.events.contracts import AnalysisEvent, CommandSpec, ErrorContext, PatternRef, PlannedRequest
from elk_resolver.events.masking import mask_text
from elk_resolver.events.signs import dependency_of
from elk_resolver.store.db import queries

if TYPE_CHECKING:
    from elk_resolver.actions.llm import LLMClient
    from elk_resolver.settings import Settings

__all__ = [
    "Analysis",
    "Draft",
    "Known",
    "Repeats",
    "analyze",
    "draft",
    "from_database",
    "group_drafts",
    "refuse_record",
    "settle",
    "settle_many",
    "coalesce_key",
    "content_hash",
    "placeholder_context",
    "request_id_for",
]

log = logging.getLogger("elk_resolver.analyze")

# Keys of a command that do not change what runs: prose, and the safety verdict (which follows
# the policy, so a policy change must not turn the same fix into a "new" solution).
_NOT_CONTENT = frozenset({"description", "safe"})


@dataclass(slots=True)
class Analysis:
    """What one call did. ``request`` is None when there is nothing to run or ask about."""

    request: PlannedRequest | None
    solution_id: int | None = None
    created: list[int] = field(default_factory=list)
    """ids of the solutions this call inserted (empty when they existed already)."""
    skipped_playbooks: dict[str, str] = field(default_factory=dict)
    """playbook name -> why it could not be rendered for this event."""
    llm: str | None = None
    """None (not asked), or how the LLM step ended: solution, cached, claimed_elsewhere, or a
    :class:`LLMFallback` reason (invalid_output, unavailable, rejected, rate_limited, ...)."""
    note: str = ""
    folded_into: str | None = None
    """the open request this event's repeat was counted on (nothing to publish), else None."""


@dataclass(slots=True)
class Repeats:
    """The analysis records one call stands for: the stream folds a batch's repeats of an error
    on an object into one call (the newest event). ``offsets`` (None outside Kafka) and
    ``occurrences`` run in parallel, one entry per record; ``partition`` is theirs (one key,
    one partition)."""

    partition: int | None = None
    offsets: list[int | None] = field(default_factory=lambda: [None])
    occurrences: list[int] = field(default_factory=lambda: [0])

    @classmethod
    def single(cls, event: AnalysisEvent, partition: int | None = None, offset: int | None = None) -> Repeats:
        return cls(partition, [offset], [event.new_occurrences])


@dataclass(slots=True)
class Known:
    """What one batch's calls share instead of reading it per event: the solutions stored per
    hash (kept current by the calls that store new ones) and the playbooks switched off."""

    solutions: dict[str, list[asyncpg.Record]] = field(default_factory=dict)
    off: set[str] | None = None
    runnable: dict[int, bool] = field(default_factory=dict)
    """solution id -> every stored command passes the policy (the stage's policy is fixed)."""
    rollouts: dict[str, str | None] = field(default_factory=dict)
    """deployment key and ReplicaSet -> the bad-rollout evidence (None: none), read once per batch."""

    async def rollout(self, pool: asyncpg.Pool, event: AnalysisEvent, settings: Settings, now: datetime) -> str | None:
        """Evidence, from what ingest stored, that ``event``'s pod belongs to a ReplicaSet its
        deployment started within ``rollout_window_s``, after an older ReplicaSet whose pods
        logged before it: a bad rollout. None when there is none."""
        workload = _workload(event)
        pod = event.context.pod or ""
        prefix = f"{workload.name}-" if workload is not None else ""
        if workload is None or workload.kind != "deployment" or not pod.startswith(prefix) or pod.count("-") < 2:
            return None
        subject = subject_of(_context_fields(event))
        rs = pod[len(prefix):].rsplit("-", 1)[0]
        key = f"{subject}|{rs}"
        if key not in self.rollouts:
            since = _naive(now) - timedelta(seconds=max(settings.rollout_window_s * 2, 3600))
            rows = await pool.fetch(queries().analyze_replicasets, subject, since, prefix)
            self.rollouts[key] = _rollout_evidence(rows, rs, workload.name, _naive(now), settings.rollout_window_s)
        return self.rollouts[key]

    def is_runnable(self, row: Mapping[str, Any], policy: ExecutionPolicy) -> bool:
        verdict = self.runnable.get(row["id"])
        if verdict is None:
            verdict = self.runnable[row["id"]] = _runnable(row, policy)
        return verdict

    async def load(self, pool: asyncpg.Pool, hashes: Sequence[str]) -> None:
        q = queries()
        missing = sorted({h for h in hashes if h not in self.solutions})
        if missing:
            rows = await pool.fetch(q.analyze_solutions_for_hashes, missing)
            for h in missing:
                self.solutions[h] = []
            for r in rows:
                self.solutions[r["error_hash"]].append(r)
        if self.off is None:
            self.off = {r["playbook_name"] for r in await pool.fetch(q.analyze_disabled_playbooks)}


# the previous ReplicaSet's errors stopped at least this long before the new one appeared
_ROLLOUT_GAP_S = 60.0


def _rollout_evidence(rows: Sequence[Mapping[str, Any]], rs: str, deployment: str, now: datetime,
                      window_s: float) -> str | None:  # fmt: skip
    """The evidence sentence when ReplicaSet ``rs`` (its errors in ``rows``) appeared within
    ``window_s``, after one or two older ReplicaSets of the deployment whose errors had all
    stopped at least ``_ROLLOUT_GAP_S`` before (pod names of one burst never look like that)."""
    by_rs = {r["rs"]: r for r in rows}
    new = by_rs.get(rs)
    # the new ReplicaSet appeared recently; the deployment's other ReplicaSets (a real rollout
    # has one or two) had stopped logging errors well before it appeared
    if new is None or (now - new["first_at"]).total_seconds() > window_s:
        return None
    older = [r for r in rows if r["rs"] != rs]
    if not older or len(older) > 2:
        return None
    if any((new["first_at"] - r["last_at"]).total_seconds() < _ROLLOUT_GAP_S for r in older):
        return None
    old = max(older, key=lambda r: r["first_at"])
    ran = new["last_run_at"]
    if ran is not None and old["first_at"] <= ran <= new["first_at"]:
        return None  # the service's own restart made this ReplicaSet: the crash loop came back
    return (
        f"the crash-looping pods belong to ReplicaSet {deployment}-{rs}, first seen {new['first_at']:%H:%M:%S} UTC;"
        f" ReplicaSet {deployment}-{old['rs']} ran before it (its errors {old['first_at']:%H:%M:%S}-"
        f"{old['last_at']:%H:%M:%S} UTC, none since)"
    )


def coalesce_key(hash_signature: str, object_key: str, history: bool) -> str:
    """The error, the object its request is bound to, and the history mark: repeats with the
    same key fold into one open request (migration 0060)."""
    return f"{hash_signature}|{object_key}|{'history' if history else 'live'}"


def _context_fields(event: AnalysisEvent) -> dict[str, str]:
    return {k: v for k, v in event.context.model_dump().items() if isinstance(v, str) and v}


def _fold_object(target: Target | None, event: AnalysisEvent, solution_id: int) -> str:
    """The object part of a request's coalesce key: the bound object; when nothing could be
    bound, the object the event came from (two objects that both failed to bind are still two
    objects, each owed its own decision), with the solution."""
    if target is not None:
        return target.key
    return f"unbound:{solution_id}/{subject_of(_context_fields(event)) or ''}"


# --- pure helpers ------------------------------------------------------------------------------


def content_hash(solution_type: str, commands: Sequence[Mapping[str, Any]]) -> str:
    """SHA-256 of the canonical JSON of the type and the commands (without prose and ``safe``)."""
    canonical = {
        "solution_type": solution_type,
        "commands": [{k: v for k, v in c.items() if k not in _NOT_CONTENT} for c in commands],
    }
    return hashlib.sha256(orjson.dumps(canonical, option=orjson.OPT_SORT_KEYS)).hexdigest()


def request_id_for(event: AnalysisEvent, solution_id: int) -> str:
    """Deterministic: a redelivered analysis event yields the same id, and the execution stage
    claims each id once."""
    return hashlib.sha256(f"{event.hash_signature}:{event.trigger_event_id}:{solution_id}".encode()).hexdigest()


def placeholder_context(event: AnalysisEvent) -> dict[str, str]:
    """Placeholder values from the event's own structured fields, named as the playbooks name them.

    ``{deployment}`` (and ``{statefulset}``, ``{workload}``/``{workload_kind}``) is the workload
    the event came from: ``kubernetes.deployment.name``, else its pod name resolved to the owner
    the way Kubernetes names pods (:func:`elk_resolver.actions.targets.workload_of`); never a value from
    another event of the same error. ``service.name`` is the application that logged the error;
    ``{service}`` in a playbook is the *target* named by the message (Connection refused), so
    the former is ``source_service``.
    """
    ctx = event.context
    values = {
        "namespace": ctx.namespace,
        "pod": ctx.pod,
        "container": ctx.container,
        "index": ctx.index,
        "source_service": ctx.service,
        "host": ctx.host,
    }
    workload = _workload(event)
    if workload is not None:
        values["workload"] = workload.name
        values["workload_kind"] = workload.kind
        if workload.kind in ("deployment", "statefulset", "daemonset"):
            values[workload.kind] = workload.name
    return {k: v for k, v in values.items() if isinstance(v, str) and v}


def _workload(event: AnalysisEvent) -> Workload | None:
    return workload_of({"deployment": event.context.deployment, "pod": event.context.pod})


async def is_history(pool: asyncpg.Pool | asyncpg.Connection, event: AnalysisEvent) -> bool:
    """The history mark: the one place the analysis stage reads it. History when the event says
    so (ingest sets ``replay`` for backfilled and replayed events the operator did not ask to
    act on), or when the database does: the trigger occurrence is stored with a history mark
    (``error_occurrences.history``) and no actionable occurrence of the error is as recent
    (``error_logs.last_actionable_at``), whatever the analysis message claims. Stored with the
    request as ``planned_requests.history``; the execute stage never runs such a request."""
    if event.replay:
        return True
    return bool(
        await pool.fetchval(
            queries().analyze_history_mark, event.trigger_event_id, _naive(event.event_time), event.hash_signature
        )
    )


def _signs(event: AnalysisEvent) -> dict[str, str]:
    """What an incident's objects may share: namespace, node/host, the dependency host named
    in the message (``db.payments.svc:5432``)."""
    signs = {"namespace": event.context.namespace, "host": event.context.host,
             "dependency": dependency_of(event.error_message)}  # fmt: skip
    return {k: v for k, v in signs.items() if v}


def _bind(
    commands: list[dict[str, Any]],
    event: AnalysisEvent,
    allowed_names: set[str],
) -> tuple[Target | None, str, list[str]]:
    """The one object ``commands`` touch, checked against the event: ``(target, action, problems)``.

    Every command must name the same single object; a Kubernetes object must be in the event's
    own namespace and be the event's own workload, or a name the playbook extracted from this
    event's message (``allowed_names``, already confined to the event's namespace)."""
    problems: list[str] = []
    found = [target_of_command(c) for c in commands]
    for index, (target, _, problem) in enumerate(found):
        if target is None:
            problems.append(f"target: command {index + 1} {problem}")
    targets = {t.key: t for t, _, _ in found if t is not None}
    if len(targets) > 1:
        problems.append(f"target: the commands touch {len(targets)} objects ({', '.join(sorted(targets))}); an action names one")
    if not found or found[0][0] is None:
        return None, found[0][1] if found else "", problems
    target, action = found[0][0], found[0][1]
    ctx = event.context
    if target.type == "kubectl":
        if target.namespace != ctx.namespace:
            problems.append(
                f"target: {target.label()} is outside the event's namespace ({ctx.namespace or 'none'})"
            )
        elif target.name not in allowed_names:
            workload = _workload(event)
            own = f"{workload.kind}/{workload.name}" if workload else "no workload"
            problems.append(f"target: {target.label()} is not the event's own object ({own} -n {ctx.namespace})")
    elif target.type == "elasticsearch" and target.kind == "index" and target.name not in allowed_names:
        problems.append(f"target: index {target.name} is not named by the event")
    return target, action, problems


def _as_utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _fill_command(command: Mapping[str, Any], values: Mapping[str, str]) -> tuple[dict[str, Any], list[str]]:
    """Fill ``{name}`` placeholders left in a stored command; return it and the problems."""
    problems: list[str] = []

    def fill(obj: Any) -> Any:
        if isinstance(obj, str):

            def one(m: Any) -> str:
                name = m.group(1)
                value = values.get(name)
                if value is None:
                    problems.append(f"no value for placeholder {{{name}}}")
                    return m.group(0)
                why = validate_value(name, value)
                if why:
                    problems.append(f"value for {{{name}}} refused ({why})")
                    return m.group(0)
                return value

            return PLACEHOLDER.sub(one, obj)
        if isinstance(obj, Mapping):
            return {k: fill(v) for k, v in obj.items()}
        if isinstance(obj, list):
            return [fill(v) for v in obj]
        return obj

    filled = {k: (fill(v) if k != "description" else v) for k, v in command.items()}
    if "description" in command and isinstance(command["description"], str):
        filled["description"] = PLACEHOLDER.sub(lambda m: values.get(m.group(1), m.group(0)), command["description"])
    return filled, problems


def _claimed_safe(row: Mapping[str, Any], index: int, command: Mapping[str, Any], catalogue: Catalogue) -> bool:
    """The source's claim that a command is safe.

    For a playbook solution the claim is the playbook's (the file may have been edited, and the
    stored flag also folded in the policy of the day it was stored, which may have changed
    since). For LLM and manual solutions it is the stored flag: an LLM command stored unsafe
    stays unsafe.
    """
    if row["source"] == "playbook" and row["playbook_name"]:
        playbook = catalogue.get(row["playbook_name"])
        if playbook is not None and len(playbook.commands) == len(row["solution_commands"]):
            template = playbook.commands[index]
            if template.type == command.get("type"):
                return template.safe
    return bool(command.get("safe"))


def _candidate(row: Mapping[str, Any], settings: Settings) -> Candidate:
    return Candidate.from_rate(
        row["id"],
        row["success_rate"] or 0,
        row["execution_count"] or 0,
        verified_successes=row["verified_success_count"],
        verified_runs=row["verified_run_count"],
        tripped=row["tripped_at"] is not None,
        trusted=_trusted(row, settings)[0],
        created_at=row["created_at"],
        uplift_low=_measured_uplift(row, settings),
    )


def _measured_uplift(row: Mapping[str, Any], settings: Settings) -> float | None:
    """The lower bound of the solution's measured uplift once both sides have enough cases
    (issue 25); until then None, and today's ranking decides."""
    enough = min(row.get("effect_acted_cases") or 0, row.get("effect_left_cases") or 0) >= settings.effect_min_cases
    return row.get("effect_uplift_low") if enough else None


def _trusted(row: Mapping[str, Any], settings: Settings) -> tuple[bool, str]:
    if row["source"] != "llm":
        return True, f"{row['source']} solution"
    approved = int(row["approved_success_count"] or 0)
    need = settings.llm_trust_after_successes
    if approved >= need:
        return True, f"LLM solution trusted after {approved} approved successes"
    return False, f"untrusted: LLM solution has {approved}/{need} approved successes"


def _runnable(row: Mapping[str, Any], policy: ExecutionPolicy) -> bool:
    commands = row["solution_commands"] or []
    return bool(commands) and all(evaluate(c, policy).allowed for c in commands)


# --- database steps --------------------------------------------------------------------------


async def _load(pool: asyncpg.Pool, error_hash: str) -> list[asyncpg.Record]:
    async with pool.acquire() as conn:
        return await conn.fetch(queries().analyze_solutions_for_hash, error_hash)


async def _store(
    pool: asyncpg.Pool,
    error_hash: str,
    *,
    solution_type: str,
    description: str,
    commands: list[dict[str, Any]],
    source: str,
    playbook_name: str | None = None,
    ai_analysis: str | None = None,
    ai_model: str | None = None,
    ai_confidence: Decimal | None = None,
) -> tuple[int, bool]:
    """Insert a solution unless the same content is stored for the hash; ``(id, created)``."""
    digest = content_hash(solution_type, commands)
    q = queries()
    async with pool.acquire() as conn:
        new_id = await conn.fetchval(
            q.analyze_insert_solution,
            error_hash,
            solution_type[:50],
            description,
            commands,
            ai_analysis,
            ai_model,
            ai_confidence,
            source,
            playbook_name,
            digest,
        )
        if new_id is not None:
            return new_id, True
        existing = await conn.fetchval(q.analyze_solution_by_content, error_hash, digest)
    if existing is None:  # pragma: no cover - the conflicting row cannot vanish (no deletes)
        raise RuntimeError(f"solution {digest[:12]} for {error_hash[:12]} conflicted but is not there")
    return existing, False


def _who() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


async def _ask_llm(
    event: AnalysisEvent,
    pool: asyncpg.Pool,
    llm: LLMClient,
    settings: Settings,
    policy: ExecutionPolicy,
) -> tuple[str, int | None, bool]:
    """The LLM step: ``(outcome, solution id or None, created)``."""
    q = queries()
    # An answer this process already got (e.g. before a database error made the stage retry
    # the event) is stored without a new call and without a new claim.
    hit = llm.cache.get(event.hash_signature)
    if isinstance(hit, LLMSolution):
        sid, created = await _store_llm(pool, event.hash_signature, hit, policy)
        return "cached", sid, created
    async with pool.acquire() as conn:
        claimed = await conn.fetchval(q.analyze_claim_llm, event.hash_signature, settings.llm_cache_ttl_s, _who())
    if claimed is None:
        return "claimed_elsewhere", None, False

    pattern = event.pattern
    request = AnalysisRequest(
        error_hash=event.hash_signature,
        error_message=event.error_message,
        error_type=event.error_type,
        severity=event.severity,
        source_system=event.source_system,
        kubernetes=placeholder_context(event),
        pattern_name=pattern.name if pattern else None,
        error_category=pattern.category if pattern else None,
    )
    try:
        answer = await llm.analyse(request)
    except LLMFallback as exc:
        async with pool.acquire() as conn:
            if exc.cacheable:
                outcome = "invalid" if exc.reason == "invalid_output" else "failed"
                await conn.execute(q.analyze_finish_llm, event.hash_signature, outcome, llm.model[:100], str(exc)[:2000], None)
            else:
                # Nothing was called (rate limit, disabled): the hash may be asked again soon.
                await conn.execute(q.analyze_release_llm, event.hash_signature)
        log.info("llm gave no solution for %s: %s", event.hash_signature[:12], exc)
        return exc.reason, None, False
    sid, created = await _store_llm(pool, event.hash_signature, answer, policy)
    async with pool.acquire() as conn:
        await conn.execute(q.analyze_finish_llm, event.hash_signature, "solution", answer.ai_model, None, sid)
    return "solution", sid, created


async def _store_llm(
    pool: asyncpg.Pool, error_hash: str, answer: LLMSolution, policy: ExecutionPolicy
) -> tuple[int, bool]:
    # The client already replaced the model's claim with the policy's verdict; do it again
    # here so a client built without a policy cannot store a "safe" command.
    commands = [{**c, "safe": bool(c.get("safe")) and safe_flag(c, policy)} for c in answer.commands]
    return await _store(
        pool,
        error_hash,
        solution_type=answer.solution_type,
        description=answer.description,
        commands=commands,
        source="llm",
        ai_analysis=answer.ai_analysis,
        ai_model=answer.ai_model,
        ai_confidence=answer.ai_confidence,
    )


# --- the record is a pointer -------------------------------------------------------------------


async def from_database(pool: asyncpg.Pool, events: Sequence[AnalysisEvent]) -> list[AnalysisEvent | str]:
    """Each analysis record as the database holds it, or why it is refused (issue 21).

    A record on the analysis topic points at what ingest stored: its trigger occurrence
    (``trigger_event_id``, ``event_time``) in ``analysis_triggers``, with the error it belongs
    to. Everything the stage acts on is loaded from there: the error row (its id must be the
    record's ``error_log_id``), the message and object of the event, the error's stored
    pattern as it is now (``auto_resolve`` included). A record whose trigger ingest never
    stored, or whose ids, message, object, source or pattern id differ from the database, is
    refused. Only the batch counters (``occurrences_in_batch``, ``new_occurrences``,
    ``first_seen``) and a ``replay`` mark (which can only make the stage more careful) are
    taken from the record."""
    if not events:
        return []
    rows = await pool.fetch(
        queries().analyze_load_triggers, [e.trigger_event_id for e in events], [_naive(e.event_time) for e in events]
    )
    by_n = {r["n"]: r for r in rows}
    out: list[AnalysisEvent | str] = []
    for n, event in enumerate(events, 1):
        row = by_n.get(n)
        problem = _disagreement(event, row)
        if problem:
            out.append(problem)
            continue
        pattern = None
        if row["pattern_id"] is not None:
            pattern = PatternRef(id=row["pattern_id"], name=row["pattern_name"], category=row["error_category"],
                                 priority=row["priority"], auto_resolve=row["auto_resolve"])  # fmt: skip
        out.append(event.model_copy(update={
            "error_log_id": row["error_log_id"], "hash_signature": row["hash_signature"], "error_type": row["error_type"],
            "error_message": row["message"], "fingerprint_template": row["fingerprint_template"],
            "severity": row["severity"] or event.severity, "source_system": row["source_system"], "pattern": pattern,
            "context": ErrorContext.model_validate(row["context"]), "history": row["history"],
            "occurrences_in_batch": max(event.occurrences_in_batch, 0), "new_occurrences": max(event.new_occurrences, 0),
        }))  # fmt: skip
    return out


def _disagreement(event: AnalysisEvent, row: Mapping[str, Any] | None) -> str | None:
    if row is None:
        return (
            f"ingest stored no analysis event with trigger {event.trigger_event_id[:64]!r} at"
            f" {_naive(event.event_time):%Y-%m-%d %H:%M:%S.%f}"
        )
    if row["hash_signature"] != event.hash_signature:
        return f"the record names error {event.hash_signature[:16]}, its trigger belongs to {row['hash_signature'][:16]}"
    if row["error_log_id"] != event.error_log_id:
        return f"the record names error_log_id {event.error_log_id}, the error's row is {row['error_log_id']}"
    if row["message"] != event.error_message:
        return "the record's message differs from the event ingest stored"
    stored = ErrorContext.model_validate(row["context"])
    if stored != event.context:
        differs = sorted(k for k in ErrorContext.model_fields if getattr(stored, k) != getattr(event.context, k))
        return f"the record's context differs from the event ingest stored ({', '.join(differs)})"
    if row["source_system"] != event.source_system:
        return "the record's source differs from the event ingest stored"
    claimed = event.pattern.id if event.pattern is not None else None
    if claimed != row["pattern_id"]:
        return f"the record names pattern {claimed}, the error's stored pattern is {row['pattern_id']}"
    return None


async def refuse_record(pool: asyncpg.Pool | asyncpg.Connection, where: str, hash_signature: str, value: bytes | None,
                        problem: str, now: datetime | None = None) -> None:  # fmt: skip
    """Log a refused analysis record in ``decision_log`` ('refused'; nothing is stored or
    claimed): ``where`` says which record (topic, partition, offset), ``value`` is its body
    (kept masked in the line's details)."""
    text = mask_text((value or b"").decode("utf-8", "replace"))[:4000]
    try:
        body: Any = orjson.loads(text)
    except orjson.JSONDecodeError:
        body = text
    await pool.execute(
        queries().insert_decision, f"analysis-record:{where}"[:200], hash_signature[:64], None, None, "refused",
        f"refused: an analysis record is a pointer at what ingest stored; {problem}", {"record": body, "at": where},
        None, _naive(now or datetime.now(UTC)), None,
    )  # fmt: skip
    log.warning("analysis record %s refused: %s", where, problem)


# --- the handler -------------------------------------------------------------------------------


async def analyze(
    event: AnalysisEvent,
    *,
    pool: asyncpg.Pool,
    catalogue: Catalogue,
    policy: ExecutionPolicy,
    settings: Settings,
    llm: LLMClient | None = None,
    now: datetime | None = None,
    repeats: Repeats | None = None,
    known: Known | None = None,
) -> Analysis:
    """Solutions for ``event``'s hash, the chosen one, and the request to publish (see module
    doc). A repeat of an error on an object whose request is still open is counted on that
    request instead (``Analysis.folded_into``; see :func:`_fold_repeats`). ``repeats`` says which
    analysis records the call stands for (default: this event alone); ``known`` shares what a
    batch's calls read once. The two halves, :func:`draft` and :func:`settle`, let the stream
    group a batch's events by the request they would make before settling one per group."""
    drafted = await draft(
        event, pool=pool, catalogue=catalogue, policy=policy, settings=settings, llm=llm, now=now, known=known
    )
    if isinstance(drafted, Analysis):
        return drafted
    return await settle(drafted, pool=pool, settings=settings, repeats=repeats)


@dataclass(slots=True)
class Draft:
    """An analysis up to its request: what :func:`settle` folds or stores. ``key`` is the
    request's coalesce key (the error, the bound object, the history mark)."""

    event: AnalysisEvent
    result: Analysis
    row: Mapping[str, Any]
    choice_reason: str
    commands: list[CommandSpec]
    reasons: list[str]
    trust_text: str
    target: Target | None
    action: str
    now: datetime
    key: str


async def draft(
    event: AnalysisEvent,
    *,
    pool: asyncpg.Pool,
    catalogue: Catalogue,
    policy: ExecutionPolicy,
    settings: Settings,
    llm: LLMClient | None = None,
    now: datetime | None = None,
    known: Known | None = None,
) -> Analysis | Draft:
    """Steps 1-5 of the module doc without storing the request: an :class:`Analysis` when
    there is nothing to request, else the :class:`Draft` of the request."""
    now = _as_utc(now or datetime.now(UTC))
    values = placeholder_context(event)
    result = Analysis(request=None)
    if known is None:
        known = Known()
    await known.load(pool, [event.hash_signature])

    rows = known.solutions[event.hash_signature]
    stored = {r["content_hash"] for r in rows}
    # off means off: a playbook switched off (playbooks disable) is neither stored nor chosen
    off = known.off or set()

    # Playbooks: every fitting one becomes (or already is) a candidate.
    pattern = event.pattern
    fitting = catalogue.find(pattern.name if pattern else None, pattern.category if pattern else event.error_type, event.error_message)
    fitting = [p for p in fitting if p.name not in off]
    touched = False
    names_dependency = dependency_of(event.error_message) is not None
    for playbook in fitting:
        try:
            playbook.render(values, message=event.error_message, policy=policy)  # fits this event?
        except RenderError as exc:
            result.skipped_playbooks[playbook.name] = str(exc)
            if not names_dependency:
                continue
            # the playbook is about this error, but its object is a dependency this event may
            # not name: its template is stored all the same, and the request goes to a person
            # about the dependency (_dependency_draft)
        # The solution is the action with its parameters (the template), not this event's
        # render: one row serves every object of the error and pools its success rate over them.
        commands = [c.model_dump(exclude_none=True) for c in playbook.commands]
        if content_hash(playbook.solution_type, commands) in stored:
            continue
        touched = True
        description = playbook.description
        if playbook.manual_steps:
            description += "\nManual steps:\n" + "\n".join(f"- {step}" for step in playbook.manual_steps)
        sid, created = await _store(
            pool,
            event.hash_signature,
            solution_type=playbook.solution_type,
            description=description,
            commands=commands,
            source="playbook",
            playbook_name=playbook.name,
        )
        if created:
            result.created.append(sid)
    if touched:
        rows = known.solutions[event.hash_signature] = await _load(pool, event.hash_signature)
    rows = [r for r in rows if r["playbook_name"] not in off or r["source"] != "playbook"]

    usable = [r for r in rows if r["tripped_at"] is None]
    fitted = any(name not in result.skipped_playbooks for name in (p.name for p in fitting))
    if llm is not None and llm.enabled and not usable and not fitted:
        outcome, sid, created = await _ask_llm(event, pool, llm, settings, policy)
        result.llm = outcome
        if created and sid is not None:
            result.created.append(sid)
        if sid is not None:
            rows = known.solutions[event.hash_signature] = await _load(pool, event.hash_signature)

    if not rows:
        reasons = "; ".join(f"{k}: {v}" for k, v in result.skipped_playbooks.items())
        result.note = "no solution: no playbook fits" + (f" ({reasons})" if reasons else "")
        if result.llm:
            result.note += f"; llm: {result.llm}"
        log.info("%s for %s", result.note, event.hash_signature[:12])
        return result

    # Rank. Solutions whose commands the current policy refuses only compete when nothing else
    # can run: a proven fix the operator has since put out of bounds should not win.
    by_id = {r["id"]: r for r in rows}
    runnable = [r for r in rows if known.is_runnable(r, policy)]
    pool_rows = runnable or rows
    choice = choose([_candidate(r, settings) for r in pool_rows])
    assert choice is not None
    choice_reason = choice.reason
    if runnable and len(runnable) < len(rows):
        choice_reason += f" ({len(rows) - len(runnable)} candidate(s) outside the policy not ranked)"
    row = by_id[choice.candidate.id]
    # A bad rollout: the crash-looping pods belong to a ReplicaSet the deployment started
    # recently, after an older one: rolling back is the fix, restarting brings the same pods back.
    rollout = None
    if row["solution_type"] == "restart" and settings.rollout_window_s:
        rollback = next((r for r in rows if r["solution_type"] == "rollback" and r["tripped_at"] is None), None)
        if rollback is not None:
            rollout = await known.rollout(pool, event, settings, now)
            if rollout:
                row = rollback
                choice_reason = f"bad rollout: {rollout}: the rollback is preferred over the restart"
    result.solution_id = row["id"]

    # Bind to the event's own object, fill, re-check, decide.
    reasons: list[str] = [f"bad rollout: {rollout}: rollback preferred over restart"] if rollout else []
    commands: list[CommandSpec] = []
    stored_commands = list(row["solution_commands"] or [])
    row_values = values
    source_playbook = catalogue.get(row["playbook_name"]) if row["source"] == "playbook" and row["playbook_name"] else None
    if source_playbook is not None:
        # defaults and the playbook's declared extractions (confined to the event's namespace)
        try:
            row_values = source_playbook.values_for(values, event.error_message)
        except RenderError as exc:
            dependency = dependency_of(event.error_message)
            if dependency is None:
                result.note = f"no request: {exc}"
                log.info("%s (%s)", result.note, event.hash_signature[:12])
                return result
            # the message names its dependency where this event may not act: a person decides
            return _dependency_draft(event, result, row, choice_reason, dependency, str(exc), settings, now)
    allowed_names = {v for k, v in row_values.items() if values.get(k) != v}
    if "workload" in values:
        allowed_names.add(values["workload"])
    if event.context.index:
        allowed_names.add(event.context.index)
    for index, stored_command in enumerate(stored_commands):
        filled, problems = _fill_command(stored_command, row_values)
        for problem in problems:
            reasons.append(f"placeholder: command {index + 1}: {problem}")
        verdict = evaluate(filled, policy)
        claimed = _claimed_safe(row, index, stored_command, catalogue)
        safe_now = verdict.allowed and claimed
        if not verdict.allowed:
            reasons.append(f"unsafe: command {index + 1} outside the policy: {verdict.reason}")
        elif not claimed:
            reasons.append(f"unsafe: command {index + 1} is not marked safe by its {row['source']}")
        filled["safe"] = safe_now
        commands.append(CommandSpec.model_validate(filled))
    if not commands:
        reasons.append("no commands: the solution is manual steps only")
    target, action, target_problems = _bind([c.model_dump() for c in commands], event, allowed_names) if commands else (None, "", [])
    reasons += target_problems
    dependency = dependency_of(event.error_message)
    if target is None and dependency is not None and row["solution_type"] != "rollback":
        # nothing this event may name: the dependency its message names is what is down
        return _dependency_draft(event, result, row, choice_reason, dependency, "; ".join(reasons), settings, now)

    event_time = _as_utc(event.event_time)
    age = (now - event_time).total_seconds()
    if event.replay:
        reasons.insert(0, "replay: replayed events are never remediated automatically")
    if age > settings.stale_after_s:
        reasons.insert(0, f"stale: the event is {age:.0f}s old (stale_after_s={settings.stale_after_s:.0f})")
    if pattern is None:
        reasons.append("no pattern: no error pattern matched, so nothing allows auto_resolve")
    elif not pattern.auto_resolve:
        reasons.append(f"pattern {pattern.name!r} has auto_resolve false")
    trusted, trust_text = _trusted(row, settings)
    if not trusted:
        reasons.append(trust_text)
    if row["tripped_at"] is not None:
        reasons.append(f"tripped: circuit breaker open since {row['tripped_at']:%Y-%m-%d %H:%M:%S}")

    key = coalesce_key(event.hash_signature, _fold_object(target, event, row["id"]), event.replay)
    return Draft(event, result, row, choice_reason, commands, reasons, trust_text, target, action, now, key)


def _dependency_draft(
    event: AnalysisEvent, result: Analysis, row: Mapping[str, Any], choice_reason: str, dependency: str, why: str,
    settings: Settings, now: datetime,
) -> Draft:
    """A request about the dependency an event's message names (``db.payments.svc:5432``,
    ``pg-main.internal:5432``) when no object this event may act on can be bound: bound to
    ``dependency:HOST:PORT``, no commands, for a person; every service naming it folds into it."""
    target = Target("dependency", "host", dependency)
    reasons = [f"dependency: {dependency} is not an object this event may act on ({why[:300]}): a person decides"]
    _, trust_text = _trusted(row, settings)
    key = coalesce_key(event.hash_signature, target.key, event.replay)
    return Draft(event, result, row, choice_reason, [], reasons, trust_text, target, "dependency", now, key)


class RecordRef(Protocol):
    """Where an analysis record came from (aiokafka's ``ConsumerRecord`` fits)."""

    partition: int
    offset: int


def group_drafts(drafts: Sequence[tuple[Draft, RecordRef]]) -> list[tuple[Draft, Repeats, RecordRef]]:
    """A batch's drafts grouped by the request they would make (their coalesce key: the error,
    the bound object, the history mark), in the order each key first appears: the newest
    draft of a group stands for it, and every record of the group is counted on its request
    (``Repeats``, the newest first). Pure: the property tests call it directly."""
    groups: dict[str, list[tuple[Draft, RecordRef]]] = {}
    for d, record in drafts:
        groups.setdefault(d.key, []).append((d, record))
    out = []
    for members in groups.values():
        newest = max(range(len(members)), key=lambda i: (members[i][0].event.event_time, members[i][1].offset))
        order = [newest] + [i for i in range(len(members)) if i != newest]
        d, record = members[newest]
        repeats = Repeats(
            record.partition,
            [members[i][1].offset for i in order],
            [members[i][0].event.new_occurrences for i in order],
        )
        out.append((d, repeats, record))
    return out


async def settle(
    d: Draft, *, pool: asyncpg.Pool, settings: Settings, repeats: Repeats | None = None
) -> Analysis:
    """Count ``d``'s event (and the ``repeats`` it stands for) on the open request of its key,
    or store its request (and open the key's window)."""
    [result] = await settle_many([(d, repeats or Repeats.single(d.event))], pool=pool, settings=settings)
    return result


async def settle_many(
    items: Sequence[tuple[Draft, Repeats]], *, pool: asyncpg.Pool, settings: Settings, now: datetime | None = None
) -> list[Analysis]:
    """:func:`settle` for drafts with distinct keys, folding them in one statement; the
    requests that must be stored are stored one by one (the first of each key's window)."""
    folded = await _fold_repeats(pool, items, settings=settings, now=now or (items[0][0].now if items else datetime.now(UTC)))
    slots = asyncio.Semaphore(_STORE_CONCURRENCY)

    async def one(d: Draft, repeats: Repeats) -> Analysis:
        result = d.result
        into = folded.get(d.key)
        if into is not None:
            result.folded_into = into
            result.note = f"repeat counted on open request {into[:16]}"
        else:
            async with slots:
                result.request = await _store_draft(pool, d, repeats)
        return result

    return list(await asyncio.gather(*(one(d, repeats) for d, repeats in items)))


# requests of distinct keys stored at once by settle_many (each its own statements)
_STORE_CONCURRENCY = 4


async def _store_draft(pool: asyncpg.Pool, d: Draft, repeats: Repeats) -> PlannedRequest:
    async with pool.acquire() as conn:  # one connection for the request's statements
        return await _store_draft_on(conn, d, repeats)


async def _store_draft_on(conn: asyncpg.Connection, d: Draft, repeats: Repeats) -> PlannedRequest:
    event, row, now = d.event, d.row, d.now
    await conn.execute(queries().analyze_set_choice_reason, row["id"], d.choice_reason)
    pattern = event.pattern
    if d.reasons:
        decision, reason = "approval", "; ".join(d.reasons)
    else:
        decision = "auto"
        reason = (
            f"pattern {pattern.name!r} allows auto_resolve; all {len(d.commands)} command(s) inside the policy;"
            f" {d.trust_text}"
        )
    planned = PlannedRequest(
        request_id=request_id_for(event, row["id"]),
        error_log_id=event.error_log_id,
        hash_signature=event.hash_signature,
        solution_id=row["id"],
        solution_source=row["source"],
        playbook_name=row["playbook_name"],
        commands=d.commands,
        decision=decision,
        reason=reason,
        choice_reason=d.choice_reason,
        pattern=pattern,
        target=d.target.as_dict() if d.target is not None else None,
        action=d.action or (row["solution_type"] or ""),
        signs=_signs(event),
        subject=subject_of(_context_fields(event)),
        event_time=_as_utc(event.event_time),
        replay=await is_history(conn, event),
        requested_at=now,
    )
    stored = await store_request(conn, planned)
    await _open_window(conn, planned, d.key, repeats, now=now)
    return stored


async def _fold_repeats(
    pool: asyncpg.Pool, items: Sequence[tuple[Draft, Repeats]], *, settings: Settings, now: datetime
) -> dict[str, str]:
    """Count each draft's event and repeats on the open request of its key; return key ->
    request id of those folded. The others need a request stored (no open request, another
    history mark, or the draft's own request: a redelivery, stored and published again).

    Open means undecided and requested within ``repeat_undecided_s`` (a request whose pointer
    never got decided does not swallow repeats for long), or decided and inside the window the
    execute stage set (``open_until``: until a repeat would be decided differently). A repeat
    folded into a decided request would have got the same decision: the cooldown or a pending
    approval on its object, the same policy refusal, the same history verdict. Nothing about
    safety is decided here: a request that is stored is still judged in full by the execute
    stage."""
    if not items:
        return {}
    naive_now = _naive(now)
    keys, own, history, parts, newest = [], [], [], [], []
    rec_keys: list[str] = []
    rec_offsets: list[int | None] = []
    rec_occ: list[int] = []
    for d, repeats in items:
        keys.append(d.key)
        own.append(request_id_for(d.event, d.row["id"]))
        history.append(d.event.replay)
        parts.append(repeats.partition)
        newest.append(_naive(d.event.event_time))
        rec_keys += [d.key] * len(repeats.offsets)
        rec_offsets += repeats.offsets
        rec_occ += repeats.occurrences
    rows = await pool.fetch(
        queries().analyze_fold_repeats, keys, own, history, parts, newest, rec_keys, rec_offsets, rec_occ,
        naive_now, naive_now - timedelta(seconds=settings.repeat_undecided_s),
    )  # fmt: skip
    return {r["key"]: r["request_id"] for r in rows}


async def _open_window(pool: asyncpg.Pool | asyncpg.Connection, planned: PlannedRequest, key: str, repeats: Repeats, *, now: datetime) -> None:
    """A stored request opens its coalesce key's window, with the repeats folded into it by the
    caller (a batch's records of the same error and object)."""
    offsets = [o for o in repeats.offsets if o is not None]
    await pool.execute(
        queries().analyze_open_request_window, planned.request_id, key, len(repeats.offsets) - 1,
        sum(repeats.occurrences[1:]), repeats.partition if offsets else None, max(offsets) if offsets else None,
        _naive(planned.event_time), _naive(now),
    )  # fmt: skip


async def store_request(pool: asyncpg.Pool | asyncpg.Connection, planned: PlannedRequest) -> PlannedRequest:
    """Store ``planned`` for the execute stage; return what is stored under its id (a claimed
    request is final: a redelivered event's analysis then returns the claimed row)."""
    q = queries()
    body = planned.model_dump(mode="json")
    inserted = await pool.fetchval(
        q.analyze_store_request, planned.request_id, planned.error_log_id, planned.hash_signature,
        planned.solution_id, planned.pattern.id if planned.pattern else None, planned.target_key,
        planned.namespace, planned.action, planned.replay, _naive(planned.event_time),
        _naive(planned.requested_at), body, planned.digest(),
    )  # fmt: skip
    if inserted is not None:
        return planned
    stored = await pool.fetchval(q.analyze_stored_request, planned.request_id)
    return PlannedRequest.model_validate(stored)


def _naive(value: datetime) -> datetime:
    return _as_utc(value).replace(tzinfo=None)
