"""How much memory an RE2 set may keep for its DFA (classification, masking, playbook matching)."""

from __future__ import annotations


def set_memory_budget(patterns: int) -> int:
    """``max_mem`` for an RE2 set of ``patterns`` regexes: 16 MiB and 256 KiB a pattern, at
    most 256 MiB. The DFA's state cache fills up to about two thirds of it over a long run of
    fresh text and is then flushed and rebuilt, so the budget is resident memory the process
    keeps (256 MiB for 30 patterns grew an ingest process past 350 MB over 200,000 events).
    A small budget never makes a set miss: RE2's set DFA does not give up when its cache
    thrashes (it cannot fall back to the NFA), and one that cannot hold its states fails at
    ``Compile``, loudly, not at ``Match``."""
    return min(256 << 20, (16 << 20) + patterns * (256 << 10))
