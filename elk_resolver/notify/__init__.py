"""Notifications: one message per event a person should hear of, to the configured channels.

    await notify.pending_approval(conn, settings, approval_id)    # from the stage that caused it
    dispatcher = notify.Dispatcher(settings, pool); await dispatcher.start()   # every copy

See :mod:`elk_resolver.notify.events` (what is said, and the event keys that make it once),
:mod:`elk_resolver.notify.dispatch` (claimed in PostgreSQL, retried, rate-limited) and
:mod:`elk_resolver.notify.channels` (apprise and the signed webhook).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from elk_resolver.notify.channels import configured_channels, sign
from elk_resolver.notify.dispatch import Dispatcher
from elk_resolver.notify.events import (
    KINDS,
    approval_expired,
    breaker_tripped,
    pending_approval,
    run_failed,
    run_recurred,
    systemic_hold,
)
from elk_resolver.store.db import queries

if TYPE_CHECKING:
    from collections.abc import Iterable

    import asyncpg

    from elk_resolver.settings import Settings

__all__ = [
    "KINDS", "Dispatcher", "approval_expired", "breaker_tripped", "configured_channels", "outcomes",
    "pending_approval", "run_failed", "run_recurred", "sign", "sweep", "systemic_hold",
]  # fmt: skip


async def sweep(pool: asyncpg.Pool, settings: Settings) -> int:
    """Queue the messages of pending approvals and holds that have none: a stage that stopped
    between recording one and calling :func:`outcomes` would otherwise leave nobody told."""
    channels = configured_channels(settings)
    if not channels:
        return 0
    queued = 0
    async with pool.acquire() as conn:
        for row in await conn.fetch(queries().notify_unannounced, channels[0].name):
            if row["kind"] == "hold":
                queued += await systemic_hold(conn, settings, row["id"])
            else:
                queued += await pending_approval(conn, settings, row["id"])
    return queued


async def outcomes(pool: asyncpg.Pool, settings: Settings, results: Iterable[Any], approvals: Iterable[Any] = ()) -> int:
    """The notifications an execute stage's outcomes call for (ExecutionResult and ApprovalEvent):
    pending and expired approvals, failed and recurred runs, breakers that tripped."""
    if not settings.notify_urls and not settings.notify_webhook_url:
        return 0
    queued = 0
    async with pool.acquire() as conn:
        for event in approvals:
            # a systemic hold's event carries the incident's id as approval_id: not an approvals row
            if event.status == "expired" and not getattr(event, "incident", None):
                queued += await approval_expired(conn, settings, event.approval_id)
        for result in results:
            details = result.details or {}
            if result.outcome == "pending_approval" and details.get("incident_id"):
                queued += await systemic_hold(conn, settings, int(details["incident_id"]))
            elif result.outcome == "pending_approval" and details.get("approval_id"):
                queued += await pending_approval(conn, settings, int(details["approval_id"]))
            elif result.outcome in ("failed", "timeout") and result.execution_history_id:
                queued += await run_failed(conn, settings, result.execution_history_id)
            elif result.outcome == "recurred" and result.execution_history_id:
                queued += await run_recurred(conn, settings, result.execution_history_id)
            if details.get("breaker_tripped"):
                queued += await breaker_tripped(conn, settings, result.solution_id)
    return queued
