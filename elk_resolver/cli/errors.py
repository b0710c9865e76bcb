"""``elk-resolver errors show ID | merge A B | split ID``: operators stay in control of grouping.

``show`` prints an error's template and token array, which rule made its fingerprint, what
was merged into it and why (the merge pass's slot and values, or the operator who did it),
and its merge/split history. ``merge A B`` folds error B into A; ``split ID`` undoes a merge
(of ID into its canonical, or of every row merged into ID). Both are recorded in
``error_merge_log``, take effect in every ingest copy within ``patterns_refresh_s`` seconds,
and a split pair is never merged again by the merge pass.
"""

from __future__ import annotations

import argparse
import getpass
import json
from typing import Any

import asyncpg

from elk_resolver.events.fingerprint import RULE_FIELDS
from elk_resolver.store.db import queries
from elk_resolver.store.merge_pass import operator_merge, operator_split


def add_parser(sub: argparse._SubParsersAction, parser_class: Any) -> None:
    errors = sub.add_parser("errors", help="show, merge or split errors (how events are grouped)")
    actions = errors.add_subparsers(dest="action", required=True, metavar="ACTION", parser_class=parser_class)
    show = actions.add_parser("show", help="template, members, why they were merged, which rule made the fingerprint")
    show.add_argument("id", type=int)
    merge = actions.add_parser("merge", help="merge error B into error A (reversible with split)")
    merge.add_argument("a", type=int, help="the error that stays")
    merge.add_argument("b", type=int, help="the error merged into A")
    split = actions.add_parser("split", help="undo a merge: ID leaves its canonical, or ID's members leave it")
    split.add_argument("id", type=int)
    for p in (merge, split):
        p.add_argument("--by", default=None, help="who (default: the OS user)")


def parse_fields(text: str) -> list[str] | None:
    """``pattern,namespace,workload`` -> the list; empty -> None (back to the template)."""
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


async def main(args: argparse.Namespace, pool: asyncpg.Pool, out=print) -> int:
    from elk_resolver.cli.common import CliError

    actor = getattr(args, "by", None) or getpass.getuser()
    try:
        if args.action == "show":
            return await show(pool, args.id, out)
        if args.action == "merge":
            result = await operator_merge(pool, args.a, args.b, actor)
            out(f"error {args.b} merged into {args.a} ({result['moved_occurrences']} occurrences moved); "
                f"undo with: elk-resolver errors split {args.b}")
            return 0
        undone = await operator_split(pool, args.id, actor)
    except (LookupError, ValueError) as exc:
        raise CliError(str(exc)) from None
    for u in undone:
        out(f"split {u['member'][:12]} from {u['canonical'][:12]} ({u['moved_back']} occurrences moved back); "
            "the merge pass will not merge them again")
    return 0
