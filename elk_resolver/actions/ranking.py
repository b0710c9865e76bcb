"""Choose one solution among the candidates known for an error hash.

The score of a candidate is the lower bound of the Wilson score interval (z = 1.96, a 95%
two-sided interval) of its success probability. A raw success rate would let a solution that
worked once (1/1 = 100%) beat one that worked nine times out of ten; the lower bound asks
"how good is it at least, given how little we know", so 9/10 (0.60) beats 1/1 (0.21).

Evidence: outcome-verified counts (the monitor saw the error stop after the run) are used
whenever a candidate has any verified run, because "the command exited 0" is a weaker signal
than "the error went away". Otherwise the execution counts are used.

Exploration: a candidate that has never run has no lower bound worth comparing (a Beta(1, 1)
prior's 2.5% quantile is 0.025, so it would always lose). The rule is explicit instead:
an untried candidate is chosen when no tried, untripped candidate reaches
``explore_below`` (default 0.5); among untried candidates the lowest id (the oldest) goes first.
A proven candidate (lower bound >= ``explore_below``) always wins over untried ones.

Tripped candidates (circuit breaker open) are ranked after every other candidate. If all are
tripped the best tripped one is still returned, with ``Choice.tripped`` set, so the caller can
decide (normally: do not run, ask a human).

Ties: a higher score first, then a trusted candidate, then the lower id.

Effect (issue 25): a candidate whose measured effect has enough cases on both sides (acted on
and left alone, ``effect_min_cases`` each) carries ``uplift_low``, the lower bound of the
difference between its resolution rate and the rate of cases left alone. Such candidates are
ranked by it: those above zero first (best lower bound first), ahead of everything else; those
not above zero after every candidate without that evidence (the execute stage does not run them
automatically). Candidates without enough cases keep the rules above.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

DEFAULT_Z = 1.96
DEFAULT_EXPLORE_BELOW = 0.5


@dataclass(frozen=True, slots=True)
class Candidate:
    id: int
    successes: int = 0
    executions: int = 0
    verified_successes: int | None = None
    verified_runs: int | None = None
    tripped: bool = False
    trusted: bool = False
    created_at: datetime | None = None
    uplift_low: float | None = None
    """lower bound of the measured uplift, set only with enough cases on both sides"""

    @classmethod
    def from_rate(cls, id: int, success_rate: float | Decimal, execution_count: int, **kwargs: object) -> Candidate:
        """From ``solutions.success_rate`` (percent, 0-100) and ``execution_count``."""
        runs = max(0, int(execution_count))
        successes = round(float(success_rate) / 100.0 * runs)
        return cls(id=id, successes=max(0, min(successes, runs)), executions=runs, **kwargs)  # type: ignore[arg-type]

    def evidence(self) -> tuple[int, int, bool]:
        """``(successes, runs, verified)``: verified outcomes when there are any."""
        if self.verified_runs:
            return (self.verified_successes or 0), self.verified_runs, True
        return self.successes, self.executions, False

    @property
    def tried(self) -> bool:
        return self.evidence()[1] > 0


@dataclass(frozen=True, slots=True)
class Scored:
    candidate: Candidate
    score: float | None  # None: untried
    successes: int
    runs: int
    verified: bool

    def describe(self) -> str:
        c = self.candidate
        if self.score is None:
            text = f"#{c.id} untried"
        else:
            kind = " verified" if self.verified else ""
            text = f"#{c.id} wilson_lb={self.score:.2f} ({self.successes}/{self.runs}{kind})"
        if c.uplift_low is not None:
            text += f" uplift_lb={c.uplift_low * 100:+.0f}pts"
        if c.tripped:
            text += " [tripped]"
        return text


@dataclass(frozen=True, slots=True)
class Choice:
    candidate: Candidate
    reason: str
    score: float | None
    ranked: list[Scored] = field(default_factory=list)

    @property
    def tripped(self) -> bool:
        return self.candidate.tripped

    @property
    def explored(self) -> bool:
        return self.score is None


def wilson_lower_bound(successes: int, runs: int, z: float = DEFAULT_Z) -> float:
    """Lower bound of the Wilson score interval; 0.0 for no runs."""
    if runs <= 0:
        return 0.0
    successes = max(0, min(successes, runs))
    p = successes / runs
    z2 = z * z
    centre = p + z2 / (2 * runs)
    margin = z * math.sqrt(p * (1 - p) / runs + z2 / (4 * runs * runs))
    return max(0.0, (centre - margin) / (1 + z2 / runs))


def score(candidate: Candidate, z: float = DEFAULT_Z) -> Scored:
    successes, runs, verified = candidate.evidence()
    value = wilson_lower_bound(successes, runs, z) if runs > 0 else None
    return Scored(candidate, value, successes, runs, verified)


def _known_key(s: Scored) -> tuple[float, bool, int]:
    return (-(s.score or 0.0), not s.candidate.trusted, s.candidate.id)


def rank(
    candidates: Sequence[Candidate],
    *,
    z: float = DEFAULT_Z,
    explore_below: float = DEFAULT_EXPLORE_BELOW,
) -> list[Scored]:
    """All candidates, best first, following the rules in the module docstring."""
    scored = [score(c, z) for c in candidates]
    measured = [s for s in scored if s.candidate.uplift_low is not None and not s.candidate.tripped]
    if measured:
        effect_key = lambda s: (-(s.candidate.uplift_low or 0.0), not s.candidate.trusted, s.candidate.id)  # noqa: E731
        helps = sorted((s for s in measured if (s.candidate.uplift_low or 0.0) > 0), key=effect_key)
        useless = sorted((s for s in measured if (s.candidate.uplift_low or 0.0) <= 0), key=effect_key)
        ids = {s.candidate.id for s in measured}
        rest = rank([c for c in candidates if c.id not in ids], z=z, explore_below=explore_below)
        live_rest = [s for s in rest if not s.candidate.tripped]
        return helps + live_rest + useless + [s for s in rest if s.candidate.tripped]
    live = [s for s in scored if not s.candidate.tripped]
    tripped = [s for s in scored if s.candidate.tripped]

    known = sorted((s for s in live if s.score is not None), key=_known_key)
    untried = sorted((s for s in live if s.score is None), key=lambda s: s.candidate.id)
    best_known = known[0].score if known else None
    if best_known is None or best_known < explore_below:
        ordered = untried + known
    else:
        # proven candidates first, then the untried ones, then the poor known ones
        proven = [s for s in known if (s.score or 0.0) >= explore_below]
        poor = [s for s in known if (s.score or 0.0) < explore_below]
        ordered = proven + untried + poor

    tripped_known = sorted((s for s in tripped if s.score is not None), key=_known_key)
    tripped_untried = sorted((s for s in tripped if s.score is None), key=lambda s: s.candidate.id)
    return ordered + tripped_known + tripped_untried


def choose(
    candidates: Sequence[Candidate],
    *,
    z: float = DEFAULT_Z,
    explore_below: float = DEFAULT_EXPLORE_BELOW,
) -> Choice | None:
    """The candidate to run and a one-line reason to store with the decision; None if empty."""
    if not candidates:
        return None
    ranked = rank(candidates, z=z, explore_below=explore_below)
    top = ranked[0]
    others = ranked[1:]
    runner_up = others[0] if others else None

    if top.candidate.tripped:
        reason = f"all candidates tripped; best is {top.describe()}"
    elif top.score is None:
        known = [s for s in others if s.score is not None and not s.candidate.tripped]
        if known:
            reason = (
                f"exploring untried #{top.candidate.id}: best known {known[0].describe()}"
                f" < {explore_below:.2f}"
            )
        else:
            reason = f"no track record; trying untried #{top.candidate.id} (lowest id)"
    else:
        body = top.describe()
        if top.candidate.uplift_low is not None:
            body = f"{body} (ranked by its measured effect)"
        if runner_up is None:
            reason = f"{body} (only candidate)"
        elif runner_up.score is not None and runner_up.score == top.score and not runner_up.candidate.tripped:
            reason = f"{body} ties {runner_up.describe()}; lower id/trusted wins"
        else:
            reason = f"{body} beats {runner_up.describe()}"
    return Choice(candidate=top.candidate, reason=reason, score=top.score, ranked=ranked)
