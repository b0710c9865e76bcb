"""Learned merges: templates equal except at one position whose values vary a lot are one error.

One message cannot tell a variable word (a user name, a generated id the rules missed) from a
constant one; many messages can. :func:`plan_merges` looks at stored templates (token arrays)
of one error type and length, and where a *family* is equal except at one position that has
taken many distinct values, it plans to merge the family into its oldest member, with a
``<*>`` at that position. Pure and deterministic: the merge pass (elk_resolver/store/merge_pass.py)
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

from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

WILDCARD = "<*>"


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
    min_values: int = 5
    """distinct values a slot must have taken (chosen on the dev half of LogHub-2k)."""
    generated_weight: int = 1
    """what a ``<*>`` value counts for (more than 1 merged closed sets: dcache/icache/<*>)."""
    max_repeat_share: float = 0.6
    """at most this share of the family's occurrences may come from values seen 3+ times."""
    repeat_at: int = 3
    word_factor: int = 2
    """a slot whose values are all plain words needs this many times ``min_values``."""
    min_constants: int = 2
    """the merged template keeps at least this many tokens that are not ``<*>``..."""
    min_constant_share: float = 0.34
    """... and at least this share of its tokens: a template of placeholders says nothing."""


@dataclass(frozen=True, slots=True)
class Merge:
    canonical: str
    members: tuple[str, ...]
    """hashes merged into ``canonical`` (the canonical itself excluded)."""
    position: int
    tokens: tuple[str, ...]
    """the canonical's template after the merge (``<*>`` at ``position``)."""
    values: tuple[str, ...]
    """distinct values the slot took (sorted, at most 20): why they were merged."""

    def reason(self) -> dict:
        return {"rule": "merge-pass", "position": self.position, "values": list(self.values)}


def _generated(value: str) -> bool:
    # Only the template's own placeholder: a short vowel-free word (HTTPS, TCP) is an acronym,
    # and a long one is a placeholder already (fingerprint's vowel-free class).
    return value == WILDCARD


def _keyish(tokens: tuple[str, ...], i: int) -> bool:
    """The first token (what happened) or a key (``key=``/``key:``) is never a variable."""
    return i == 0 or tokens[i].endswith(("=", ":"))


def _word(value: str) -> bool:
    """A plain word (letters only, lower case or capitalised or all capitals): the shape of
    states, verbs and component names, and of user names too; an id has other characters."""
    return value.isalpha() and (value.islower() or value.isupper() or value[1:].islower())


def slot_is_variable(values: Mapping[str, int], config: MergeConfig = MergeConfig()) -> bool:
    """``values``: occurrences per distinct value at one slot of one family."""
    weight = sum(config.generated_weight if _generated(v) else 1 for v in values)
    needed = config.min_values
    if all(_word(v) for v in values):
        needed *= config.word_factor  # a closed set of words (states...) is rarely this large
    if weight < needed:
        return False
    total = sum(values.values())
    repeated = sum(n for v, n in values.items() if n >= config.repeat_at and not _generated(v))
    return repeated <= config.max_repeat_share * total


def plan_merges(
    rows: Iterable[TemplateRow],
    *,
    blocked: Collection[frozenset[str]] = (),
    config: MergeConfig = MergeConfig(),
) -> list[Merge]:
    """Merges to record, in order; later ones may absorb the canonical of earlier ones.

    ``rows`` in age order (oldest first): the oldest member of a family is its canonical, so
    an error keeps its id, solutions and history when newer variants join it."""
    live: dict[str, TemplateRow] = {}
    order: dict[str, int] = {}
    for n, row in enumerate(rows):
        live[row.key] = TemplateRow(row.key, row.error_type, row.tokens, row.count, row.learned)
        order[row.key] = n
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
            for i in range(1, width):
                # each row is in one family per position, so merges at this position cannot
                # touch another family of it; the next position sees the merged tokens
                families: dict[tuple[str, ...], list[TemplateRow]] = defaultdict(list)
                for key in keys:
                    row = live.get(key)
                    if row is not None:
                        families[row.tokens[:i] + row.tokens[i + 1 :]].append(row)
                for family in families.values():
                    merge = _family_merge(family, i, blocked_set, order, config)
                    if merge is None:
                        continue
                    merges.append(merge)
                    canonical = live[merge.canonical]
                    for key in merge.members:
                        canonical.count += live.pop(key).count
                    canonical.tokens = merge.tokens
                    canonical.learned = True
                    changed = True
    return merges


def _family_merge(
    family: list[TemplateRow],
    i: int,
    blocked: set[frozenset[str]],
    order: dict[str, int],
    config: MergeConfig,
) -> Merge | None:
    if len(family) < 2:
        return None
    family = sorted(family, key=lambda r: order[r.key])
    canonical = family[0]
    if _keyish(canonical.tokens, i):
        return None
    constants = sum(1 for j, t in enumerate(canonical.tokens) if j != i and t != WILDCARD)
    if constants < config.min_constants or constants < config.min_constant_share * len(canonical.tokens):
        return None
    members = [r for r in family[1:] if frozenset((r.key, canonical.key)) not in blocked]
    if not members:
        return None
    values: dict[str, int] = defaultdict(int)
    for r in (canonical, *members):
        values[r.tokens[i]] += r.count
    # a slot a merge made variable takes late values (rows a copy stored before it reloaded)
    known = canonical.learned and canonical.tokens[i] == WILDCARD
    if not known and not slot_is_variable(values, config):
        return None
    tokens = canonical.tokens[:i] + (WILDCARD,) + canonical.tokens[i + 1 :]
    return Merge(canonical.key, tuple(r.key for r in members), i, tokens, tuple(sorted(values)[:20]))


@dataclass(slots=True)
class AliasIndex:
    """The alias table as ingest uses it: ``resolve(error_type, template, hash)``.

    ``exact`` maps every merged (or remapped) hash to its canonical hash; ``learned`` maps
    (error_type, width) to the learned templates of that shape, each a tuple of tokens with
    ``<*>`` at its learned positions. Lookups are cached per (hash) in ``_memo``: a repeated
    error costs one dictionary lookup."""

    exact: dict[str, str] = field(default_factory=dict)
    learned: dict[tuple[str, int], dict[tuple[int, ...], dict[tuple[str, ...], str]]] = field(default_factory=dict)
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
        for key, error_type, toks in templates:
            toks = tuple(toks)
            positions = tuple(i for i, t in enumerate(toks) if t == WILDCARD)
            if not positions:
                continue
            shapes = learned.setdefault((error_type, len(toks)), {})
            shapes.setdefault(positions, {}).setdefault(toks, exact.get(key, key))
        return cls(exact, learned)

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
