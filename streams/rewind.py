"""Partitions a stage must read from their start once, because the log its positions (and its
group's committed offsets) belonged to is gone: the topic was deleted and created again (a
broker restarted without its data, an operator) or truncated below the committed offset.

The watches find out (:mod:`streams.watch`) and every copy is told. A copy reads from the
start the partitions it holds now, and those it is given in the rebalances that follow, once
each: right after a re-creation the group is often rejoining, and the committed offset a
copy is then given may still be one from the old log. A request expires after
``expire_s``: later assignments carry offsets committed on the new log.

A rewind seeks to offset 0: on a log whose start moved past it the broker answers
OFFSET_OUT_OF_RANGE and the consumer's ``auto_offset_reset="earliest"`` takes it to the start.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from typing import Any


class Rewinds:
    def __init__(self, expire_s: float = 60.0, *, clock=time.monotonic) -> None:
        self.expire_s = expire_s
        self._clock = clock
        self._whole: dict[str, tuple[float, set[int]]] = {}
        """topic -> (when asked, partitions already read from their start)"""
        self._some: dict[tuple[str, int], float] = {}
        """(topic, partition) -> when asked"""

    def request(self, topic: str, partitions: set[int] | None) -> None:
        """Read ``partitions`` of ``topic`` (None: all) from their start, once each, as this
        copy holds them. Asked again, a partition is owed again: its log was re-created again."""
        now = self._clock()
        if partitions is None:
            self._whole[topic] = (now, set())
        else:
            for p in partitions:
                self._some[(topic, p)] = now

    def take(self, assigned: Iterable[Any]) -> list[Any]:
        """The partitions of ``assigned`` to seek to their start now (each only once)."""
        now = self._clock()
        self._whole = {t: v for t, v in self._whole.items() if now - v[0] <= self.expire_s}
        self._some = {k: since for k, since in self._some.items() if now - since <= self.expire_s}
        due = []
        for tp in assigned:
            whole = self._whole.get(tp.topic)
            owed_whole = whole is not None and tp.partition not in whole[1]
            owed_some = self._some.pop((tp.topic, tp.partition), None) is not None
            if owed_whole:
                whole[1].add(tp.partition)
            if owed_whole or owed_some:
                due.append(tp)
        return sorted(due)
