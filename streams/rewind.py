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
    def __init__(self, expire_s: float = 60.0) -> None:
        self.expire_s = expire_s
        self._pending: dict[str, tuple[set[int] | None, float, set[int]]] = {}

    def request(self, topic: str, partitions: set[int] | None) -> None:
        """Read ``partitions`` of ``topic`` (None: all) from their start, once each, as this copy holds them."""
        current = self._pending.get(topic)
        if current is not None and partitions is not None and current[0] is not None:
            partitions = partitions | current[0]
        elif current is not None and current[0] is None:
            partitions = None
        self._pending[topic] = (partitions, time.monotonic(), set())

    def take(self, assigned: Iterable[Any]) -> list[Any]:
        """The partitions of ``assigned`` to seek to their start now (each only once)."""
        now = time.monotonic()
        for topic in [t for t, (_, since, _) in self._pending.items() if now - since > self.expire_s]:
            del self._pending[topic]
        due = []
        for tp in assigned:
            pending = self._pending.get(tp.topic)
            if pending is None:
                continue
            partitions, _, done = pending
            if (partitions is None or tp.partition in partitions) and tp.partition not in done:
                done.add(tp.partition)
                due.append(tp)
        return sorted(due)
