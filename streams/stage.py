"""What every stage gives the app: something to start, stop and ask about readiness.

Each ``streams/<stage>.py`` exposes ``build_<stage>(settings, *, pool, broker) -> Stage``.
The app (``streams/app.py``) builds the stages the operator asked for, starts them after the
broker and the pool, and stops them (draining in-flight work) before closing either.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable


@runtime_checkable
class Stage(Protocol):
    name: str

    async def start(self) -> None:
        """Join the consumer group and begin consuming; return once started."""

    async def stop(self) -> None:
        """Finish or abandon (uncommitted) in-flight work, commit what is done, leave the group."""

    @property
    def ready(self) -> bool:
        """True once the consumer has partitions assigned (and its dependencies answer)."""
