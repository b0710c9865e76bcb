"""Issue 25, points 1-4: the pure parts of "did the fix help?": one outcome per case whatever the
order or duplication of the facts, the comparison group never holding an acted case, the
Newcombe interval, trial selection (never a critical namespace, never more than N per window)
and ranking by the lower bound of the uplift. Hypothesis drives the invariants; each property
was checked to fail on a broken variant (see the comments), and the examples it shrank to are
kept as plain tests.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from elk_resolver.actions import effect as fx
from elk_resolver.actions.effect import Decision, judge_case, newcombe, not_acted_kind, trial_selects, wilson
from elk_resolver.actions.ranking import Candidate, choose, rank

T0 = datetime(2026, 12, 1, 12, 0, 0)
W, H = 60.0, 600.0


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def judge(errors=(), runs=(), decisions=(), approval=None, now=10_000.0, **kw):
    return judge_case(T0, errors=[at(s) for s in errors], runs=[at(s) for s in runs], decisions=decisions,
                      approval_status=approval, now=at(now), window_s=W, horizon_s=H, **kw)  # fmt: skip


# --- one case's outcome ---------------------------------------------------------------------


def test_an_error_that_stops_is_resolved_at_its_last_occurrence_before_a_quiet_window():
    out = judge(errors=[10, 30, 50])
    assert (out.state, out.resolved_at, out.resolution_s) == ("resolved", at(50), 50.0)


def test_an_error_that_comes_back_after_a_quiet_window_was_still_resolved_at_the_window():
    out = judge(errors=[10, 30, 200, 210])
    assert (out.state, out.resolved_at) == ("resolved", at(30))


def test_an_error_still_seen_past_the_horizon_is_unresolved():
    out = judge(errors=list(range(0, 700, 30)))
    assert (out.state, out.resolved_at) == ("unresolved", None)


def test_a_case_is_judged_once_its_horizon_and_one_window_have_passed():
    assert judge(errors=[10, 30], now=91).state == "open"  # a run could still come within the horizon
    assert judge(errors=[10, 30], now=H + W - 1).state == "open"
    assert judge(errors=[10, 30], now=H + W).state == "resolved"


def test_a_run_on_the_object_makes_the_case_acted_whichever_request_made_it():
    skipped = [Decision(1, "skipped", "cooldown: k8s:shop/deployment/a was acted on at 12:00 UTC", at(5))]
    out = judge(errors=[10], runs=[3], decisions=skipped)
    assert out.acted and out.not_acted is None and out.acted_at == at(3)


def test_a_run_long_before_the_case_or_after_its_horizon_does_not_make_it_acted():
    out = judge(errors=[10], runs=[-W - 1, H + 1], decisions=[Decision(1, "dry_run", "dry-run mode", at(1))])
    assert not out.acted and out.not_acted == "dry_run"


@pytest.mark.parametrize(("decision", "reason", "approval", "kind"), [
    ("dry_run", "dry-run mode: recorded what would run, ran nothing", None, "dry_run"),
    ("observe_only", "observe only: playbook 'x' is on trial", None, "observe_only"),
    ("skipped", "cooldown: k8s:a was acted on", None, "budget"),
    ("skipped", "rate limit: 3 actions on k8s:a", None, "budget"),
    ("pending_approval", "fleet budget: 5 actions", "expired", "expired"),
    ("pending_approval", "stale event", "rejected", "rejected"),
    ("pending_approval", "stale event", "pending", "awaiting_approval"),
    ("held", "systemic hold: 5 distinct objects", None, "hold"),
    ("skipped", "k8s:a is already held in incident 3", None, "hold"),
    ("skipped", "kill switch is on (setting ELK_RESOLVER_KILL_SWITCH)", None, "kill_switch"),
    ("skipped", "execution_mode is off", None, "off"),
    ("skipped", "stopped by itself: no error about k8s:a since", None, "stopped_by_itself"),
    ("denied", "refused by the execution policy", None, "denied"),
    (None, "", None, "undecided"),
])  # fmt: skip
def test_why_nothing_ran_is_read_from_the_requests_final_decision(decision, reason, approval, kind):
    assert not_acted_kind(decision, reason, approval) == kind


# --- property: exactly one outcome per case, whatever the order or duplication ----------------

times = st.lists(st.integers(min_value=-1200, max_value=9000).map(lambda tenths: tenths / 10), max_size=12)
decision_lines = st.lists(
    st.tuples(st.sampled_from(["dry_run", "skipped", "pending_approval", "held", "observe_only", "duplicate", "refused"]),
              st.sampled_from(["cooldown: x", "kill switch is on", "stale event", "history (replayed)", "observe only"]),
              st.floats(min_value=0, max_value=600, allow_nan=False)),
    max_size=5,
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(errors=times, runs=times, lines=decision_lines, approval=st.sampled_from([None, "pending", "expired", "rejected"]),
       now=st.floats(min_value=0, max_value=2000), data=st.data())  # fmt: skip
def test_every_case_gets_one_outcome_whatever_the_order_or_duplication_of_its_facts(errors, runs, lines, approval, now, data):
    """Broken variant checked: judging with ``seen = [t for t in errors if t > started_at]``
    (unsorted, undeduplicated) instead of ``sorted({...})`` fails here (a shuffled list gives
    another resolution time)."""
    decisions = [Decision(i, d, r, at(s)) for i, (d, r, s) in enumerate(lines)]
    first = judge(errors, runs, decisions, approval, now)
    shuffled_errors = data.draw(st.permutations(errors + errors[: len(errors) // 2]))
    shuffled_runs = data.draw(st.permutations(runs + runs))
    shuffled_decisions = data.draw(st.permutations(decisions + decisions[:1]))
    again = judge(shuffled_errors, shuffled_runs, shuffled_decisions, approval, now)
    assert again == first
    # exactly one outcome: acted, or one reason why not; one state
    assert first.acted != (first.not_acted is not None)
    assert first.state in ("open", "resolved", "unresolved")
    assert (first.state == "resolved") == (first.resolved_at is not None)
    if first.not_acted is not None:
        assert first.not_acted in fx.NOT_ACTED_KINDS


@settings(max_examples=200, deadline=None)
@given(errors=times, runs=times, now=st.integers(0, 2000).map(float))
def test_the_comparison_group_never_holds_a_case_whose_object_was_acted_on(errors, runs, now):
    """Whatever decisions the request itself got, a run on its object within the case makes it
    acted. Broken variant checked: deciding ``acted`` from the request's own decisions only (a
    cooldown skip after another request's restart counted as left alone) fails here."""
    skipped = [Decision(1, "skipped", "cooldown: the object was acted on", at(0))]
    out = judge(errors, runs, skipped, None, now)
    acted_in_case = any(-W <= r <= H and r <= now for r in runs)
    assert out.acted == acted_in_case
    assert not (out.not_acted is not None and acted_in_case)


def test_regression_a_duplicated_error_at_the_gap_edge_resolves_once():
    # kept from the shrinking of the order property: duplicates at the same instant
    assert judge([0.5, 0.5, 61.0]).resolved_at == judge([61.0, 0.5]).resolved_at == at(0.5)


# --- intervals ------------------------------------------------------------------------------


def test_newcombes_hybrid_interval_matches_the_published_example():
    # Newcombe (1998), Statistics in Medicine 17:873, table II, method 10: 56/70 vs 48/80
    d, low, high = newcombe(56, 70, 48, 80)
    assert d == pytest.approx(0.2)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)


def test_wilson_interval_of_a_proportion():
    low, high = wilson(81, 263)
    assert (round(low, 4), round(high, 4)) == (0.2553, 0.3662)


@settings(max_examples=300, deadline=None)
@given(n1=st.integers(1, 400), n0=st.integers(1, 400), data=st.data())
def test_the_uplift_interval_holds_the_estimate_and_stays_within_minus_one_and_one(n1, n0, data):
    r1, r0 = data.draw(st.integers(0, n1)), data.draw(st.integers(0, n0))
    d, low, high = newcombe(r1, n1, r0, n0)
    assert -1 <= low <= d <= high <= 1


# --- trials -----------------------------------------------------------------------------------

namespaces = st.sampled_from(["shop", "payments", "dev", "kube-system", None])


def run_trial(cases, critical, max_per_window, window, fraction, select=trial_selects):
    """Drive trial selection the way the execute stage does: cases in time order, the count of
    cases left alone in the window read before each draw."""
    left: list[float] = []
    chosen = []
    for t, namespace, draw in sorted(cases, key=lambda c: c[0]):
        in_window = sum(1 for s in left if s > t - window)
        picked, _ = select(draw=draw, fraction=fraction, namespace=namespace, critical=critical,
                           left_in_window=in_window, max_per_window=max_per_window)  # fmt: skip
        if picked:
            left.append(t)
            chosen.append((t, namespace))
    return chosen


@settings(max_examples=300, deadline=None)
@given(cases=st.lists(st.tuples(st.floats(0, 10_000), namespaces, st.floats(0, 1, exclude_max=True)), max_size=60),
       critical=st.sets(st.sampled_from(["payments", "kube-system", "shop"])), max_per_window=st.integers(0, 6),
       window=st.floats(1, 5_000), fraction=st.floats(0.01, 1.0))  # fmt: skip
def test_a_trial_never_leaves_a_critical_case_alone_and_never_more_than_n_per_window(cases, critical, max_per_window,
                                                                                     window, fraction):  # fmt: skip
    """Broken variants checked: ``namespace in critical`` tested after the draw only when
    ``draw >= fraction`` (i.e. the critical check dropped) fails the first assertion;
    ``left_in_window > max_per_window`` (off by one) fails the second."""
    chosen = run_trial(cases, critical, max_per_window, window, fraction)
    assert all(ns is not None and ns not in critical for _, ns in chosen)
    for t, _ in chosen:
        assert sum(1 for s, _ in chosen if t - window < s <= t) <= max_per_window


def test_trial_selection_broken_variants_are_caught():
    """The two broken variants named above, run against the invariants' own check."""

    def no_critical_check(**kw):
        return (kw["draw"] < kw["fraction"] and kw["left_in_window"] < kw["max_per_window"]), "drawn"

    def off_by_one(**kw):
        if kw["namespace"] is None or kw["namespace"] in set(kw["critical"]):
            return False, "critical"
        return (kw["draw"] < kw["fraction"] and kw["left_in_window"] <= kw["max_per_window"]), "drawn"

    cases = [(1.0, "payments", 0.0), (2.0, "shop", 0.0), (3.0, "shop", 0.0)]
    assert ("payments" in {ns for _, ns in run_trial(cases, {"payments"}, 5, 100, 0.5, no_critical_check)})
    assert len(run_trial(cases, {"payments"}, 1, 100, 0.5, off_by_one)) == 2  # 2 > N = 1
    assert len(run_trial(cases, {"payments"}, 1, 100, 0.5)) == 1


# --- ranking by effect ---------------------------------------------------------------------------


def test_ranking_uses_the_uplift_lower_bound_once_measured_and_puts_no_effect_last():
    popular = Candidate(1, successes=90, executions=100, verified_successes=90, verified_runs=100, uplift_low=-0.05)
    useful = Candidate(2, successes=60, executions=100, verified_successes=60, verified_runs=100, uplift_low=0.3)
    assert choose([popular, useful]).candidate.id == 2
    # today's ranking, without the effect, picks the one that "succeeds" more often
    plain = [Candidate(c.id, c.successes, c.executions, c.verified_successes, c.verified_runs) for c in (popular, useful)]
    assert choose(plain).candidate.id == 1
    untried = Candidate(3)
    assert [s.candidate.id for s in rank([popular, useful, untried])] == [2, 3, 1]


def test_until_there_are_enough_cases_todays_ranking_decides():
    a = Candidate(1, successes=9, executions=10)
    b = Candidate(2, successes=1, executions=1)
    assert [s.candidate.id for s in rank([a, b])] == [1, 2]


def test_a_solution_whose_uplift_is_not_above_zero_is_not_automatic_and_says_why():
    assert fx.no_effect_reason(-0.02, 30, 30, 20, "uplift +5 points") .startswith("no measured effect")
    assert fx.no_effect_reason(0.0, 30, 30, 20) is not None
    assert fx.no_effect_reason(0.01, 30, 30, 20) is None
    assert fx.no_effect_reason(-0.3, 30, 10, 20) is None  # too few cases left alone: today's rules
