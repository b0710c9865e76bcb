"""Classification of an error against the ``error_patterns`` rows.

The rows are user-written regexes in Python/PCRE syntax. They run on RE2 (google-re2), whose
matching time is linear in the text, so a pattern such as ``(a+)+$`` cannot stall the
consumer. RE2 has no backreferences or look-around; a pattern it cannot compile is skipped
with one warning on the ``elk_resolver.events.classify`` logger and listed in
:attr:`PatternSet.invalid`, never raised.

Order: ``priority`` ascending (1 is the highest; ``NULL`` counts as the column default 5),
then ``id``. :meth:`PatternSet.match` returns the first row in that order whose regex
matches the message; only when *no* row matches the message is the ECS ``error.type``
tried, in the same order. The message is the text the patterns are written for (the
design's samples are all message phrases); the error type (``java.lang.OutOfMemoryError``)
is a fallback signal, and trying it separately keeps ``^``/``$`` in a pattern meaning the
start and end of the message.

Cost does not grow with the number of patterns: all of them are compiled into one
``re2.Set``, which reports in one linear pass over the text *every* pattern that matches.
The set's indices follow the priority order, so the smallest reported index is exactly the
row an ordered loop over the patterns would return first.

Semantics kept from Python ``re.search``: unanchored search, case-sensitive unless the
regex says ``(?i)``, ``.`` does not match a newline, ``^``/``$`` anchor the whole text
unless ``(?m)``. Differences: ``\\Z`` is rewritten to RE2's ``\\z``; RE2's ``$`` does not
also match before a final newline; ``\\d``, ``\\w``, ``\\b`` are ASCII-only in RE2.
An empty regex (which would match every message) is reported as invalid.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import re2

from elk_resolver.events.re2_sets import set_memory_budget

__all__ = ["DEFAULT_PRIORITY", "PatternRow", "PatternSet", "to_re2_syntax"]

log = logging.getLogger("elk_resolver.classify")

DEFAULT_PRIORITY = 5  # error_patterns.priority DEFAULT 5


@dataclass(slots=True, frozen=True)
class PatternRow:
    id: int
    pattern_name: str
    pattern_regex: str
    error_category: str
    priority: int | None = DEFAULT_PRIORITY
    auto_resolve: bool = False
    fingerprint_fields: tuple[str, ...] | None = None
    """fingerprint errors of this pattern from these fields instead of the message template
    (see :func:`elk_resolver.events.fingerprint.rule_fingerprint`); None: the template."""

    @classmethod
    def from_mapping(cls, row: Mapping[str, Any]) -> PatternRow:
        """From an ``error_patterns`` row (an asyncpg ``Record`` or a dict)."""
        return cls(
            id=row["id"],
            pattern_name=row["pattern_name"],
            pattern_regex=row["pattern_regex"],
            error_category=row["error_category"],
            priority=row["priority"],
            auto_resolve=bool(row["auto_resolve"]),
            fingerprint_fields=tuple(row.get("fingerprint_fields") or ()) or None,
        )

    @property
    def sort_key(self) -> tuple[int, int]:
        return (DEFAULT_PRIORITY if self.priority is None else self.priority, self.id)


def to_re2_syntax(pattern: str) -> str:
    """Rewrite the Python-only spellings RE2 would reject but means the same: ``\\Z``."""
    if "\\Z" not in pattern:
        return pattern
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1]
            out.append("\\z" if nxt == "Z" else ch + nxt)
            i += 2
        else:
            out.append(ch)
            i += 1
    return "".join(out)


def _options(*, log_errors: bool, patterns: int = 0) -> Any:
    options = re2.Options()
    options.never_capture = True  # only "which patterns matched" is asked
    options.max_mem = set_memory_budget(patterns)
    # Compile errors are reported through our logger; a DFA running out of memory while
    # matching is left to RE2's own stderr line, as it has no other way to surface.
    options.log_errors = log_errors
    return options


class PatternSet:
    """The valid patterns, ready to match. Immutable; build a new one when the table changes."""

    __slots__ = ("_set", "invalid", "rows")

    rows: tuple[PatternRow, ...]
    """The valid rows, in match order (priority, then id)."""
    invalid: list[tuple[int, str]]
    """``(id, reason)`` of each row skipped because its regex is unusable."""

    def __init__(self, rows: Iterable[PatternRow | Mapping[str, Any]]) -> None:
        ordered = sorted(
            (r if isinstance(r, PatternRow) else PatternRow.from_mapping(r) for r in rows),
            key=lambda r: r.sort_key,
        )
        check_options = _options(log_errors=False)
        valid: list[PatternRow] = []
        self.invalid = []
        compiled = re2.Set.SearchSet(_options(log_errors=True, patterns=len(ordered)))
        for row in ordered:
            reason = self._check(row, check_options)
            if reason is None:
                try:
                    compiled.Add(to_re2_syntax(row.pattern_regex))
                except re2.error as exc:  # compiled alone but not in the set: same treatment
                    reason = str(exc)
            if reason is not None:
                log.warning(
                    "error_patterns id=%s name=%r skipped: %s (regex %r)",
                    row.id,
                    row.pattern_name,
                    reason,
                    row.pattern_regex,
                )
                self.invalid.append((row.id, reason))
                continue
            valid.append(row)
        compiled.Compile()
        self._set = compiled
        self.rows = tuple(valid)

    @staticmethod
    def _check(row: PatternRow, options: Any) -> str | None:
        """Why the row's regex cannot be used, or ``None``. Compiling alone gives RE2's
        own error text (``re2.Set.Add`` only says that it failed)."""
        regex = row.pattern_regex
        if not isinstance(regex, str) or not regex:
            return "empty pattern would match every message"
        try:
            re2.compile(to_re2_syntax(regex), options)
        except re2.error as exc:
            return f"not supported by RE2 (linear-time engine; no backreferences or look-around): {exc}"
        return None

    def __len__(self) -> int:
        return len(self.rows)

    def match(self, message: str, error_type: str | None = None) -> PatternRow | None:
        """The first row, by (priority, id), whose regex matches ``message``; if none does,
        the first whose regex matches ``error_type``; else ``None``."""
        if not self.rows:
            return None
        hits = self._set.Match(message)
        if hits is None and error_type:
            hits = self._set.Match(error_type)
        return None if hits is None else self.rows[min(hits)]
