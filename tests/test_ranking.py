from __future__ import annotations

import pytest

from elk_resolver.actions.ranking import Candidate, choose, rank, wilson_lower_bound


def test_wilson_lower_bound_known_values() -> None:
    assert wilson_lower_bound(9, 10) == pytest.approx(0.596, abs=1e-3)
    assert wilson_lower_bound(1, 1) == pytest.approx(0.207, abs=1e-3)
    assert wilson_lower_bound(0, 0) == 0.0
    assert wilson_lower_bound(0, 5) == 0.0


def test_nine_of_ten_beats_one_of_one() -> None:
    choice = choose([Candidate(id=7, successes=1, executions=1), Candidate(id=3, successes=9, executions=10)])
    assert choice is not None
    assert choice.candidate.id == 3
    assert choice.reason == "#3 wilson_lb=0.60 (9/10) beats #7 wilson_lb=0.21 (1/1)"


def test_untried_solution_is_tried_when_known_ones_are_poor() -> None:
    choice = choose([Candidate(id=1, successes=1, executions=5), Candidate(id=2)])
    assert choice is not None
    assert choice.candidate.id == 2
    assert choice.explored
    assert "exploring untried #2" in choice.reason
    assert "#1 wilson_lb=0.04 (1/5)" in choice.reason


def test_proven_solution_wins_over_untried() -> None:
    choice = choose([Candidate(id=1), Candidate(id=2, successes=18, executions=20)])
    assert choice is not None
    assert choice.candidate.id == 2
    assert not choice.explored
    assert choice.reason.startswith("#2 wilson_lb=0.70 (18/20) beats #1 untried")


def test_verified_outcomes_take_precedence_when_present() -> None:
    # exits 0 every time but the error keeps coming back: verified 1/10
    noisy = Candidate(id=1, successes=10, executions=10, verified_successes=1, verified_runs=10)
    # fewer runs, but verified to fix the error
    solid = Candidate(id=2, successes=8, executions=10, verified_successes=8, verified_runs=8)
    choice = choose([noisy, solid])
    assert choice is not None
    assert choice.candidate.id == 2
    assert "(8/8 verified)" in choice.reason


def test_unverified_counts_are_used_when_no_verified_runs() -> None:
    c = Candidate(id=1, successes=9, executions=10, verified_successes=0, verified_runs=0)
    assert rank([c])[0].score == pytest.approx(wilson_lower_bound(9, 10))


def test_ties_broken_by_lower_id() -> None:
    a = Candidate(id=12, successes=5, executions=6)
    b = Candidate(id=4, successes=5, executions=6)
    assert choose([a, b]).candidate.id == 4  # type: ignore[union-attr]
    assert choose([b, a]).candidate.id == 4  # type: ignore[union-attr]


def test_untried_ties_broken_by_lower_id() -> None:
    assert choose([Candidate(id=9), Candidate(id=5)]).candidate.id == 5  # type: ignore[union-attr]


def test_tripped_candidates_rank_last_even_when_best() -> None:
    ranked = rank(
        [
            Candidate(id=1, successes=19, executions=20, tripped=True),
            Candidate(id=2, successes=2, executions=6),
        ]
    )
    assert [s.candidate.id for s in ranked] == [2, 1]


def test_all_tripped_is_reported() -> None:
    choice = choose([Candidate(id=1, successes=3, executions=4, tripped=True)])
    assert choice is not None and choice.tripped
    assert choice.reason.startswith("all candidates tripped")


def test_empty_candidates_give_none() -> None:
    assert choose([]) is None


def test_trusted_breaks_a_tie_before_id() -> None:
    ranked = rank([Candidate(id=1, successes=3, executions=3), Candidate(id=2, successes=3, executions=3, trusted=True)])
    assert ranked[0].candidate.id == 2


def test_candidate_from_the_solutions_row() -> None:
    from decimal import Decimal

    c = Candidate.from_rate(5, Decimal("90.00"), 10, tripped=True)
    assert (c.successes, c.executions, c.tripped) == (9, 10, True)
    assert Candidate.from_rate(6, Decimal("33.33"), 3).successes == 1
