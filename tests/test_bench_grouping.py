import csv

import pytest

from bench.grouping import grouping_accuracy, grouping_results, main


def test_perfect_grouping_scores_one():
    assert grouping_accuracy(["a", "a", "b"], [1, 1, 2]) == 1.0


def test_group_labels_need_not_match_truth_labels():
    assert grouping_accuracy(["x", "x", "y"], ["E1", "E1", "E2"]) == 1.0


def test_merging_two_true_groups_loses_all_their_messages():
    # Predicted group "m" holds E1 and E2: the 3 messages in it are wrong, E3 is right.
    assert grouping_accuracy(["m", "m", "m", "z"], ["E1", "E1", "E2", "E3"]) == pytest.approx(1 / 4)


def test_splitting_a_true_group_loses_all_its_messages():
    # E1 is split over "a" and "b": its 3 messages are wrong, E2's two are right.
    assert grouping_accuracy(["a", "a", "b", "c", "c"], ["E1", "E1", "E1", "E2", "E2"]) == pytest.approx(2 / 5)


def test_length_mismatch_is_an_error():
    with pytest.raises(ValueError):
        grouping_accuracy(["a"], [1, 2])


def _write_corpus(directory):
    rows = [
        ("connection from 10.0.0.1 refused", "E1"),
        ("connection from 10.0.0.2 refused", "E1"),
        ("disk full on /dev/sda1", "E2"),
        ("disk full on /dev/sdb3", "E2"),
    ]
    with (directory / "Tiny_2k.log_structured.csv").open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["LineId", "Content", "EventId", "EventTemplate"])
        for number, (content, event) in enumerate(rows, 1):
            writer.writerow([number, content, event, ""])


def test_results_are_per_file_and_per_fingerprint(tmp_path):
    _write_corpus(tmp_path)
    results = grouping_results(tmp_path)
    row = results["Tiny_2k.log_structured.csv"]
    assert row["exact"] == 0.0
    assert row["template"] == 1.0


def test_cli_prints_each_file_and_ends_with_average_ga(tmp_path, capsys):
    _write_corpus(tmp_path)
    main(["--corpus", str(tmp_path)])
    lines = capsys.readouterr().out.strip().splitlines()
    assert any(line.startswith("Tiny ") for line in lines)
    assert lines[-1] == "average GA 1.0000"


def test_cli_without_a_corpus_says_what_is_missing(tmp_path, capsys):
    main(["--corpus", str(tmp_path / "nowhere")])
    out = capsys.readouterr().out
    assert "grouping skipped" in out and "nowhere" in out


def test_results_report_the_service_column_with_over_merge_and_over_split(tmp_path):
    _write_corpus(tmp_path)
    row = grouping_results(tmp_path)["Tiny_2k.log_structured.csv"]
    assert row["service"] == 1.0 and row["over_merge"] == 0.0 and row["over_split"] == 0.0


def test_the_held_out_harness_replays_normalize_when_no_rule_is_left_out():
    from bench.grouping_heldout import RULE_NAMES, template_without
    from elk_resolver.events.fingerprint import _RULES, normalize

    assert len(RULE_NAMES) == len(_RULES)
    messages = ["connection from 10.0.0.1 (host.example.com) at Sun Jul 10 07:24:24 2005", "relation \"orders\" x=1"]
    assert [template_without(frozenset())(m) for m in messages] == [normalize(m) for m in messages]


def test_the_gettext_corpus_is_seeded_and_labels_a_closed_set_per_word():
    from bench.gettext_corpus import SYSTEMS, build

    try:
        first = build("Auth", SYSTEMS["Auth"], seed=1, lines=200, events=20)
    except FileNotFoundError:
        pytest.skip("no gettext catalogs on this machine")
    assert first == build("Auth", SYSTEMS["Auth"], seed=1, lines=200, events=20)
    # one label per template: a closed-set word is part of both
    labels: dict[str, set[str]] = {}
    for _content, event, template in first:
        labels.setdefault(event, set()).add(template)
    assert all(len(templates) == 1 for templates in labels.values())
