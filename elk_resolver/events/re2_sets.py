"""RE2 sets as this service builds them (masking, the fingerprint's rule gates, playbook
matching; classification adds its rows one by one to report the bad ones): which patterns
match, no captures, a memory budget that follows the set's size."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import re2


def set_memory_budget(patterns: int) -> int:
    """``max_mem`` for an RE2 set of ``patterns`` regexes: 16 MiB and 256 KiB a pattern, at
    most 256 MiB. The DFA's state cache fills up to about two thirds of it over a long run of
    fresh text and is then flushed and rebuilt, so the budget bounds what the process keeps
    for it (sets had 64 or 256 MiB whatever their size). A small budget never makes a set
    miss: RE2's set DFA does not give up when its cache thrashes (it cannot fall back to the
    NFA), and one that cannot hold its states fails at ``Compile``, loudly, not at ``Match``."""
    return min(256 << 20, (16 << 20) + patterns * (256 << 10))


def compile_set(patterns: Iterable[str]) -> Any:
    """An unanchored ``re2.Set`` of ``patterns``, compiled; ``Match`` gives the indices of
    those that match, in the order given (``._set.Match`` is the same on bytes, without the
    wrapper's type test)."""
    patterns = list(patterns)
    options = re2.Options()
    options.never_capture = True  # only "which patterns matched" is asked
    options.max_mem = set_memory_budget(len(patterns))
    compiled = re2.Set.SearchSet(options)
    for pattern in patterns:
        compiled.Add(pattern)
    compiled.Compile()
    return compiled
