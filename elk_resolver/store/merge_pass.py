"""The merge pass and the operators' merges and splits, over PostgreSQL.

One copy at a time (a transaction-scoped advisory lock; the other copies skip the pass, an
operator's command waits for it):

1. new ``error_logs`` rows get their template as a token array in ``error_templates``;
2. if the fingerprint rules changed since the stored hashes were made (``rules_digest``),
   every template row is fingerprinted again and the new fingerprint is aliased to the old
   row, so a rule change never splits an error's history (:func:`remap`);
3. counts that a copy added to a merged row before its alias index reloaded move on (sweep);
4. :func:`elk_resolver.events.merging.plan_merges` over the live rows (pairs an operator split are
   blocked), and each planned merge is applied: counts move to the canonical (oldest) row,
   members are marked ``merged_into``, an alias per member records why, and the canonical's
   template gains the learned ``<*>``. Buckets are (error type, width) first, then (error
   type, first token, last token) across widths, where a slot spanning a varying number of
   tokens joins templates (the learned template holds one ``<*...>`` for it).

What a merge does to solutions and history: nothing. A merged row keeps its solutions and
its ``execution_history`` (they record what ran for it). Later events of a merged fingerprint
count on the canonical row and its solutions; the execute stage binds its targets from the
event (namespace, pod...), never from the row, so a merge never changes which object a
command acts on. A split restores the member's moved count and pins its fingerprint to its
own row again.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import asyncpg

from elk_resolver.events import fingerprint as fingerprint_rules
from elk_resolver.events.fingerprint import fingerprint
from elk_resolver.events.merging import MergeConfig, TemplateRow, candidate_values, plan_merges, tokens_of
from elk_resolver.store.db import queries

log = logging.getLogger(__name__)

PASS_ACTOR = "merge-pass"
CHUNK_ROWS = 5000  # new rows tokenized per statement
BUCKET_ROWS = 20000  # rows of one (error type, width) bucket a pass looks at, at most
PASS_LOCK_TIMEOUT_SQL = "SET LOCAL lock_timeout = '500ms'"


def rules_digest(version: str) -> str:
    """What the stored hashes depend on: the version and the template rules' text."""
    return hashlib.sha256((version + "\x1e" + fingerprint_rules.rules_text()).encode()).hexdigest()


@dataclass(slots=True)
class PassResult:
    ran: bool = False
    tokenized: int = 0
    remapped: int = 0
    swept: int = 0
    merges: list[dict[str, Any]] = field(default_factory=list)

    @property
    def merged_rows(self) -> int:
        return sum(len(m["members"]) for m in self.merges)


async def run_merge_pass(
    pool: asyncpg.Pool, *, version: str = "template", config: MergeConfig = MergeConfig()
) -> PassResult:
    """One pass; ``ran`` is False when another copy holds the lock."""
    q = queries()
    result = PassResult()
    async with pool.acquire() as conn, conn.transaction():
        if not await conn.fetchval(q.merge_try_lock):
            return result
        # The pass locks rows bucket by bucket in one transaction, so across buckets not in the
        # hash order ingest's upsert takes them in: rather than hold a batch or deadlock with
        # it, the pass gives way (55P03, transient) and the next pass tries again.
        await conn.execute(PASS_LOCK_TIMEOUT_SQL)
        result.ran = True
        state = await conn.fetchrow(q.merge_state)
        changed = False
        start = upto = state["tokenized_upto"]
        while new_rows := await conn.fetch(q.merge_untokenized, upto, CHUNK_ROWS):
            await conn.executemany(
                q.merge_add_template,
                [(r["hash_signature"], r["error_type"], list(tokens_of(r["fingerprint_template"]))) for r in new_rows],
            )
            upto = new_rows[-1]["id"]
            result.tokenized += len(new_rows)
        digest = rules_digest(version)
        # also on the first pass (no digest yet): rows stored before this feature, or by an
        # older release, were fingerprinted by older rules
        if state["rules_digest"] != digest:
            result.remapped = await remap(conn, version)
            changed = changed or result.remapped > 0
        stale = await conn.fetch(q.merge_sweep_candidates)
        if stale:
            await lock_rows(conn, [h for r in stale for h in r])
            result.swept = len(await conn.fetch(q.merge_sweep))
        # a family needs a row new since the last pass (or a rule change): only the buckets
        # those rows fall in, one at a time, each at most BUCKET_ROWS rows: the pass's memory
        # follows the largest bucket, not the number of new errors
        rules_changed = state["rules_digest"] != digest
        buckets = await conn.fetch(q.merge_touched_buckets, None if rules_changed else start)
        if buckets and (rules_changed or upto > start):
            blocked = [frozenset((r["hash_a"], r["hash_b"])) for r in await conn.fetch(q.merge_blocked)]
            for bucket in buckets:
                changed = await _merge_bucket(conn, bucket["error_type"], bucket["width"], start, blocked, config,
                                              result) or changed
            # then across widths: a value of several tokens (a quoted name with spaces, a list)
            # makes templates of different widths with the same first and last tokens
            if config.max_span >= 2:
                for bucket in await conn.fetch(q.merge_touched_span_buckets, None if rules_changed else start):
                    rows = await conn.fetch(q.merge_span_rows, bucket["error_type"], bucket["first"], bucket["last"],
                                            BUCKET_ROWS, start)
                    changed = await _plan_and_apply(conn, bucket["error_type"], rows, blocked, config, result) or changed
        await conn.execute(q.merge_set_state, digest, upto)
        if changed:
            await conn.execute(q.merge_bump_generation)
    if result.merges or result.remapped:
        log.info(
            "merge pass: %d rows merged into %d errors, %d remapped",
            result.merged_rows,
            len(result.merges),
            result.remapped,
            extra={"stage": "ingest"},
        )
    return result


async def _merge_bucket(
    conn: asyncpg.Connection, error_type: str, width: int, new_after: int, blocked: list, config: MergeConfig,
    result: PassResult,
) -> bool:
    """Plan and apply the merges of one (error type, width) bucket; True if any."""
    rows = await conn.fetch(queries().merge_bucket_rows, error_type, width, BUCKET_ROWS, new_after)
    return await _plan_and_apply(conn, error_type, rows, blocked, config, result)


async def _plan_and_apply(
    conn: asyncpg.Connection, error_type: str, rows: list, blocked: list, config: MergeConfig, result: PassResult
) -> bool:
    """Plan the merges of one bucket's rows (oldest first) and apply them; True if any."""
    q = queries()
    if len(rows) < 2:
        return False
    templates = [
        TemplateRow(r["hash_signature"], r["error_type"], tuple(r["tokens"]), r["occurrence_count"], r["learned"])
        for r in rows
    ]
    del rows
    tokens = sorted(candidate_values(templates))
    vocabulary = {(error_type, r["tok"]): r["templates"] for r in await conn.fetch(q.merge_vocabulary, error_type, tokens)}
    # CPU work off the event loop: the ingest stage shares it
    planned = await asyncio.to_thread(plan_merges, templates, blocked=blocked, config=config, vocabulary=vocabulary)
    if planned:
        await lock_rows(conn, [h for m in planned for h in (m.canonical, *m.members)])
    for merge in planned:
        await merge_into(conn, merge.canonical, merge.members, merge.reason(), PASS_ACTOR)
        await conn.execute(q.merge_set_template, merge.canonical, error_type, list(merge.tokens), True)
        result.merges.append({"canonical": merge.canonical, "members": list(merge.members), **merge.reason()})
    return bool(planned)


async def lock_rows(conn: asyncpg.Connection, hashes: list[str]) -> None:
    """Lock the rows up front in hash order, as ingest's upsert does: no deadlock with it."""
    await conn.execute(queries().merge_lock_rows, sorted(set(hashes)))


async def merge_into(
    conn: asyncpg.Connection, canonical: str, members: list[str] | tuple[str, ...], reason: dict, actor: str
) -> int:
    """Merge ``members`` (hashes) into ``canonical``: counts move, aliases and the log record
    it. Members without a row (a fingerprint only ingest will see) get the alias alone.
    Returns the occurrences moved."""
    q = queries()
    members = [m for m in members if m != canonical]
    moved_rows = {r["hash_signature"]: r["moved"] for r in await conn.fetch(q.merge_move_counts, canonical, members)}
    await conn.execute(q.merge_repoint, canonical, members)
    for member in members:
        moved = moved_rows.get(member, 0)
        await conn.execute(q.merge_add_alias, member, canonical, reason, moved, actor)
        await conn.execute(q.merge_log, "merge", member, canonical, {**reason, "moved_occurrences": moved}, actor)
    return sum(moved_rows.values())


async def remap(conn: asyncpg.Connection, version: str) -> int:
    """Fingerprint every template row again with the current rules. Rows that now share a
    fingerprint merge into the oldest; the new fingerprint is aliased to that row, so new
    events count on the row that holds the history (a merged row's new fingerprint goes to
    its canonical row). Rows whose fingerprint did not change are not written. Returns the
    aliases recorded."""
    q = queries()
    groups: dict[str, list[asyncpg.Record]] = defaultdict(list)
    templates: dict[str, str] = {}
    rows = await conn.fetch(q.merge_remap_rows)
    hash_of = {r["id"]: r["hash_signature"] for r in rows}
    for row in rows:
        fp = fingerprint(row["error_type"], row["error_message"], version)
        groups[fp.hash].append(row)
        templates[fp.hash] = fp.template
    count = 0
    reason = {"rule": "version", "version": version}
    for new_hash, group in groups.items():
        live = [r for r in group if r["merged_into"] is None]
        if len(group) == 1 and group[0]["hash_signature"] == new_hash:
            continue  # unchanged
        same = [r for r in live if r["hash_signature"] == new_hash]
        if live:
            target = (same or live)[0]["hash_signature"]  # rows come oldest first
        else:  # only merged rows: their canonical row
            target = hash_of.get(group[0]["merged_into"])
            if target is None:
                continue
        others = [r["hash_signature"] for r in live if r["hash_signature"] != target]
        if others:
            await lock_rows(conn, [target, *others])
            await merge_into(conn, target, others, reason, PASS_ACTOR)
            count += len(others)
        if new_hash != target:
            await conn.execute(q.merge_add_alias, new_hash, target, reason, 0, PASS_ACTOR)
            await conn.execute(q.merge_log, "remap", new_hash, target, reason, PASS_ACTOR)
            count += 1
        if live:
            await conn.execute(q.merge_set_version, target, version, templates[new_hash])
            error_type = next(r["error_type"] for r in live if r["hash_signature"] == target)
            await conn.execute(q.merge_set_template, target, error_type, list(tokens_of(templates[new_hash])), False)
    return count


async def operator_merge(pool: asyncpg.Pool, canonical_id: int, member_id: int, actor: str) -> dict:
    """``errors merge A B``: B (and what was merged into it) becomes part of A."""
    q = queries()
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q.merge_lock)
        a = await conn.fetchrow(q.merge_row, canonical_id)
        b = await conn.fetchrow(q.merge_row, member_id)
        if a is None or b is None:
            raise LookupError(f"no error with id {member_id if a else canonical_id}")
        if a["merged_into"] is not None:
            raise ValueError(f"error {canonical_id} is merged into {a['merged_into']}: merge into that one")
        if canonical_id == member_id:
            raise ValueError("an error cannot be merged into itself")
        reason = {"rule": "operator", "by": actor}
        await lock_rows(conn, [a["hash_signature"], b["hash_signature"]])
        moved = await merge_into(conn, a["hash_signature"], [b["hash_signature"]], reason, actor)
        await conn.execute(q.merge_bump_generation)
    return {"canonical": canonical_id, "member": member_id, "moved_occurrences": moved}


async def operator_split(pool: asyncpg.Pool, error_id: int, actor: str) -> list[dict]:
    """``errors split ID``: a merged row leaves its canonical; a canonical row lets go of every
    row merged into it. Recorded, and the merge pass never merges the pairs again."""
    q = queries()
    out = []
    async with pool.acquire() as conn, conn.transaction():
        await conn.execute(q.merge_lock)
        row = await conn.fetchrow(q.merge_row, error_id)
        if row is None:
            raise LookupError(f"no error with id {error_id}")
        if row["merged_into"] is not None:
            canonical = await conn.fetchrow(q.merge_row, row["merged_into"])
            pairs = [(row["hash_signature"], canonical["hash_signature"])]
        else:
            pairs = [(m["hash_signature"], row["hash_signature"]) for m in await conn.fetch(q.merge_members, row["hash_signature"]) if m["id"] is not None]
        if not pairs:
            raise ValueError(f"error {error_id} is neither merged nor has merged members")
        await lock_rows(conn, [h for pair in pairs for h in pair])
        for member, canonical_hash in pairs:
            moved = await conn.fetchval(q.merge_split, member, canonical_hash, actor)
            await conn.execute(q.merge_log, "split", member, canonical_hash, {"moved_back": moved}, actor)
            out.append({"member": member, "canonical": canonical_hash, "moved_back": moved})
        await conn.execute(q.merge_bump_generation)
    return out
