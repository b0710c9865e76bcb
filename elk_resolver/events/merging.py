"""Learned merges: templates equal except at one position whose values vary a lot are one error.

One message cannot tell a variable word (a user name, a generated id the rules missed) from a
constant one; many messages can. :func:`plan_merges` looks at stored templates (token arrays)
of one error type and length, and where a *family* is equal except at one position that has
taken many distinct values, it plans to merge the family into its oldest member, with a
``<*>`` at that position. Where no such family is left, families equal except at two
positions are judged the same way, each slot on its own (bounded by
:attr:`MergeConfig.multi_budget`). Pure and deterministic: the merge pass (elk_resolver/store/merge_pass.py)
runs it over PostgreSQL rows under an advisory lock, the grouping benchmark over its own rows.

Guards against over-merging, each measured by the benchmark's over-merge share:
* a slot must have taken at least ``min_values`` distinct values (an existing ``<*>`` counts
  as :attr:`MergeConfig.generated_weight` values), ``word_factor`` times as many when every
  value is a plain word (the shape of states, verbs and component names; ids have digits or
  punctuation);
* the values must look like values, not like the few words of a closed set: a slot whose
  values repeat (states, verbs, component names: each comes back again and again) is left
  alone, one whose values are mostly seen once or twice (ids, user names) is a variable.
  Measured as the share of a family's occurrences that come from values seen 3+ times;
* a slot of the first token or a slot that is a key (``key=``, ``key:``) is never merged, and
  the merged template keeps at least two constant tokens and a third of its tokens constant
  (without this, chains of merges collapse short templates into ``<*> <*>``);
* a pair an operator split (:attr:`blocked`) is never merged again.

:class:`AliasIndex` is what every ingest copy holds in memory: exact member hash -> canonical,
and the learned templates (tokens with ``<*>`` at learned positions) so a *new* value at a
learned position finds its canonical error without waiting for the next pass.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

WILDCARD = "<*>"
SPAN = "<*...>"
"""a learned slot of one or more tokens (a quoted name with spaces, a list): the template
matches any message equal to it before and after the slot, with 1 to
:attr:`MergeConfig.max_span` tokens between."""


MAX_SPAN = 4


def _wild(token: str) -> bool:
    return token == WILDCARD or token == SPAN


def tokens_of(template: str) -> tuple[str, ...]:
    """The template as the token array stored in PostgreSQL (split on white space)."""
    return tuple(template.split())


@dataclass(slots=True)
class TemplateRow:
    key: str
    """hash_signature of the error row."""
    error_type: str
    tokens: tuple[str, ...]
    count: int = 1
    """occurrences counted into the row."""
    learned: bool = False
    """its template gained a ``<*>`` from a merge: a new value at such a slot joins it."""


@dataclass(frozen=True, slots=True)
class MergeConfig:
    min_values: int = 3
    """distinct values a slot must have taken (2 are enough when one is a whole ``<*>``)."""
    rare_at: int = 1
    rare_share: float = 0.05
    """a value is rare (the tail of an open set) when seen at most ``rare_at`` times or in at
    most this share of the family's occurrences (one dominant value leaves the rest rare)."""
    min_rare: int = 0
    """rare values a slot of plain values needs: a closed set, once seen, stops growing a tail
    (0: the closed-set guards decide; leave-one-system-out chose 0 for 14 of 16 systems)."""
    sample_factor: int = 0
    """a tail counts once the family holds this many occurrences per distinct value."""
    many_values: int = 10
    """so many distinct values are a variable whatever their counts (few closed sets are larger)."""
    max_known_share: float = 0.5
    """a slot is a closed set when this share of its values are constants of other templates..."""
    known_in: int = 2
    """... of this many at least: the one user or service seen most is a constant of every
    template where it was the only value seen, a closed set's word recurs in many."""
    min_constants: int = 2
    """the merged template keeps at least this many tokens that are not ``<*>``..."""
    min_constant_share: float = 0.34
    """... and at least this share of its tokens: a template of placeholders says nothing."""
    max_slots: int = 2
    """a family may differ at up to this many positions at once (``user alice from host a``
    beside ``user bob from host b``), each slot judged on its own as a one-position slot is;
    1 turns multi-position merges off."""
    multi_budget: int = 300_000
    """a bucket is searched for families of two positions only while its rows times its pairs
    of positions stay within this (about 1,000 rows of 25 tokens; 2 s of CPU on a shared
    core); memory is one dict of the bucket's rows per pair of positions."""
    max_span: int = MAX_SPAN
    """a slot may span up to this many tokens: templates equal before and after a run of 1 to
    ``max_span`` tokens, of different lengths, merge when the runs pass a slot's guards (each
    run one value); 1 turns spans off."""
    span_budget: int = 300_000
    """an error type's rows are searched for spans only while rows times start positions
    times span lengths stay within this; memory is one dict per (prefix, suffix) length."""


@dataclass(frozen=True, slots=True)
class Merge:
    canonical: str
    members: tuple[str, ...]
    """hashes merged into ``canonical`` (the canonical itself excluded)."""
    position: int
    tokens: tuple[str, ...]
    """the canonical's template after the merge (``<*>`` at ``position``)."""
    values: tuple[str, ...]
    """distinct values the slot took (sorted, at most 20): why they were merged; for a merge
    at several positions, the values of the slots joined by spaces."""
    positions: tuple[int, ...] = ()
    """every position the merge made variable (``(position,)`` when empty)."""

    def reason(self) -> dict:
        reason = {"rule": "merge-pass", "position": self.position, "values": list(self.values)}
        if len(self.positions) > 1:
            reason["positions"] = list(self.positions)
        return reason


def _keyish(tokens: tuple[str, ...], i: int) -> bool:
    """The first token (what happened) or a key (``key=``/``key:``) is never a variable."""
    return i == 0 or tokens[i].endswith(("=", ":"))


_KEY = re.compile(r"([(\[{\"']*[A-Za-z_][\w-]*(?:\.[\w-]+)*(?:[=:]|\.{2,}))(.+)")


def _split_key(value: str) -> tuple[str, str]:
    """(key, value) of a ``key=value``, ``key:value`` or ``key.....value`` token; ("", token)
    otherwise."""
    m = _KEY.fullmatch(value)
    return (m.group(1), m.group(2).rstrip(")]}\"',;")) if m else ("", value)


_WRAP = "()[]{}\"'`,;.!?"


def _plain(value: str) -> bool:
    """Letters only, with wrapping punctuation: the shape of a flag or state (``ok``, ``true``)."""
    return value.strip(_WRAP).isalpha()


# The small vocabularies programs print into a message: HTTP methods, truth values, states,
# levels, directions and the verbs of a lifecycle. A slot holding them is a closed set: each
# word is its own event (``VM Started`` and ``VM Stopped``), never an identifier.
CLOSED_WORDS = frozenset("""
get post put delete head patch options connect trace
true false yes no on off none null nil ok
up down open closed active inactive idle busy ready pending waiting success failure error warning
warn info debug notice fatal critical severe online offline enabled disabled allowed denied valid
invalid new old locked unlocked available unavailable healthy unhealthy alive dead full empty high
low normal read write in out input output send receive start stop restart reload create update
remove add insert select begin end commit rollback login logout allow deny accept reject
leader follower master slave primary standby replica
""".split())


_PIECES = re.compile(r"([^A-Za-z0-9]+)")


def varying_parts(values: Iterable[str]) -> list[str]:
    """What differs between the values of a slot: each value without the word pieces every
    value starts and ends with (``checking.rejected``, ``checking.accepted`` -> ``rejected``,
    ``accepted``), so a closed-set word glued to a constant is still seen."""
    split = [_PIECES.split(v) for v in values]
    if len(split) < 2:
        return [v for v in values]
    head = 0
    while all(len(p) > head + 1 for p in split) and len({p[head] for p in split}) == 1:
        head += 1
    tail = 0
    while all(len(p) > head + tail + 1 for p in split) and len({p[-1 - tail] for p in split}) == 1:
        tail += 1
    return ["".join(p[head : len(p) - tail]) for p in split]


def closed_word(value: str) -> bool:
    """Is ``value`` a word of a closed set: a listed word, a verb's participle or gerund
    (``Started``, ``LOOKING``: a state or an event, not a name) or an all-capitals word (an
    enum constant as Java and C print them)?"""
    word = value.strip(_WRAP)
    if not word.isalpha():
        return False
    lower = word.lower()
    if lower in CLOSED_WORDS:
        return True
    if len(word) >= 5 and lower.endswith(("ed", "ing")):
        return True
    return len(word) >= 2 and word.isupper()


def slot_is_variable(
    values: Mapping[str, int], config: MergeConfig = MergeConfig(), known: Collection[str] = ()
) -> bool:
    """Is one slot of one family a variable? ``values``: occurrences per distinct token at the
    slot; ``known``: those of them that are tokens of other templates of the error type.

    Evidence for a variable: the template rules found a whole value there in some message (a
    ``<*>``), a value holds a placeholder (an id the rules cut out), many values, or a tail of
    rare values (an open set keeps showing new values; a closed set, states, verbs, HTTP
    methods, shows the same few again and again, each many times). Evidence for a closed
    set, which wins: its values are constants of other templates (true, null, start, GET
    where the path is a constant). A ``key=value`` slot is judged on its values, one key only,
    and plain-word values of a key stay apart (``state=ok``: the normalize rules' stance)."""
    return not slot_is_closed(values, config, known) and _varies_like_a_value(values, config)


def slot_is_closed(values: Mapping[str, int], config: MergeConfig = MergeConfig(), known: Collection[str] = ()) -> bool:
    """The closed-set half of :func:`slot_is_variable`: values of several keys, values that are
    constants of other templates, words of a small vocabulary, or plain words after a key."""
    keys = {_split_key(v)[0] for v in values}
    if len(keys) > 1:
        return True
    (key,) = keys
    others = [v for v in values if WILDCARD not in v]
    if others and sum(1 for v in others if v in known) >= max(1.0, config.max_known_share * len(others)):
        return True
    words = varying_parts([_split_key(v)[1] for v in others])
    if words and sum(1 for v in words if closed_word(v)) >= config.max_known_share * len(words):
        return True
    return bool(key) and all(_plain(_split_key(v)[1]) for v in values)


def _varies_like_a_value(values: Mapping[str, int], config: MergeConfig) -> bool:
    """The identifier half of :func:`slot_is_variable` (its closed-set half already passed)."""
    rest: dict[str, int] = defaultdict(int)
    for v, n in values.items():
        rest[_split_key(v)[1]] += n
    if len(rest) < 2:
        return False
    rare_below = max(config.rare_at, config.rare_share * sum(rest.values()))
    plain = [n for v, n in rest.items() if WILDCARD not in v]
    rare = sum(1 for n in plain if n <= rare_below)
    generated = len(plain) < len(rest)  # the rules found a value here in some message...
    if WILDCARD in rest and rare == len(plain):  # ... the whole token in one at least
        return True
    if len(rest) >= config.many_values:
        return True
    if len(rest) < config.min_values:
        return False
    if not plain:  # every value holds an id the rules cut out: a name that varies with it
        return True
    # a tail of plain words needs a sample to be one: the first sightings of a closed set
    # (states, verbs) are all rare too; a compound value (acme-eu, a.b) is an id's shape
    if all(_plain(v) for v in rest) and sum(rest.values()) < config.sample_factor * len(rest):
        return False
    return rare >= config.min_rare or (generated and rare >= 1)


def plan_merges(
    rows: Iterable[TemplateRow],
    *,
    blocked: Collection[frozenset[str]] = (),
    config: MergeConfig = MergeConfig(),
    vocabulary: Mapping[tuple[str, str], int] | None = None,
) -> list[Merge]:
    """Merges to record, in order; later ones may absorb the canonical of earlier ones.

    ``rows`` in age order (oldest first): the oldest member of a family is its canonical, so
    an error keeps its id, solutions and history when newer variants join it. ``vocabulary``:
    (error type, token) -> how many templates of that error type hold the token, for the
    tokens of ``rows`` at least (:func:`vocabulary_of` ``rows`` when not given: a caller that
    passes only some buckets of an error type passes the counts over all of them)."""
    live: dict[str, TemplateRow] = {}
    order: dict[str, int] = {}
    for n, row in enumerate(rows):
        live[row.key] = TemplateRow(row.key, row.error_type, row.tokens, row.count, row.learned)
        order[row.key] = n
    # a value is known elsewhere when it is a *constant* of another template: where it sits
    # at a slot that varies in that template's own family (group `adm' in "Adding group `adm'"
    # beside "Adding group `wheel'"), it is the same kind of value, not a constant
    varying = varying_positions(live.values())
    held, constant = vocabulary_of(live.values()), constant_vocabulary(live.values(), varying)
    if vocabulary is None:
        vocabulary = constant
    else:
        vocabulary = {k: n - held.get(k, 0) + constant.get(k, 0) for k, n in vocabulary.items()}
    blocked_set = {frozenset(b) for b in blocked}
    merges: list[Merge] = []
    changed = True
    while changed:  # rounds: a merge can make a new family (its canonical gained a <*>)
        changed = False
        buckets: dict[tuple[str, int], list[str]] = defaultdict(list)
        for row in live.values():
            buckets[(row.error_type, len(row.tokens))].append(row.key)
        for (_, width), keys in buckets.items():
            if len(keys) < 2:
                continue
            before = len(merges)
            for i in range(1, width):
                # each row is in one family per position, so merges at this position cannot
                # touch another family of it; the next position sees the merged tokens
                families: dict[tuple[str, ...], list[TemplateRow]] = defaultdict(list)
                for key in keys:
                    row = live.get(key)
                    if row is not None:
                        families[row.tokens[:i] + row.tokens[i + 1 :]].append(row)
                for family in families.values():
                    merge = _slots_merge(family, (i,), blocked_set, order, config, vocabulary, varying)
                    if merge is not None:
                        merges.append(_applied(merge, live))
                        changed = True
            if len(merges) == before:
                # only when no one-position merge is left: a family of two positions is what
                # one-position merges could not join (their guards judge the same slots)
                for merge in _multi_merges([live[k] for k in keys if k in live], width, blocked_set, order, config,
                                           vocabulary, varying):
                    merges.append(_applied(merge, live))
                    changed = True
        if not changed:
            # last, across widths: what merges of one width could not join
            for merge in _span_merges(list(live.values()), blocked_set, order, config, vocabulary, varying):
                merges.append(_applied(merge, live))
                changed = True
    return merges


def _span_layouts(widths: Collection[int], config: MergeConfig) -> list[tuple[int, int]]:
    """(prefix length, suffix length) pairs under which rows of at least two of ``widths``
    have a middle of 1 to ``max_span`` tokens (position 0 is never a variable)."""
    out = set()
    for w in widths:
        for p in range(1, w):
            for m in range(1, min(config.max_span, w - p - 1) + 1):
                s = w - p - m
                if s >= 1 and sum(1 for n in range(p + s + 1, p + s + config.max_span + 1) if n in widths) >= 2:
                    out.add((p, s))
    return sorted(out)


def _span_searched(rows: int, widths: Collection[int], config: MergeConfig) -> bool:
    return config.max_span >= 2 and len(widths) >= 2 and rows * max(widths) * config.max_span <= config.span_budget


def _span_families(
    rows: Iterable[TemplateRow], config: MergeConfig, taken: Collection[str] = ()
) -> Iterable[tuple[int, int, list[TemplateRow]]]:
    """(prefix length, suffix length, family): rows of one error type equal in their first
    ``p`` and last ``s`` tokens (both at least one) with 1 to ``max_span`` tokens between, of
    at least two widths (one width is what merges of one width judge). Rows in ``taken`` (a
    set the caller may grow while iterating) are left out. Memory: one dict per layout."""
    by_type: dict[str, dict[int, list[TemplateRow]]] = defaultdict(lambda: defaultdict(list))
    for row in rows:
        by_type[row.error_type][len(row.tokens)].append(row)
    for by_width in by_type.values():
        if not _span_searched(sum(len(v) for v in by_width.values()), by_width.keys(), config):
            continue
        for p, s in _span_layouts(by_width.keys(), config):
            families: dict[tuple[tuple[str, ...], tuple[str, ...]], list[TemplateRow]] = defaultdict(list)
            for w in range(p + s + 1, p + s + config.max_span + 1):
                for row in by_width.get(w, ()):
                    if row.key not in taken:
                        families[(row.tokens[:p], row.tokens[w - s :])].append(row)
            for family in families.values():
                if len({len(r.tokens) for r in family}) >= 2:
                    yield p, s, family


def _span_merges(
    rows: list[TemplateRow],
    blocked: set[frozenset[str]],
    order: dict[str, int],
    config: MergeConfig,
    vocabulary: Mapping[tuple[str, str], int],
    varying: Mapping[str, Collection[int]],
) -> list[Merge]:
    """Merges of families of one error type equal before and after a run of tokens whose
    length varies (``relation "orders" does not exist`` beside ``relation "my orders" does not
    exist``): the run is one slot, its values the runs joined by spaces, judged as a slot of
    one position is, and each run of several tokens must be one value (:func:`one_value`).
    The canonical gets one :data:`SPAN` for the run. Each row joins at most one such merge
    per call."""
    taken: set[str] = set()
    out: list[Merge] = []
    for p, s, family in _span_families(rows, config, taken):
        merge = _span_merge(family, p, s, blocked, order, config, vocabulary, varying)
        if merge is not None:
            out.append(merge)
            taken.update((merge.canonical, *merge.members))
    return out


_OPEN_CLOSE = {'"': '"', "'": "'", "`": "'"}
"""quotes around a value; brackets hold structure as often (``(GID <*>)``, ``(pid <*>)``)"""


def one_value(run: tuple[str, ...]) -> bool:
    """Is a run of tokens one value rather than words of the message? One token is (the slot
    guards judge it); several are when delimited as one: quotes or brackets around the whole
    run (``"my table"``, not brackets: ``(GID 50)`` is a key and its value), commas between its items (``a, b, c``), or every token a value the
    rules found (``<*> <*>``). A run of plain words (``Connection reset by peer``) is a phrase
    a closed set of messages prints, and a run holding a key (``act=<*>``) is structure."""
    if len(run) == 1:
        return True
    if any(_split_key(t)[0] or t.endswith(("=", ":")) for t in run):
        return False
    if all(_wild(t) for t in run):
        return True
    first, last = run[0], run[-1].rstrip(",;.")
    close = _OPEN_CLOSE.get(first[:1])
    # a learned <*> at an end stands for a token that held the quote (``"my <*>``)
    if close and (last.endswith(close) or _wild(last)) and not any(close in t for t in run[1:-1]) and close not in first[1:]:
        return True
    if _wild(first) and any(last.endswith(c) for c in _OPEN_CLOSE.values()) and not any(t[:1] in _OPEN_CLOSE for t in run[1:]):
        return True
    return all(t.endswith(",") for t in run[:-1])


def _span_merge(
    family: list[TemplateRow],
    p: int,
    s: int,
    blocked: set[frozenset[str]],
    order: dict[str, int],
    config: MergeConfig,
    vocabulary: Mapping[tuple[str, str], int],
    varying: Mapping[str, Collection[int]],
) -> Merge | None:
    """As :func:`_slots_merge`, for a slot spanning positions ``p`` to ``len - s`` of each row."""
    family = sorted(family, key=lambda r: order[r.key])
    canonical = family[0]
    middle = {r.key: r.tokens[p : len(r.tokens) - s] for r in family}
    if not all(one_value(run) for run in middle.values()) or canonical.tokens[p - 1].endswith("="):
        return None
    tokens = canonical.tokens[:p] + (SPAN,) + canonical.tokens[len(canonical.tokens) - s :]
    members = _members(family, tokens, blocked, config)
    if not members:
        return None
    group = (canonical, *members)
    values: dict[str, int] = defaultdict(int)
    for r in group:
        values[" ".join(middle[r.key])] += r.count
    if not (canonical.learned and middle[canonical.key] == (SPAN,)):  # a learned span takes late values
        if not slot_is_variable(values, config, _known_elsewhere(values, group, vocabulary, varying, config.known_in)):
            return None
    return Merge(canonical.key, tuple(r.key for r in members), p, tokens, tuple(sorted(values)[:20]), (p,))


def _applied(merge: Merge, live: dict[str, TemplateRow]) -> Merge:
    """Apply ``merge`` to the plan's rows: the members leave, the canonical takes their counts
    and the learned template."""
    canonical = live[merge.canonical]
    for key in merge.members:
        canonical.count += live.pop(key).count
    canonical.tokens = merge.tokens
    canonical.learned = True
    return merge


def _multi_searched(rows: int, width: int, config: MergeConfig) -> bool:
    return config.max_slots >= 2 and rows * (width - 1) * (width - 2) // 2 <= config.multi_budget


def _position_pairs(width: int) -> Iterable[tuple[int, int]]:
    return ((i, j) for i in range(1, width) for j in range(i + 1, width))


def _multi_merges(
    rows: list[TemplateRow],
    width: int,
    blocked: set[frozenset[str]],
    order: dict[str, int],
    config: MergeConfig,
    vocabulary: Mapping[tuple[str, str], int],
    varying: Mapping[str, Collection[int]],
) -> list[Merge]:
    """Merges of families equal except at two positions, both of which take several values.
    Each row joins at most one such merge per call (the next round sees the merged tokens)."""
    if len(rows) < 2 or not _multi_searched(len(rows), width, config):
        return []
    taken: set[str] = set()
    out: list[Merge] = []
    for i, j in _position_pairs(width):
        families: dict[tuple[str, ...], list[TemplateRow]] = defaultdict(list)
        for row in rows:
            if row.key not in taken:
                t = row.tokens
                families[t[:i] + t[i + 1 : j] + t[j + 1 :]].append(row)
        for family in families.values():
            if len(family) < 2 or len({r.tokens[i] for r in family}) < 2 or len({r.tokens[j] for r in family}) < 2:
                continue
            merge = _slots_merge(family, (i, j), blocked, order, config, vocabulary, varying)
            if merge is not None:
                out.append(merge)
                taken.update((merge.canonical, *merge.members))
    return out


def _members(family: list[TemplateRow], tokens: tuple[str, ...], blocked: set[frozenset[str]],
             config: MergeConfig) -> list[TemplateRow]:
    """The rows that may join ``family[0]`` (the canonical) with the merged ``tokens``: none
    when those keep too few constants, else every row not split from it by an operator."""
    constants = sum(1 for t in tokens if not _wild(t))
    if constants < config.min_constants or constants < config.min_constant_share * len(tokens):
        return []
    return [r for r in family[1:] if frozenset((r.key, family[0].key)) not in blocked]


def _slots_merge(
    family: list[TemplateRow],
    positions: tuple[int, ...],
    blocked: set[frozenset[str]],
    order: dict[str, int],
    config: MergeConfig,
    vocabulary: Mapping[tuple[str, str], int],
    varying: Mapping[str, Collection[int]],
) -> Merge | None:
    """The merge of a family equal except at ``positions``, or None: each slot passes the
    guards on its own (closed set, known elsewhere, values), the merged template keeps
    enough constants, no pair is blocked. The family's oldest row is the canonical."""
    family = sorted(family, key=lambda r: order[r.key])
    canonical = family[0]
    if any(_keyish(canonical.tokens, i) for i in positions):
        return None
    members = _members(family, tuple(WILDCARD if j in positions else t for j, t in enumerate(canonical.tokens)),
                       blocked, config)
    if not members:
        return None
    group = (canonical, *members)
    for i in positions:
        values: dict[str, int] = defaultdict(int)
        for r in group:
            values[r.tokens[i]] += r.count
        if canonical.learned and _wild(canonical.tokens[i]):
            continue  # a slot a merge made variable takes late values
        if not slot_is_variable(values, config, _known_elsewhere(values, group, vocabulary, varying, config.known_in)):
            return None
    tokens = tuple((SPAN if any(r.tokens[j] == SPAN for r in group) else WILDCARD) if j in positions else t
                   for j, t in enumerate(canonical.tokens))
    joined = sorted({" ".join(r.tokens[i] for i in positions) for r in group})
    return Merge(canonical.key, tuple(r.key for r in members), positions[0], tokens, tuple(joined[:20]), positions)


def candidate_values(rows: Iterable[TemplateRow], config: MergeConfig = MergeConfig()) -> set[str]:
    """The tokens at a slot where two templates of one bucket differ (at one position, or at
    two where :func:`plan_merges` searches two): the only values whose vocabulary counts a
    pass needs (the rest of a bucket's tokens are never judged)."""
    rows = list(rows)
    out: set[str] = set()
    buckets: dict[tuple[str, int], list[tuple[str, ...]]] = defaultdict(list)
    for row in rows:
        buckets[(row.error_type, len(row.tokens))].append(row.tokens)
    for (_, width), members in buckets.items():
        for i in range(width):
            seen: dict[tuple[str, ...], str] = {}
            for toks in members:
                rest = toks[:i] + toks[i + 1 :]
                first = seen.setdefault(rest, toks[i])
                if first != toks[i]:
                    out.update((first, toks[i]))
        if not _multi_searched(len(members), width, config):
            continue
        for i, j in _position_pairs(width):
            pairs: dict[tuple[str, ...], tuple[str, str]] = {}
            for toks in members:
                first = pairs.setdefault(toks[:i] + toks[i + 1 : j] + toks[j + 1 :], (toks[i], toks[j]))
                if first != (toks[i], toks[j]):
                    out.update((*first, toks[i], toks[j]))
    for p, s, family in _span_families(rows, config):  # the single-token runs a span merge judges
        out.update(r.tokens[p] for r in family if len(r.tokens) == p + s + 1)
    out.discard(WILDCARD)
    out.discard(SPAN)
    return out


def vocabulary_of(rows: Iterable[TemplateRow]) -> Counter[tuple[str, str]]:
    """(error type, token) -> the number of templates of that error type holding the token."""
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        counts.update((row.error_type, t) for t in set(row.tokens) if t != WILDCARD)
    return counts


def constant_vocabulary(
    rows: Iterable[TemplateRow], varying: Mapping[str, Collection[int]] | None = None
) -> Counter[tuple[str, str]]:
    """As :func:`vocabulary_of`, counting a token only where it is a constant: not at a slot
    where the template has a sibling (same error type and width, equal elsewhere) with
    another token there (``varying``: :func:`varying_positions` of ``rows``)."""
    rows = list(rows)
    if varying is None:
        varying = varying_positions(rows)
    counts: Counter[tuple[str, str]] = Counter()
    for row in rows:
        skip = varying.get(row.key, ())
        counts.update((row.error_type, t) for t in {t for j, t in enumerate(row.tokens) if j not in skip} if t != WILDCARD)
    return counts


def varying_positions(rows: Iterable[TemplateRow]) -> dict[str, set[int]]:
    """hash -> the positions where the template has a sibling (same error type and width,
    equal elsewhere) with another token: where its tokens are values, not constants."""
    varying: dict[str, set[int]] = defaultdict(set)
    buckets: dict[tuple[str, int], list[TemplateRow]] = defaultdict(list)
    for row in rows:
        buckets[(row.error_type, len(row.tokens))].append(row)
    for (_, width), members in buckets.items():
        if len(members) < 2:
            continue
        for i in range(width):
            families: dict[tuple[str, ...], list[TemplateRow]] = defaultdict(list)
            for row in members:
                families[row.tokens[:i] + row.tokens[i + 1 :]].append(row)
            for family in families.values():
                if len(family) > 1:
                    for row in family:
                        varying[row.key].add(i)
    return varying


def _known_elsewhere(
    values: Mapping[str, int], family: Iterable[TemplateRow], vocabulary: Mapping[tuple[str, str], int],
    varying: Mapping[str, Collection[int]], least: int = 1,
) -> set[str]:
    """The values that are constants of templates outside the family (of its error type).
    ``vocabulary`` counts constants, the family's own too: a member counts where it holds the
    value at a position ``varying`` does not list for it (a one-position family's slot is
    listed; the slots of a family of two positions are not, and count here)."""
    family = list(family)
    error_type = family[0].error_type
    inside: Counter[str] = Counter()
    for row in family:
        skip = varying.get(row.key, ())
        inside.update(v for v in {t for j, t in enumerate(row.tokens) if j not in skip} if v in values)
    return {v for v in values if vocabulary.get((error_type, v), 0) - inside[v] >= least}


@dataclass(slots=True)
class AliasIndex:
    """The alias table as ingest uses it: ``resolve(error_type, template, hash)``.

    ``exact`` maps every merged (or remapped) hash to its canonical hash; ``learned`` maps
    (error_type, width) to the learned templates of that shape, each a tuple of tokens with
    ``<*>`` at its learned positions. Lookups are cached per (hash) in ``_memo``: a repeated
    error costs one dictionary lookup."""

    exact: dict[str, str] = field(default_factory=dict)
    learned: dict[tuple[str, int], dict[tuple[int, ...], dict[tuple[str, ...], str]]] = field(default_factory=dict)
    spans: dict[str, dict[tuple[int, int, tuple[int, ...]], dict[tuple[str, ...], str]]] = field(default_factory=dict)
    """error_type -> (prefix length, suffix length, ``<*>`` positions around the span) -> the
    learned template's tokens around its :data:`SPAN` -> canonical."""
    max_span: int = MAX_SPAN
    _memo: dict[str, str] = field(default_factory=dict)

    @classmethod
    def build(
        cls, aliases: Iterable[tuple[str, str]], templates: Iterable[tuple[str, str, Iterable[str]]]
    ) -> AliasIndex:
        """``aliases``: (from_hash, to_hash); ``templates``: (canonical hash, error_type, tokens)
        of every canonical error with a learned ``<*>``."""
        exact = dict(aliases)
        # follow chains (a -> b -> c) once here, so a lookup is one step
        for k in list(exact):
            seen = {k}
            target = exact[k]
            while target in exact and target not in seen:
                seen.add(target)
                target = exact[target]
            exact[k] = target
        learned: dict[tuple[str, int], dict[tuple[int, ...], dict[tuple[str, ...], str]]] = {}
        learned_spans: dict[str, dict[tuple[int, int, tuple[int, ...]], dict[tuple[str, ...], str]]] = {}
        for key, error_type, toks in templates:
            toks = tuple(toks)
            if toks.count(SPAN) == 1:
                p = toks.index(SPAN)
                around = toks[:p] + toks[p + 1 :]
                wild = tuple(i for i, t in enumerate(around) if t == WILDCARD)
                shape = learned_spans.setdefault(error_type, {}).setdefault((p, len(toks) - p - 1, wild), {})
                shape.setdefault(around, exact.get(key, key))
                continue
            positions = tuple(i for i, t in enumerate(toks) if t == WILDCARD)
            if not positions:
                continue
            shapes = learned.setdefault((error_type, len(toks)), {})
            shapes.setdefault(positions, {}).setdefault(toks, exact.get(key, key))
        return cls(exact, learned, learned_spans)

    def __len__(self) -> int:
        return len(self.exact)

    def resolve(self, error_type: str, template: str, key: str) -> str:
        """The canonical hash for an error whose own hash is ``key``; ``key`` if none."""
        memo = self._memo.get(key)
        if memo is not None:
            return memo
        found = self.exact.get(key)
        if found is None and self.learned:
            found = self._learned(error_type, template)
        if found is None and self.spans:
            found = self._span(error_type, template)
        result = found or key
        if len(self._memo) >= 65536:
            self._memo.clear()
        self._memo[key] = result
        return result

    def _learned(self, error_type: str, template: str) -> str | None:
        toks = template.split()
        shapes = self.learned.get((error_type, len(toks)))
        if not shapes:
            return None
        for positions, by_tokens in shapes.items():
            probe = list(toks)
            for p in positions:
                probe[p] = WILDCARD
            found = by_tokens.get(tuple(probe))
            if found is not None:
                return self.exact.get(found, found)
        return None

    def _span(self, error_type: str, template: str) -> str | None:
        """The canonical of a learned span template equal to ``template`` around a run of 1 to
        ``max_span`` of its tokens."""
        shapes = self.spans.get(error_type)
        if not shapes:
            return None
        toks = template.split()
        for (p, s, wild), by_tokens in shapes.items():
            if not 1 <= len(toks) - p - s <= self.max_span:
                continue
            probe = toks[:p] + toks[len(toks) - s :]
            for i in wild:
                probe[i] = WILDCARD
            found = by_tokens.get(tuple(probe))
            if found is not None:
                return self.exact.get(found, found)
        return None
