"""``elk-resolver errors list | show ID | merge A B | split ID | ack|resolve|snooze|mute|reopen ID
| owner ID NAME | note ID TEXT``: the errors as the console lists them, and operators in control
of grouping and triage.

``list`` takes the console's filters (type, text, which also finds the objects an error names,
and state). ``show`` prints an error's template and token array, which rule made its fingerprint, what
was merged into it and why (the merge pass's slot and values, or the operator who did it),
and its merge/split history. ``merge A B`` folds error B into A; ``split ID`` undoes a merge
(of ID into its canonical, or of every row merged into ID). Both are recorded in
``error_merge_log``, take effect in every ingest copy within ``patterns_refresh_s`` seconds,
and a split pair is never merged again by the merge pass. ``merge`` refuses errors of
different types unless ``--force``, and says what it merged into what.
"""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, Any

from elk_resolver.operations.times import parse_until

if TYPE_CHECKING:
    import asyncpg

    from elk_resolver.settings import Settings

STATES = ("open", "acknowledged", "resolved", "snoozed", "muted")  # operations.triage.STATES
STATE_VERBS = {"ack": "acknowledged", "resolve": "resolved", "snooze": "snoozed", "mute": "muted", "reopen": "open"}


def add_parser(sub: argparse._SubParsersAction, parser_class: Any) -> None:
    errors = sub.add_parser("errors", help="list errors (the console's filters); show, merge or split them; "
                                           "acknowledge, resolve, snooze, mute; owner and notes")
    actions = errors.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=parser_class)
    listing = actions.add_parser("list", help="errors, newest first, filtered as on the console's Errors page")
    listing.add_argument("--type", help="error type (exact)")
    listing.add_argument("--q", "--text", dest="q", help="text in the message or source, or an object the error "
                                                         "names (a pod, deployment, host, service, index)")
    listing.add_argument("--state", choices=STATES, help="only errors in this state")
    listing.add_argument("--page", type=int, default=1)
    listing.add_argument("--limit", type=int, default=50, help="rows per page (default 50)")
    listing.add_argument("--json", action="store_true")
    show = actions.add_parser("show", help="template, members, why they were merged, which rule made the fingerprint")
    show.add_argument("id", type=int)
    merge = actions.add_parser("merge", help="merge error B into error A (reversible with split)")
    merge.add_argument("a", type=int, help="the error that stays")
    merge.add_argument("b", type=int, help="the error merged into A")
    merge.add_argument("--force", action="store_true", help="merge even when the two errors' types differ")
    split = actions.add_parser("split", help="undo a merge: ID leaves its canonical, or ID's members leave it")
    split.add_argument("id", type=int)
    triage = []
    for verb, state in STATE_VERBS.items():
        p = actions.add_parser(verb, help=f"mark an error {state}" + (
            " (it reopens by itself when it occurs again)" if verb == "resolve" else
            " until a time (no messages meanwhile; it reopens when the snooze ends)" if verb == "snooze" else
            " (no messages about it, ever)" if verb == "mute" else ""))
        p.add_argument("id", type=int)
        if verb == "snooze":
            p.add_argument("until", type=parse_until, metavar="UNTIL",
                           help="how long (2h, 30m, 1d) or until when (ISO-8601, UTC unless a zone is given)")
        triage.append(p)
    owner = actions.add_parser("owner", help="make NAME the owner of an error ('' for nobody)")
    owner.add_argument("id", type=int)
    owner.add_argument("name")
    note = actions.add_parser("note", help="add a note to an error")
    note.add_argument("id", type=int)
    note.add_argument("text")
    for p in (merge, split, owner, note, *triage):
        p.add_argument("--by", default=None, help="who (default: ELK_RESOLVER_OPERATOR, else $USER)")


def parse_fields(text: str) -> list[str] | None:
    """``pattern,namespace,workload`` -> the list; empty -> None (back to the template)."""
    from elk_resolver.events.fingerprint import RULE_FIELDS

    fields = [f.strip() for f in text.split(",") if f.strip()]
    for f in fields:
        if f not in RULE_FIELDS and not (f.startswith("capture:") and f[8:].isidentifier()):
            raise ValueError(f"unknown fingerprint field {f!r}: one of {', '.join(RULE_FIELDS)} or capture:NAME")
    return fields or None


def _why(reason: Any) -> str:
    if isinstance(reason, str):
        reason = json.loads(reason)
    if not isinstance(reason, dict):
        return str(reason)
    rule = reason.get("rule")
    if rule == "merge-pass":
        values = reason.get("values") or []
        return f"merge pass: token {reason.get('position')} took {len(values)}+ values ({', '.join(values[:5])}...)"
    if rule == "operator":
        return f"merged by {reason.get('by')}"
    if rule == "version":
        return f"fingerprint rules changed (version {reason.get('version')}): old fingerprint kept its history"
    if rule == "split":
        return f"split by {reason.get('by')} (was: {_why(reason.get('was'))})"
    return json.dumps(reason)


async def show(pool: asyncpg.Pool, error_id: int, out=print) -> int:
    from elk_resolver.cli.common import CliError, table
    from elk_resolver.store.db import queries

    q = queries()
    async with pool.acquire() as conn:
        row = await conn.fetchrow(q.merge_row, error_id)
        if row is None:
            raise CliError(f"no error with id {error_id}")
        h = row["hash_signature"]
        tokens = await conn.fetchval("SELECT tokens FROM error_templates WHERE hash_signature = $1", h)
        members = await conn.fetch(q.merge_members, h)
        history = await conn.fetch(q.merge_history, h)
        pattern = await conn.fetchrow(q.errors_pattern, row["pattern_id"]) if row["pattern_id"] else None
        parent = await conn.fetchrow(q.merge_row, row["merged_into"]) if row["merged_into"] else None
        alias = await conn.fetchrow(q.merge_alias_of, h)
    out(f"error {row['id']}  {row['error_type']}  hash {h}")
    out(f"template:    {row['fingerprint_template']}")
    if tokens is not None:
        out(f"tokens:      {list(tokens)}")
    version = row["fingerprint_version"]
    if version == "rule" and pattern is not None:
        rule = f"pattern {pattern['id']} {pattern['pattern_name']!r} fields {','.join(pattern['fingerprint_fields'] or [])}"
    elif version == "template":
        rule = "message template (elk_resolver.events.fingerprint.normalize)"
    else:
        rule = version
    out(f"fingerprint: {rule}")
    out(f"occurrences: {row['occurrence_count']}  last seen {row['last_seen_at']}")
    if parent is not None:
        out(f"merged into: error {parent['id']} ({_why(alias['reason']) if alias else 'unknown'})")
    if members:
        out(f"members ({len(members)}):")
        out(table(["id", "fingerprint", "template", "moved", "why", "by", "at"], [
            (m["id"], m["hash_signature"] and m["hash_signature"][:12], m["fingerprint_template"],
             m["moved_occurrences"], _why(m["reason"]), m["created_by"], m["created_at"].isoformat(" ", "seconds"))
            for m in members]))
    if history:
        out("history:")
        out(table(["at", "action", "from", "to", "by"], [
            (r["created_at"].isoformat(" ", "seconds"), r["action"], r["from_hash"][:12], r["to_hash"][:12], r["actor"])
            for r in history]))
    return 0


async def listing(args: argparse.Namespace, pool: asyncpg.Pool, out=print) -> int:
    from elk_resolver.cli.common import records, table
    from elk_resolver.operations import reading

    data = await reading.errors(pool, error_type=args.type, text=args.q, state=args.state, page=args.page,
                                per_page=max(1, min(args.limit, 500)))
    if args.json:
        out(json.dumps({"errors": records(data["rows"]), "paging": data["paging"]}, indent=2, default=str))
        return 0
    if not data["rows"]:
        out("no errors match")
        return 0
    out(table(["id", "type", "state", "owner", "count", "last_seen", "where", "message"], [
        (r["id"], r["error_type"], r["state"], r["owner"], r["occurrence_count"], r["last_seen_at"],
         r["source_system"], r["error_message"]) for r in data["rows"]]))
    p = data["paging"]
    out(f"page {p['page']} of {p['last']} ({p['total']} in all)")
    return 0


async def main(args: argparse.Namespace, pool: asyncpg.Pool, settings: Settings, out=print) -> int:
    from elk_resolver.cli.common import CliError
    from elk_resolver.operations import people, triage

    if args.action == "list":
        return await listing(args, pool, out)
    if args.action == "show":
        return await show(pool, args.id, out)
    person, source = people.cli_person(settings, getattr(args, "by", None))
    try:
        if args.action == "merge":
            merged = await triage.merge(pool, args.a, args.b, person, force=args.force)
            a, b = merged.canonical, merged.member
            out(f"merged error {b['id']} ({b['error_type']}: {b['error_message']}) into error {a['id']} "
                f"({a['error_type']}: {a['error_message']}); {merged.moved_occurrences} occurrences moved, "
                f"by {person.name} (from {source}); undo with: elk-resolver errors split {b['id']}")
            return 0
        if args.action == "split":
            for u in await triage.split(pool, args.id, person):
                out(f"split {u['member'][:12]} from {u['canonical'][:12]} ({u['moved_back']} occurrences moved back); "
                    "the merge pass will not merge them again")
            return 0
        if args.action == "owner":
            row = await triage.set_owner(pool, args.id, args.name, person)
            out(f"error {args.id}: owner {row['owner'] or 'nobody'} (set by {person.name})")
            return 0
        if args.action == "note":
            await triage.add_note(pool, args.id, args.text, person)
            out(f"error {args.id}: note added by {person.name}")
            return 0
        state = STATE_VERBS[args.action]
        until = args.until if state == "snoozed" else None
        row = await triage.set_state(pool, args.id, state, person, until=until)
    except people.Refused as exc:
        raise CliError(str(exc)) from None
    until_text = f" until {row['snoozed_until']:%Y-%m-%d %H:%M:%S} UTC" if row["snoozed_until"] else ""
    out(f"error {args.id}: {row['state']}{until_text} (by {row['changed_by']}, from {source})")
    return 0
