"""A plain-text progress bar on stderr (no tqdm): redrawn in place on a terminal, one line
every few seconds otherwise (CI logs, pipes)."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None,
                 width: int = 30, every_s: float = 2.0) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self.stream = stream or sys.stderr
        self.width = width
        self.every_s = every_s
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.started = time.monotonic()
        self._last = 0.0 if self.tty else self.started  # a short run prints just its last line

    def update(self, n: int = 1, *, total: int | None = None) -> None:
        self.done += n
        if total is not None:
            self.total = total
        now = time.monotonic()
        if self.tty and now - self._last >= 0.1 or now - self._last >= self.every_s:
            self._draw(now)

    def line(self, now: float | None = None) -> str:
        elapsed = max(1e-6, (now or time.monotonic()) - self.started)
        rate = self.done / elapsed
        if self.total:
            frac = min(1.0, self.done / self.total)
            filled = int(frac * self.width)
            bar = "#" * filled + "-" * (self.width - filled)
            return f"{self.label} [{bar}] {self.done}/{self.total} {frac:4.0%} {rate:,.0f}/s"
        return f"{self.label} {self.done} {rate:,.0f}/s"

    def _draw(self, now: float) -> None:
        self._last = now
        if self.tty:
            self.stream.write("\r" + self.line(now))
        else:
            self.stream.write(self.line(now) + "\n")
        self.stream.flush()

    def close(self) -> None:
        now = time.monotonic()
        if self.tty:
            self.stream.write("\r" + self.line(now) + "\n")
        else:
            self.stream.write(self.line(now) + " done\n")
        self.stream.flush()
