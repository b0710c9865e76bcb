"""Did the fix help? The effect of an action measured against doing nothing (issue 25).

``success_rate`` (the design document's column) and ``verified_success_rate`` say how often an
action was followed by the error going away. Many errors go away by themselves, so that number
alone cannot tell a restart that helps from one that merely happens before the crash loop ends.
This module holds the pure parts of the comparison (no database, so property tests drive them):

* :func:`judge_case`: one request's outcome from the facts about its object, whatever their
  order or duplication: whether an action ran on the object during the case, why not, and
  whether and when the error stopped (the last error before a quiet verification window,
  within the horizon);
* :func:`not_acted_kind`: the request's own final decision read as one of a few kinds;
* :func:`wilson` and :func:`newcombe`: the 95 % interval of a proportion and of a difference of
  two (Newcombe's hybrid score interval, method 10 of Newcombe 1998), and :func:`effect_of`;
* :func:`trial_selects`: whether an observe-only trial leaves an eligible case alone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

Z95 = 1.96

# Why a case was not acted on, from its own request's final decision.
NOT_ACTED_KINDS = (
    "dry_run", "observe_only", "skipped", "budget", "hold", "rejected", "expired", "awaiting_approval",
    "kill_switch", "off", "stopped_by_itself", "switched_off", "denied", "dependency", "grace", "history",
    "undecided",
)  # fmt: skip

_SKIP_PREFIXES = (
    ("kill switch", "kill_switch"),
    ("execution_mode is off", "off"),
    ("cooldown", "budget"),
    ("rate limit", "budget"),
    ("fleet budget", "budget"),
    ("stopped by itself", "stopped_by_itself"),
    ("history", "history"),
    ("playbook", "switched_off"),
    ("pattern", "switched_off"),
    ("dependency", "dependency"),
    ("approval", "awaiting_approval"),
)


def not_acted_kind(decision: str | None, reason: str = "", approval_status: str | None = None) -> str:
    """The kind of a request's final decision that ran nothing (one of :data:`NOT_ACTED_KINDS`)."""
    if decision is None:
        return "undecided"
    if decision in ("dry_run", "observe_only", "denied"):
        return decision
    if decision == "held" or (decision == "skipped" and "already held" in reason):
        return "hold"
    if decision in ("pending_approval", "approved"):
        return {"rejected": "rejected", "expired": "expired"}.get(approval_status or "", "awaiting_approval")
    if decision == "skipped":
        text = reason.lower()
        return next((kind for prefix, kind in _SKIP_PREFIXES if text.startswith(prefix)), "skipped")
    return "skipped"


@dataclass(frozen=True)
class Decision:
    """One decision_log line of the request (``at``, then ``seq`` order it)."""

    seq: int
    decision: str
    reason: str
    at: datetime


@dataclass(frozen=True)
class Outcome:
    acted: bool
    acted_at: datetime | None
    not_acted: str | None
    not_acted_reason: str | None
    state: str  # open, resolved, unresolved
    resolved_at: datetime | None
    resolution_s: float | None


def judge_case(
    started_at: datetime,
    *,
    errors: Iterable[datetime],
    runs: Iterable[datetime],
    decisions: Iterable[Decision],
    approval_status: str | None,
    now: datetime,
    window_s: float,
    horizon_s: float,
    deferred: bool = False,
) -> Outcome:
    """The outcome of one case (a request) from the facts about its object.

    ``errors``: the times the error was seen on the object (any order, duplicates allowed);
    ``runs``: the times an action ran on the object (any request); ``decisions``: the request's
    own decision_log lines. Acted: a run on the object from one verification window before the
    case started (the object was just restarted) to the end of the horizon. Resolved: the error
    was quiet for ``window_s`` after its last occurrence, and that occurrence came within
    ``horizon_s`` of the start; unresolved: it was still seen past the horizon. Either is
    final only once the horizon and one window have passed (until then a run may still come,
    and the row says open, with what is known so far about the action).
    """
    window, horizon = timedelta(seconds=window_s), timedelta(seconds=horizon_s)
    seen = sorted({t for t in errors if t > started_at})
    last, state, resolved_at, quiet = started_at, "open", None, False
    for t in seen:
        if t - last >= window:
            quiet = True  # a quiet window after ``last``, even if the error came back later
            break
        last = t
        if last - started_at > horizon:
            state = "unresolved"
            break
    if state == "open" and (quiet or now - last >= window):
        state, resolved_at = "resolved", last
    if now < started_at + horizon + window:
        # a run may still come within the horizon, and with it another answer to "acted?": the
        # case is judged once, when its horizon (and one window) has passed
        state, resolved_at = "open", None
    acted_runs = sorted({t for t in runs if started_at - window <= t <= started_at + horizon and t <= now})
    acted_at = acted_runs[0] if acted_runs else None
    own = sorted(set(decisions), key=lambda d: (d.at, d.seq))
    final = next((d for d in reversed(own) if d.decision not in ("duplicate", "refused", "lost")), None)
    if acted_at is not None:
        kind, why = None, None
    elif deferred and final is None:
        kind, why = "grace", "waiting out the grace period"
    else:
        kind = not_acted_kind(final.decision if final else None, final.reason if final else "", approval_status)
        why = final.reason if final else None
    resolution = (resolved_at - started_at).total_seconds() if resolved_at is not None else None
    return Outcome(acted_at is not None, acted_at, kind, why, state, resolved_at, resolution)


# --- statistics ------------------------------------------------------------------------------


def wilson(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion; (0, 1) with no cases."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2 = z * z
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    margin = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - margin), min(1.0, centre + margin)


def newcombe(r1: int, n1: int, r0: int, n0: int, z: float = Z95) -> tuple[float, float, float]:
    """The difference p1 - p0 of two proportions and its hybrid score interval (Newcombe 1998,
    method 10: each proportion's Wilson interval, combined); good at small n and near 0 or 1,
    where the Wald interval is too narrow."""
    p1, p0 = r1 / n1, r0 / n0
    l1, u1 = wilson(r1, n1, z)
    l0, u0 = wilson(r0, n0, z)
    d = p1 - p0
    low = d - math.sqrt((p1 - l1) ** 2 + (u0 - p0) ** 2)
    high = d + math.sqrt((u1 - p1) ** 2 + (p0 - l0) ** 2)
    return d, max(-1.0, low), min(1.0, high)


@dataclass(frozen=True)
class Arm:
    cases: int
    resolved: int
    median_s: float | None

    @property
    def rate(self) -> float | None:
        return self.resolved / self.cases if self.cases else None


@dataclass(frozen=True)
class Effect:
    """Cases acted on and left alone, and the uplift (difference of resolution rates)."""

    comparison: str  # 'trial' (random) or 'left alone' (every case nothing ran on)
    acted: Arm
    left: Arm
    uplift: float | None
    low: float | None
    high: float | None
    resolved_in_grace: float | None = None

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> Effect:
        """From a solution's ``effect_*`` columns (migration 0120)."""
        acted = Arm(row["effect_acted_cases"] or 0, row["effect_acted_resolved"] or 0, None)
        left = Arm(row["effect_left_cases"] or 0, row["effect_left_resolved"] or 0, None)
        return cls(row["effect_comparison"] or "left alone", acted, left, row["effect_uplift"],
                   row["effect_uplift_low"], row["effect_uplift_high"])  # fmt: skip

    def enough(self, min_cases: int) -> bool:
        return self.acted.cases >= min_cases and self.left.cases >= min_cases

    def describe(self) -> str:
        if self.uplift is None:
            return f"effect unknown ({self.acted.cases} acted, {self.left.cases} left alone)"
        return (
            f"uplift {self.uplift * 100:+.0f} points [{self.low * 100:+.0f}, {self.high * 100:+.0f}] ({self.comparison}:"
            f" {self.acted.resolved}/{self.acted.cases} acted vs {self.left.resolved}/{self.left.cases} left alone resolved)"
        )


def arm(outcomes: Sequence[tuple[bool, float | None]]) -> Arm:
    """``outcomes``: (resolved, seconds to resolution) per case."""
    times = [s for ok, s in outcomes if ok and s is not None]
    return Arm(len(outcomes), sum(1 for ok, _ in outcomes if ok), statistics.median(times) if times else None)


def effect_of(comparison: str, acted: Arm, left: Arm, resolved_in_grace: float | None = None) -> Effect:
    if not acted.cases or not left.cases:
        return Effect(comparison, acted, left, None, None, None, resolved_in_grace)
    d, low, high = newcombe(acted.resolved, acted.cases, left.resolved, left.cases)
    return Effect(comparison, acted, left, d, low, high, resolved_in_grace)


def no_effect_reason(uplift_low: float | None, acted: int, left: int, min_cases: int, described: str = "") -> str | None:
    """Why a solution is not automatic on its measured effect (else None): with at least
    ``min_cases`` on both sides, the lower bound of its uplift is not above zero."""
    if uplift_low is None or acted < min_cases or left < min_cases or uplift_low > 0:
        return None
    return (
        f"no measured effect: the error resolves as often without this action ({described or f'uplift lower bound {uplift_low * 100:+.0f} points'});"
        " a person decides"
    )


# --- observe-only trials ------------------------------------------------------------------------


def trial_selects(
    *, draw: float, fraction: float, namespace: str | None, critical: Iterable[str], left_in_window: int, max_per_window: int
) -> tuple[bool, str]:
    """Whether an observe-only trial leaves this eligible case alone, and why (or why not).
    ``draw`` is uniform in [0, 1); the case is left alone when ``draw < fraction``, never in a
    critical namespace (or one nobody knows), never once ``max_per_window`` cases were left alone
    in the window."""
    if namespace is None or namespace in set(critical):
        return False, f"namespace {namespace or '(none)'} is critical: trials never leave its cases alone"
    if left_in_window >= max_per_window:
        return False, f"{left_in_window} cases already left alone in the trial window (trial_max_per_window={max_per_window})"
    if draw < fraction:
        return True, f"drawn {draw:.3f} < {fraction:g}"
    return False, f"drawn {draw:.3f} >= {fraction:g}"
