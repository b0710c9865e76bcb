"""The event contracts between the stages. They are the AsyncAPI document's schemas.

Every event is keyed by ``hash_signature`` on its topic, so all events of one distinct
error land on one partition and are handled in order by one consumer of each group.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any, Literal

import orjson
from pydantic import BaseModel, ConfigDict, Field


class Contract(BaseModel):
    model_config = ConfigDict(extra="ignore")


class PatternRef(Contract):
    id: int = Field(description="error_patterns.id")
    name: str = Field(description="error_patterns.pattern_name")
    category: str = Field(description="error_patterns.error_category")
    priority: int = Field(description="1 = highest")
    auto_resolve: bool = Field(description="the pattern allows automatic remediation")


class ErrorContext(Contract):
    """What later stages need to fill playbook placeholders and to scope commands."""

    namespace: str | None = Field(None, description="kubernetes.namespace")
    pod: str | None = Field(None, description="kubernetes.pod.name")
    container: str | None = Field(None, description="kubernetes.container.name")
    deployment: str | None = Field(None, description="kubernetes.deployment.name")
    service: str | None = Field(None, description="service.name")
    host: str | None = Field(None, description="host.name or legacy host")
    index: str | None = Field(None, description="an Elasticsearch index named by the event")
    path: str | None = Field(None, description="log file path")


class AnalysisEvent(Contract):
    """Ingest -> analyze, on ``elk.errors.analysis``: one per distinct error and object per
    batch. A pointer: the analysis stage loads the event it names from what ingest stored
    (``analysis_triggers``, the error row, its stored pattern) and refuses a record that differs
    (``handlers.analyze.from_database``)."""

    error_log_id: int = Field(description="error_logs.id of the (first) row of this error")
    hash_signature: str = Field(description="SHA-256 hex fingerprint, the error's identity")
    error_type: str = Field(description="matched pattern's category, else ECS error.type, else 'unclassified'")
    error_message: str = Field(description="the error message, secrets masked, no stack trace")
    fingerprint_template: str | None = Field(None, description="the template that was hashed")
    severity: str = Field(description="ERROR, CRITICAL or FATAL (lines below ERROR are stored, never published)")
    source_system: str = Field(description="service, namespace/deployment or host (50 chars max)")
    pattern: PatternRef | None = Field(None, description="the error_patterns row that matched, if any")
    context: ErrorContext = Field(default_factory=ErrorContext)
    occurrences_in_batch: int = Field(description="events of this error in the consumed batch")
    new_occurrences: int = Field(description="of those, never counted before (0 on a pure replay)")
    first_seen: bool = Field(description="this batch created the error_logs row")
    event_time: datetime = Field(
        description="@timestamp of the trigger event: the newest live error-level event of this error in the "
        "batch, else its first error-level event"
    )
    trigger_event_id: str = Field(
        description="identity of the trigger event; with event_time it keys its error_occurrences row"
    )
    replay: bool = Field(
        False,
        description="never remediate automatically: history (replay or backfill) the operator did not ask "
        "to act on; the same mark is in error_occurrences.history and error_logs.last_actionable_at",
    )
    history: Literal["backfill", "replay"] | None = Field(
        None, description="the trigger event re-publishes the past: from backfill-es or elk-resolver replay"
    )


class CommandSpec(Contract):
    """One command in the design document's solution_commands shape."""

    model_config = ConfigDict(extra="allow")

    type: str = Field(description="kubectl, elasticsearch, http or shell")
    command: str = Field(description="the command, placeholders filled")
    description: str = ""
    safe: bool = Field(False, description="inside the execution policy when stored")
    critical: bool = Field(False, description="a failure stops the remaining commands")


class PlannedRequest(Contract):
    """What the analysis stage stores in ``planned_requests`` for the execute stage: everything
    a run needs, bound to one object. It never travels on a topic; :meth:`pointer` does."""

    request_id: str = Field(description="idempotency key: one run at most per request id")
    error_log_id: int
    hash_signature: str
    solution_id: int
    solution_source: str = Field(description="playbook, llm or manual")
    playbook_name: str | None = Field(None, description="the playbook the solution was stored from")
    commands: list[CommandSpec] = Field(description="rendered for the bound object")
    decision: Literal["auto", "approval"] = Field(description="the analysis stage's view; the execute stage decides")
    reason: str = Field(description="why that decision")
    choice_reason: str = Field("", description="why this solution among the candidates")
    pattern: PatternRef | None = None
    target: dict[str, Any] | None = Field(None, description="the one object the commands touch (targets.Target)")
    action: str = Field("", description="the kind of action, e.g. kubectl:rollout restart:deployment")
    subject: str | None = Field(
        None, description="the object the event came from (targets.subject_of): what the request answers for when"
        " nothing could be bound"
    )
    signs: dict[str, Any] = Field(default_factory=dict, description="node, dependency host: what incidents share")
    event_time: datetime = Field(description="when the error happened (staleness is judged on it)")
    replay: bool = Field(False, description="history mark: never remediated unless the operator asked")
    requested_at: datetime

    @property
    def target_key(self) -> str | None:
        return (self.target or {}).get("key")

    @property
    def namespace(self) -> str | None:
        return (self.target or {}).get("namespace")

    @property
    def object_key(self) -> str:
        """What locks, budgets, approvals and decision lines count by: the bound object, else
        (no object could be bound, so the request can only wait for a person) the object the
        event came from, with the error and solution."""
        return self.target_key or f"unbound:{self.hash_signature}/{self.solution_id}/{self.subject or ''}"

    def digest(self) -> str:
        """SHA-256 of the canonical JSON of the whole request."""
        body = orjson.dumps(self.model_dump(mode="json"), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()

    def pointer(self) -> ExecutionRequest:
        return ExecutionRequest(
            request_id=self.request_id,
            error_log_id=self.error_log_id,
            hash_signature=self.hash_signature,
            solution_id=self.solution_id,
            digest=self.digest(),
            requested_at=self.requested_at,
        )


class ExecutionRequest(Contract):
    """Analyze (or an approval) -> execute, on ``elk.errors.execution``: a pointer at a
    ``planned_requests`` row. The execute stage loads the row and refuses (``decision_log``
    'refused') a message whose ids or digest differ from it, or that carries anything else
    (commands, a decision, flags): what runs is decided by the database, never the message."""

    model_config = ConfigDict(extra="allow")

    request_id: str = Field(description="planned_requests.request_id")
    error_log_id: int
    hash_signature: str
    solution_id: int
    digest: str = Field(description="PlannedRequest.digest() of the stored row")
    requested_at: datetime


class ExecutionResult(Contract):
    """Execute -> ``elk.errors.results``: every outcome, including the runs that did not happen."""

    request_id: str
    hash_signature: str
    solution_id: int
    error_log_id: int
    outcome: str = Field(
        description="success, failed, timeout (a run); dry_run, skipped, denied, pending_approval,"
        " duplicate (no run); resolved or recurred (verification of an earlier run)"
    )
    reason: str = ""
    execution_history_id: int | None = None
    executed_by: str | None = None
    details: dict[str, Any] = Field(default_factory=dict)
    at: datetime


class ApprovalEvent(Contract):
    """Published on ``elk.errors.approvals`` whenever an approval is created or decided."""

    approval_id: int
    request_id: str
    hash_signature: str
    solution_id: int
    status: Literal["pending", "approved", "rejected", "expired"]
    reason: str
    decided_by: str | None = None
    expires_at: datetime
    history: list[dict[str, Any]] = Field(default_factory=list, description="recent runs of the solution")
    target_key: str | None = Field(None, description="the object the request acts on")
    incident: dict[str, Any] | None = Field(
        None, description="systemic hold: {id, action, objects: [...], signs: {...}} (approval_id is the incident's id)"
    )


class DeadLetterHeaders:
    """Headers put on every record sent to ``elk.errors.dlq`` (the value is the original bytes)."""

    REASON = "x-dlq-reason"
    DETAIL = "x-dlq-detail"
    TOPIC = "x-original-topic"
    PARTITION = "x-original-partition"
    OFFSET = "x-original-offset"
    TIMESTAMP = "x-original-timestamp"
    """the original record's Kafka timestamp (ms): names it even after its topic was re-created"""
    STAGE = "x-dlq-stage"
