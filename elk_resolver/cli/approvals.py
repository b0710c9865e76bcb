"""``elk-resolver approvals list|approve ID|reject ID|incidents|approve-incident ID|reject-incident ID``,
``elk-resolver kill-switch on|off|status`` and ``elk-resolver playbooks list|disable NAME|enable NAME``.

A face over :mod:`elk_resolver.operations` (the web console is the other): this module parses
the arguments, says who the decision is recorded as (``--by``, else ``ELK_RESOLVER_OPERATOR``,
else ``$USER``) and prints readable tables. The approver allowlist applies here as in the
console. When a broker is configured, what changed is published to the results and approvals
topics; the decision is already committed then, so a broker that does not answer only costs
the events (a warning says so), never the decision.

Nothing runs in this process: an approval is recorded in the database and a pointer at the
stored request is published on the execution topic; the execute stage of the running service
carries it out once (and finds approvals whose pointer was lost on its own).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.events.contracts import ApprovalEvent, ExecutionRequest, ExecutionResult
    from elk_resolver.settings import Settings

COMMANDS = ("approvals", "kill-switch", "playbooks")


def add_commands(subparsers: argparse._SubParsersAction) -> None:
    """Register ``approvals`` and ``kill-switch`` on an existing sub-command parser."""
    approvals = subparsers.add_parser("approvals", help="list and decide pending approvals")
    actions = approvals.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="show approvals (pending by default)")
    listing.add_argument("--status", choices=["pending", "approved", "rejected", "expired", "all"], default="pending")
    listing.add_argument("--limit", type=int, default=50)
    ok = actions.add_parser("approve", help="approve a pending request; the execute stage runs it once")
    ok.add_argument("id", type=int)
    ok.add_argument("--by", help="who approves, recorded as executed_by (default: ELK_RESOLVER_OPERATOR, else $USER)")
    no = actions.add_parser("reject", help="reject a pending request")
    no.add_argument("id", type=int)
    no.add_argument("--reason", default=None)
    no.add_argument("--by", help="who rejects (default: ELK_RESOLVER_OPERATOR, else $USER)")
    incidents = actions.add_parser("incidents", help="systemic holds (pending by default): every object and shared signs")
    incidents.add_argument("--status", choices=["pending", "decided", "expired", "all"], default="pending")
    incidents.add_argument("--limit", type=int, default=20)
    ok_incident = actions.add_parser(
        "approve-incident", help="approve a held incident for every object, or only the --object ones (the rest are rejected)"
    )
    ok_incident.add_argument("id", type=int)
    ok_incident.add_argument("--object", action="append", dest="objects", metavar="TARGET_KEY",
                             help="approve only this object (repeatable), e.g. k8s:shop/deployment/checkout")
    ok_incident.add_argument("--by", help="who approves, recorded as executed_by (default: ELK_RESOLVER_OPERATOR, else $USER)")
    no_incident = actions.add_parser("reject-incident", help="reject a held incident (every object)")
    no_incident.add_argument("id", type=int)
    no_incident.add_argument("--reason", default=None)
    no_incident.add_argument("--by", help="who rejects (default: ELK_RESOLVER_OPERATOR, else $USER)")
    for p in (listing, ok, no, incidents, ok_incident, no_incident):
        p.add_argument("--no-publish", action="store_true", help="do not publish events to Kafka")

    playbooks = subparsers.add_parser(
        "playbooks", help="list every playbook and its state; switch one off (its stored solutions stop "
                          "running automatically) or on"
    )
    playbooks.add_argument("action", choices=["list", "disable", "enable", "trial", "trials"],
                           help="trial NAME --fraction F: leave F of its eligible cases alone (observe only);"
                                " trial NAME --stop; trials: every trial")
    playbooks.add_argument("name", nargs="?")
    playbooks.add_argument("--fraction", type=float, help="trial: the share of eligible cases left alone (0 < F <= 1)")
    playbooks.add_argument("--stop", action="store_true", help="trial: stop the playbook's trial")
    playbooks.add_argument("--by", help="who switches it (default: ELK_RESOLVER_OPERATOR, else $USER)")

    kill = subparsers.add_parser("kill-switch", help="show the kill switch (no argument), stop (on) or allow (off) "
                                                     "all execution")
    kill.add_argument("state", choices=["on", "off", "status"], nargs="?", default="status",
                      help="on, off, or status (the default: show it)")
    kill.add_argument("--by", help="who flips it (default: ELK_RESOLVER_OPERATOR, else $USER)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="elk-resolver")
    add_commands(parser.add_subparsers(dest="command", required=True))
    return parser


def _ts(value: datetime | None) -> str:
    return "" if value is None else f"{value:%Y-%m-%d %H:%M:%S}"


def _clip(text: str, width: int) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= width else text[: width - 1] + "…"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in headers], *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _approvals_table(rows: list[dict[str, Any]]) -> str:
    body = []
    from elk_resolver.operations.solution_view import bound_object

    for r in rows:
        request = r.get("stored_request") or r.get("request") or {}  # one source: the stored request
        commands = request.get("commands") or []
        first = commands[0]["command"] if commands else ""
        more = f" (+{len(commands) - 1})" if len(commands) > 1 else ""
        target = bound_object(request)
        body.append(
            [
                r["id"], r["status"], r["solution_id"], r["hash_signature"][:12], _ts(r["created_at"]),
                _ts(r["expires_at"]), r["decided_by"] or "", target["key"] if target else "(none bound)",
                _clip(first, 60) + more, _clip(r["reason"], 70),
            ]
        )  # fmt: skip
    headers = ["ID", "STATUS", "SOLUTION", "HASH", "CREATED (UTC)", "EXPIRES (UTC)", "BY", "OBJECT", "COMMAND", "REASON"]
    return table(headers, body)


def _results_table(results: list[ExecutionResult]) -> str:
    return table(
        ["REQUEST", "OUTCOME", "BY", "HISTORY ID", "REASON"],
        [
            [r.request_id[:16], r.outcome, r.executed_by or "", r.execution_history_id or "", _clip(r.reason, 80)]
            for r in results
        ],
    )


async def _publish(
    settings: Settings,
    results: list[ExecutionResult],
    events: list[ApprovalEvent],
    err: TextIO,
    pointers: Sequence[ExecutionRequest] = (),
) -> None:
    if not settings.kafka_bootstrap_servers or not (results or events or pointers):
        return
    from faststream.kafka import KafkaBroker

    from elk_resolver.kafka.security import broker_options
    from streams.execute import publish_outcomes

    broker = KafkaBroker(**broker_options(settings))
    try:
        await broker.start()
        await publish_outcomes(broker, settings, results, events, list(pointers))
    except Exception as exc:  # the decision is committed; the execute stage's sweep still runs it
        print(f"warning: decided, but could not publish the events to Kafka: {exc!r}", file=err)
    finally:
        await broker.stop()


async def main(
    args: argparse.Namespace | Sequence[str],
    settings: Settings,
    *,
    pool: asyncpg.Pool | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    """Run one command; return the exit status (0 ok, 1 refused, 2 usage/configuration)."""
    out, err = out or sys.stdout, err or sys.stderr
    if not isinstance(args, argparse.Namespace):
        args = build_parser().parse_args(list(args))
    own_pool = pool is None
    if pool is None:
        if not settings.database_url:
            print("error: no database configured (set ELK_RESOLVER_DATABASE_URL)", file=err)
            return 2
        from elk_resolver.store.db import create_pool

        pool = await create_pool(settings.database_url, min_size=1, max_size=2)
    try:
        return await _dispatch(args, settings, pool, out, err)
    finally:
        if own_pool:
            await pool.close()


async def _dispatch(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool, out: TextIO, err: TextIO) -> int:
    from elk_resolver.operations import approvals, controls, people

    publish = not getattr(args, "no_publish", False)

    async def publisher(
        results: list[ExecutionResult], events: list[ApprovalEvent], pointers: Sequence[ExecutionRequest] = ()
    ) -> None:
        if publish:
            await _publish(settings, results, events, err, pointers)

    if args.command == "playbooks":
        return await _playbooks(args, settings, pool, out, err)

    if args.command == "kill-switch":
        try:
            if args.state == "status":
                row = await controls.kill_switch(pool, settings)
            else:
                person, source = people.cli_person(settings, args.by)
                if person is None:
                    print("error: say who you are with --by NAME or ELK_RESOLVER_OPERATOR", file=err)
                    return 2
                print(f"recorded as {person.name} (from {source})", file=err)
                row = await controls.set_kill_switch(pool, settings, args.state == "on", person)
        except people.Refused as exc:
            print(f"error: {exc}", file=err)
            return 1
        state = "ON (all execution stopped)" if row["kill_switch"] else "off"
        if settings.kill_switch:
            state += "; the ELK_RESOLVER_KILL_SWITCH setting is also on"
        print(f"kill switch: {state}  (last set by {row['updated_by']} at {_ts(row['updated_at'])} UTC)", file=out)
        return 0

    if args.action == "incidents":
        status = None if args.status == "all" else args.status
        rows = await approvals.list_incidents(pool, status=status, limit=args.limit)
        if not rows:
            print(f"no {'' if status is None else status + ' '}incidents", file=out)
        for r in rows:
            print(_incident_text(r), file=out)
        return 0

    if args.action == "list":
        status = None if args.status == "all" else args.status
        rows, _ = await approvals.list_approvals(pool, status=status, limit=args.limit)
        if not rows:
            print(f"no {'' if status is None else status + ' '}approvals", file=out)
        else:
            print(_approvals_table(rows), file=out)
        return 0

    person, source = people.cli_person(settings, args.by)
    if person is None:
        print("error: say who you are with --by NAME or ELK_RESOLVER_OPERATOR (it is recorded as executed_by)",
              file=err)
        return 2
    print(f"deciding as {person.name} (from {source}); this name is recorded as executed_by and in the decision log",
          file=out)
    try:
        if args.action == "approve":
            decision = await approvals.approve(pool, settings, args.id, person, publish=publisher)
        elif args.action == "approve-incident":
            decision = await approvals.approve_incident(pool, settings, args.id, person, args.objects, publish=publisher)
        elif args.action == "reject-incident":
            decision = await approvals.reject_incident(pool, settings, args.id, person, args.reason, publish=publisher)
        else:
            decision = await approvals.reject(pool, settings, args.id, person, args.reason, publish=publisher)
    except people.Refused as exc:
        print(f"error: {exc}", file=err)
        return 1
    what = "incident" if args.action.endswith("incident") else "approval"
    print(f"{what} {decision.approval_id} {decision.status} by {decision.by}", file=out)
    if decision.handed_over:
        print(f"{len(decision.handed_over)} request(s) handed to the execute stage (it runs each once):", file=out)
        for request_id in decision.handed_over:
            print(f"  {request_id[:16]}", file=out)
    if decision.results:
        print(_results_table(decision.results), file=out)
    return 0


def _incident_text(row: dict[str, Any]) -> str:
    lines = [
        f"incident {row['id']}  {row['status']}  {row['action']}  opened {_ts(row['opened_at'])}  "
        f"expires {_ts(row['expires_at'])}" + (f"  by {row['decided_by']}" if row["decided_by"] else ""),
        f"  {row['reason']}",
    ]
    for key, values in sorted(row["signs"].items()):
        lines.append(f"  {key}: " + ", ".join(f"{v} ({n})" for v, n in sorted(values.items())))
    body = [[o["target_key"], o["status"], o["request_id"][:16]] for o in row["objects"]]
    lines.append(table(["OBJECT", "STATUS", "REQUEST"], body))
    return "\n".join(lines)


async def _playbooks(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool, out: TextIO, err: TextIO) -> int:
    from elk_resolver.operations import controls, people
    from handlers import effect as effect_handler

    if args.action == "list":
        rows = await controls.playbooks(pool, settings)
        body = [[r["name"], r["state"] + ("" if r["available"] else " (not in the catalogue)"), r["updated_by"] or "",
                 _ts(r["updated_at"]), ", ".join(r["pattern_names"] or r["error_categories"])] for r in rows]  # fmt: skip
        print(table(["PLAYBOOK", "STATE", "BY", "AT (UTC)", "FOR"], body), file=out)
        return 0
    if args.action == "trials":
        rows = await effect_handler.list_trials(pool=pool)
        body = [[r["playbook_name"], f"{r['fraction']:g}", "stopped" if r["stopped_at"] else "on", r["started_by"],
                 _ts(r["started_at"]), r["left_alone"], r["acted"]] for r in rows]  # fmt: skip
        print(table(["PLAYBOOK", "FRACTION", "STATE", "BY", "SINCE (UTC)", "LEFT ALONE", "ACTED"], body), file=out)
        return 0
    if not args.name:
        print(f"error: playbooks {args.action} needs a playbook name", file=err)
        return 2
    person, source = people.cli_person(settings, args.by)
    if person is None:
        print("error: say who you are with --by NAME or ELK_RESOLVER_OPERATOR", file=err)
        return 2
    if args.action == "trial":
        return await _trial(args, settings, pool, person, out, err)
    try:
        row = await controls.switch_playbook(pool, settings, args.name, args.action == "enable", person)
    except controls.UnknownPlaybook as exc:
        print(f"error: {exc}", file=err)
        return 2
    except people.Refused as exc:
        print(f"error: {exc}", file=err)
        return 1
    state = "enabled" if row["disabled_at"] is None else "disabled: its stored solutions no longer run automatically"
    print(f"playbook {row['playbook_name']} {state} (by {row['updated_by']}, from {source})", file=out)
    return 0


async def _trial(args: argparse.Namespace, settings: Settings, pool: asyncpg.Pool, person: Any, out: TextIO,
                 err: TextIO) -> int:  # fmt: skip
    """``playbooks trial NAME --fraction F`` / ``--stop``: an observe-only trial (issue 25)."""
    from elk_resolver.operations import controls, effect, people

    if args.stop == (args.fraction is not None):
        print("error: playbooks trial needs --fraction F (start) or --stop", file=err)
        return 2
    try:
        row = await effect.set_trial(pool, settings, args.name, None if args.stop else args.fraction, person)
    except (controls.UnknownPlaybook, ValueError) as exc:
        print(f"error: {exc}", file=err)
        return 2
    except people.Refused as exc:
        print(f"error: {exc}", file=err)
        return 1
    if row is None:
        print(f"playbook {args.name}: trial stopped (by {person.name})", file=out)
    else:
        print(f"playbook {args.name}: on trial, {row['fraction']:g} of its eligible cases are left alone (never in"
              f" {', '.join(settings.critical_namespaces) or 'a critical namespace'}; at most"
              f" {settings.trial_max_per_window} per {settings.trial_window_s:g}s) (by {person.name})", file=out)
    return 0
