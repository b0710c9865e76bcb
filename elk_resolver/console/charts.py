"""The hourly chart with axes, as numbers for inline SVG (no script, no inline style: the
Content-Security-Policy allows neither, and a chart must read without JavaScript).

The y axis counts occurrences per hour (0, a round middle, a round top); the x axis marks the
hours in UTC every few hours, so a bar says when and how many at a glance. Bars are placed in
percent of the width and pixels of the height, so the chart stretches from a phone to a wall
display without stretching its text."""

from __future__ import annotations

import math
from typing import Any

PLOT_H = 120  # px; console.css gives the plot this height


def nice_top(value: int) -> int:
    """A round top for the y axis, at or above ``value`` and at most a third above it (plus
    one for small counts): an even number up to 10, then 1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6 or 8
    times a power of ten."""
    if value <= 10:
        return max(2, value + value % 2)
    power = 10 ** math.floor(math.log10(value))
    for step in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if round(step * power) >= value:
            return round(step * power)
    return 10 * power  # pragma: no cover - the loop ends at 10 * power


def _count(n: float) -> str:
    return f"{n / 1000:g}k" if n >= 10_000 else f"{n:g}"


def hourly(trend: list[dict[str, Any]], *, labels: int = 6) -> dict[str, Any]:
    """``trend`` (one ``{"hour", "n"}`` per hour, oldest first) as bars and ticks."""
    top = nice_top(max((b["n"] for b in trend), default=0))
    slot = 100.0 / max(1, len(trend))
    bars = []
    for i, b in enumerate(trend):
        h = PLOT_H * b["n"] / top if b["n"] else 1.0
        bars.append({"x": round(i * slot + slot * 0.1, 3), "w": round(slot * 0.8, 3), "y": round(PLOT_H - h, 1),
                     "h": round(h, 1), "n": b["n"], "hour": b["hour"]})
    every = max(1, math.ceil(len(trend) / labels))
    x_ticks = [{"x": round(i * slot + slot / 2, 3),
                "label": f"{b['hour']:%b %d}" if b["hour"].hour == 0 and i else f"{b['hour']:%H:00}"}
               for i, b in enumerate(trend) if i % every == 0]
    return {"plot_h": PLOT_H, "bars": bars, "y_ticks": [_count(top), _count(top / 2), "0"], "x_ticks": x_ticks,
            "max": top, "total": sum(b["n"] for b in trend)}
