"""One function per event a person should hear of; the stage that causes the event calls it.

    await notify.pending_approval(conn, settings, approval_id)
    await notify.run_failed(conn, settings, execution_history_id)

Each reads what the message says from the database (never from the message that triggered it),
says nothing about an error a person muted (or snoozed, while the snooze stands),
masks secrets, and writes one row per configured channel into ``notifications`` under a key
that names the event, so calling it again (a redelivery, a retry, a second copy) sends nothing
more. With no channel configured it writes nothing. Call it inside the transaction that
records the event, or right after it: the key makes both safe. The dispatcher sends.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from elk_resolver.actions.effect import Effect
from elk_resolver.events.masking import mask_text
from elk_resolver.notify.channels import configured_channels
from elk_resolver.store.db import queries
from elk_resolver.store.error_states import silenced

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings

KINDS = ("pending_approval", "systemic_hold", "breaker_tripped", "run_failed", "run_recurred", "approval_expired")
TEXT_LIMIT = 1500


def console_base(settings: Settings) -> str:
    if settings.console_url:
        return settings.console_url.rstrip("/")
    host = "127.0.0.1" if settings.http_host in ("0.0.0.0", "") else settings.http_host  # noqa: S104
    return f"http://{host}:{settings.http_port}"


def _clip(text: str | None, limit: int = TEXT_LIMIT) -> str:
    text = mask_text(text or "")
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _commands(commands: Any) -> list[str]:
    return [_clip(str(c.get("command", "")), 300) for c in (commands or []) if isinstance(c, dict)]


def _when(value: datetime | None) -> str | None:
    return None if value is None else f"{value:%Y-%m-%d %H:%M:%S} UTC"


async def emit(
    conn: asyncpg.Connection | asyncpg.Pool,
    settings: Settings,
    key: str,
    kind: str,
    title: str,
    facts: dict[str, Any],
    link: str,
) -> int:
    """Queue one message per configured channel; returns how many rows were new."""
    channels = configured_channels(settings)
    if not channels:
        return 0
    lines = [title]
    for label, value in facts.items():
        if value in (None, "", []):
            continue
        if isinstance(value, list):
            lines.append(f"{label}:")
            lines += [f"  $ {v}" for v in value]
        else:
            lines.append(f"{label}: {value}")
    lines.append(f"decide / details: {link}")
    payload = {"kind": kind, "title": _clip(title, 200), "text": "\n".join(lines), "link": link, "facts": facts}
    status = await conn.execute(queries().notify_insert, key, kind, payload, [c.name for c in channels])
    return int(status.rsplit(" ", 1)[-1])


def _error_facts(row: Any) -> dict[str, Any]:
    return {
        "error": f"{row['error_type']}: {_clip(row['error_message'], 400)}" if row["error_type"] else None,
        "where": row["source_system"],
        "occurrences": row["occurrence_count"],
    }


def _where(row: Any) -> str:
    return f"{row['error_type'] or 'error'} on {row['source_system'] or '?'}"


async def _about_approval(conn: Any, settings: Settings, approval_id: int, kind: str, title: str, facts_of) -> int:
    row = await conn.fetchrow(queries().notify_approval, approval_id)
    if row is None or await silenced(conn, row["error_log_id"]):
        return 0
    suffix = "pending" if kind == "pending_approval" else "expired"
    return await emit(
        conn, settings, f"approval:{approval_id}:{suffix}", kind, title.format(row=row, where=_where(row)),
        {**_error_facts(row), **facts_of(row)}, f"{console_base(settings)}/approvals/{approval_id}",
    )  # fmt: skip


async def _about_run(conn: Any, settings: Settings, history_id: int, kind: str, title: str, facts_of) -> int:
    row = await conn.fetchrow(queries().notify_run, history_id)
    if row is None or await silenced(conn, row["error_log_id"]):
        return 0
    return await emit(
        conn, settings, f"run:{history_id}:{kind.removeprefix('run_')}", kind, title.format(row=row, where=_where(row)),
        {**_error_facts(row), **facts_of(row)}, f"{console_base(settings)}/errors/{row['error_log_id']}",
    )  # fmt: skip


async def pending_approval(conn: asyncpg.Connection | asyncpg.Pool, settings: Settings, approval_id: int) -> int:
    """A request waits for a person (new solution, breaker, stale event, analysis decision)."""
    return await _about_approval(
        conn, settings, approval_id, "pending_approval", f"Approval {approval_id} needed: {{where}}",
        lambda row: {"why a person must decide": _clip(row["reason"], 400), "solution": row["solution_description"],
                     "expires": _when(row["expires_at"]),
                     "would run": _commands((row["request"] or {}).get("commands")),
                     "measured effect": Effect.from_row(row).describe()},
    )  # fmt: skip


async def approval_expired(conn: asyncpg.Connection | asyncpg.Pool, settings: Settings, approval_id: int) -> int:
    """Nobody decided in time: the request was denied."""
    return await _about_approval(
        conn, settings, approval_id, "approval_expired",
        f"Approval {approval_id} expired undecided: the request was denied",
        lambda row: {"expired": _when(row["expires_at"]),
                     "would have run": _commands((row["request"] or {}).get("commands"))},
    )  # fmt: skip


async def run_failed(conn: asyncpg.Connection | asyncpg.Pool, settings: Settings, execution_history_id: int) -> int:
    """A run ended failed or timeout."""
    return await _about_run(
        conn, settings, execution_history_id, "run_failed", f"Run {execution_history_id} {{row[execution_status]}}: {{where}}",
        lambda row: {"status": row["execution_status"], "by": row["executed_by"], "solution": row["solution_description"],
                     "ran": _commands(row["solution_commands"]), "output": _clip(row["execution_output"], 800)},
    )  # fmt: skip


async def run_recurred(conn: asyncpg.Connection | asyncpg.Pool, settings: Settings, execution_history_id: int) -> int:
    """A run exited 0 but the error came back inside the verification window."""
    return await _about_run(
        conn, settings, execution_history_id, "run_recurred",
        f"Run {execution_history_id} did not fix it, the error recurred: {{where}}",
        lambda row: {"evidence": row["evidence"], "solution": row["solution_description"],
                     "ran": _commands(row["solution_commands"])},
    )  # fmt: skip


async def breaker_tripped(conn: asyncpg.Connection | asyncpg.Pool, settings: Settings, solution_id: int) -> int:
    """A solution failed (or did not hold) too often in a row: it needs a person from now on."""
    row = await conn.fetchrow(queries().notify_solution, solution_id)
    if row is None or row["tripped_at"] is None or await silenced(conn, row["error_log_id"]):
        return 0
    facts = {**_error_facts(row), "consecutive failures": row["consecutive_failures"],
             "tripped": _when(row["tripped_at"]), "solution": row["solution_description"]}  # fmt: skip
    return await emit(
        conn, settings, f"breaker:{solution_id}:{row['tripped_at']:%Y%m%dT%H%M%S%f}", "breaker_tripped",
        f"Circuit breaker open for solution {solution_id}: {row['error_type'] or 'error'} on {row['source_system'] or '?'}",
        facts, f"{console_base(settings)}/errors/{row['error_log_id']}",
    )  # fmt: skip


async def systemic_hold(conn: asyncpg.Connection | asyncpg.Pool, settings: Settings, incident_id: int) -> int:
    """Many objects needed the same kind of action at once: the execute stage held every run of it
    for one incident-wide decision (one message per incident, however many objects join it)."""
    rows = await conn.fetch(queries().notify_incident, incident_id)
    if not rows:
        return 0
    first = rows[0]
    objects = [mask_text(r["target_key"] or "?") for r in rows]
    errors = {f"{r['error_type']}: {_clip(r['error_message'], 120)}" for r in rows if r["error_type"]}
    facts = {
        "why a person must decide": _clip(first["reason"], 400),
        "objects": f"{len(objects)}: " + ", ".join(objects[:20]) + (" …" if len(objects) > 20 else ""),
        "namespaces": ", ".join(sorted({r["namespace"] for r in rows if r["namespace"]})),
        "errors": "; ".join(sorted(errors)[:5]),
        "occurrences": sum(r["occurrence_count"] or 0 for r in rows),
        "expires": _when(first["expires_at"]),
        "would run (first object)": _commands(first["commands"]),
    }
    return await emit(
        conn, settings, f"hold:{incident_id}", "systemic_hold",
        f"Systemic hold {incident_id}: {len(objects)} objects need {first['action']}; one decision for all or some",
        facts, f"{console_base(settings)}/incidents/{incident_id}",
    )  # fmt: skip
