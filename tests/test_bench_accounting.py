"""The benchmark's accounting: counts, percentiles, ratios, the targets and the Markdown table.

No test here asserts a time.
"""

from __future__ import annotations

import os

import orjson
import pytest

from bench import stats
from bench.__main__ import parse_args, targets
from bench.events import DOCUMENT_PATTERNS, generate, pattern_rows
from bench.grouping import grouping_accuracy
from elk_resolver.events.classify import PatternSet
from elk_resolver.events.logstash_event import parse_record


def test_percentile_on_known_data_interpolates_between_ranks():
    data = list(range(1, 101))  # 1..100
    assert stats.percentile(data, 0) == 1
    assert stats.percentile(data, 100) == 100
    assert stats.percentile(data, 50) == pytest.approx(50.5)
    assert stats.percentile(data, 99) == pytest.approx(99.01)
    assert stats.percentile([5, 1, 3], 50) == 3  # unsorted input
    assert stats.percentile([7.0], 99) == 7.0


def test_percentile_refuses_empty_and_out_of_range():
    with pytest.raises(ValueError):
        stats.percentile([], 50)
    with pytest.raises(ValueError):
        stats.percentile([1, 2], 101)


def test_rate_and_ratio_maths():
    assert stats.rate(20_000, 4.0) == 5_000
    assert stats.rate(10, 0) == 0.0
    assert stats.ratio(15_000, 30_000) == 0.5
    assert stats.ratio(1, 0) is None
    assert stats.ratio(None, 3) is None
    assert stats.fmt_ratio(26.7654) == "26.77×"
    assert stats.fmt_ratio(None) == "n/a"
    assert stats.fmt_rate(16936.4) == "16,936/s"


def test_met_compares_against_the_bound():
    assert stats.met(0.5, at_least=0.5) == "met"
    assert stats.met(0.49, at_least=0.5) == "NOT met"
    assert stats.met(251, at_most=250) == "NOT met"
    assert stats.met(None, at_most=250) == "not measured"


def test_rss_sampler_records_a_peak_for_a_live_process():
    sampler = stats.RssSampler([os.getpid(), 2**22 + 12345])  # the second pid does not exist
    sampler.sample_once()
    sampler.sample_once()
    assert sampler.samples == 2
    assert set(sampler.peak) == {os.getpid()}
    assert sampler.peak_mb is not None and sampler.peak_mb > 1


def test_markdown_table_escapes_pipes_and_shows_missing_values():
    table = stats.markdown_table(("a", "b"), [("x|y", None), (1, 2.5)])
    assert table.splitlines() == ["| a | b |", "|---|---|", "| x\\|y | n/a |", "| 1 | 2.5 |"]


def _sample_results() -> dict:
    results = {
        "date": "2026-11-26 10:00 UTC",
        "machine": {"nproc": 2, "cpu_model": "Test CPU", "ram_gb": 8.0, "kernel": "6.1", "python": "3.11.7"},
        "stack": "embedded",
        "command": "python -m bench --quick",
        "duration_s": 60.0,
        "throughput": {
            "events": 20_000,
            "dataset": "test",
            "project_1": {"events": 20_000, "seconds": 2.0, "rate": 10_000.0, "note": "one", "cpu_us_per_event": 85.0},
            "project_2": {"events": 20_000, "seconds": 1.0, "rate": 20_000.0, "note": "two"},
            "naive": {"events": 1_000, "seconds": 2.0, "rate": 500.0, "note": "subset"},
            "limit_upsert": {"events": 20_000, "seconds": 1.0, "rate": 25_000.0},
            "limit_consume": {"events": 20_000, "seconds": 0.1, "rate": 200_000.0},
            "ratios": {
                "project 1 proc / naive": 20.0,
                "project 1 proc / bare bulk upsert": 0.4,
                "project 2 proc / bare bulk upsert": 0.8,
                "CPU per event, project 1 proc / naive": 0.02,
            },
        },
        "latency": {"target_rate": 2000, "send_rate": 1999.0, "sent": 100, "received": 100, "p50_ms": 40.0, "p99_ms": 300.0, "max_ms": 310.0},
        "storm": {"rate": 5000, "known_errors": 200, "new_errors": 40, "decided": 40, "p50_ms": 300.0, "p99_ms": 900.0},
        "memory": {"ingest, 1 process": 90.0, "ingest, 2 processes": 95.5, "merge-pass process": 251.0},
        "classification": {"us_per_event": {"3": 1.0, "30": 1.1, "300": 1.4}, "ratio_300_3": 1.4},
        "trigger": {
            "history": 100_000,
            "document": {"rate_0": 1800.0, "rate_100k": 127.0, "ratio": 127 / 1800},
            "incremental": {"rate_0": 16000.0, "rate_100k": 15000.0, "ratio": 15 / 16},
        },
        "grouping": {
            "columns": ["exact", "template", "service"],
            "files": {"HDFS_2k.log_structured.csv": {"exact": 0.2, "template": 1.0, "service": 1.0}},
            "average": {"exact": 0.2, "template": 1.0, "service": 1.0},
        },
    }
    results["targets"] = targets(results)
    return results


def test_targets_report_each_bound_with_its_status():
    by_name = {t["target"]: t for t in _sample_results()["targets"]}
    assert len(by_name) == 14
    assert by_name["ingest 1 process ≥ 20× naive"]["status"] == "met"
    cpu = next(t for name, t in by_name.items() if name.startswith("ingest CPU per event"))
    assert cpu["measured"] == "0.020×" and cpu["status"] == "met"
    assert by_name["ingest 1 process ≥ 0.8× bare bulk upsert"]["status"] == "NOT met"
    assert by_name["ingest 2 processes ≥ 0.85× bare bulk upsert"]["status"] == "NOT met"
    assert by_name["latency p99 at 2,000 events/s ≤ 100 ms"]["status"] == "NOT met"
    # every process of every section counts, the merge pass's own too
    rss = by_name["peak RSS ≤ 250 MiB per process, every section"]
    assert rss["measured"] == "251.0 MiB" and rss["status"] == "NOT met"
    assert by_name["ingest CPU per event ≤ 80 µs (1 process)"]["status"] == "NOT met"
    storm = by_name["storm: a new error on a new object, send to decision p99 during 5,000 known events/s ≤ 1 s"]
    assert storm["measured"] == "900.0 ms" and storm["status"] == "met"
    assert by_name["classification: 300 patterns ≤ 1.5× 3 patterns"]["status"] == "met"
    assert by_name["trigger (0008): rate at 100k history ≥ 0.8× rate at 0"]["status"] == "met"
    assert by_name["growth: ingest rate with 1M stored errors ≥ 0.9× empty tables"]["status"] == "not measured"
    assert by_name["grouping accuracy (service, average) ≥ 0.85"]["measured"] == "1.000"


def test_targets_without_measurements_say_not_measured():
    assert {t["status"] for t in targets({})} == {"not measured"}


def test_markdown_report_carries_date_machine_every_figure_and_ratio():
    md = stats.render_markdown(_sample_results())
    assert "- Date: 2026-11-26 10:00 UTC" in md
    assert "2 CPUs (Test CPU), 8.0 GB RAM" in md
    for figure in ("10,000/s", "20,000/s", "500/s", "25,000/s", "200,000/s", "20.00×", "0.40×", "0.80×"):
        assert figure in md
    assert "| 2,000/s | 1,999/s | 100 | 100 | 40.0 ms | 300.0 ms | 310.0 ms |" in md
    assert "| 3 | 1.00 |" in md and "300/3 ratio: 1.40×" in md
    assert "| document | 1,800/s | 127/s | 0.07× |" in md
    assert "| HDFS | 0.200 | 1.000 |" in md
    assert "| latency p99 at 2,000 events/s ≤ 100 ms | 300.0 ms | NOT met |" in md
    # every table row has as many cells as its header
    for block in md.split("\n\n"):
        rows = [line for line in block.splitlines() if line.startswith("|")]
        if rows:
            widths = {line.replace("\\|", "").count("|") for line in rows}
            assert len(widths) == 1, block


def test_generator_is_deterministic_and_counts_what_it_made():
    a = generate(3_000, seed=11)
    b = generate(3_000, seed=11)
    assert a.records == b.records
    assert len(a.records) == 3_000
    assert a.distinct_errors + a.repeats == 3_000
    assert 0.25 < a.repeat_share < 0.35
    assert 550 < a.mean_bytes < 750
    assert sum(a.shapes.values()) == 3_000 and set(a.shapes) == {"ecs_nested", "ecs_flat", "legacy"}
    assert sum(a.families.values()) == 3_000
    assert generate(3_000, seed=12).records != a.records


def test_generated_records_are_error_events_the_ingest_parser_accepts():
    data = generate(500, seed=3)
    patterns = PatternSet(pattern_rows(30))
    for value in data.records:
        event = parse_record(value)
        assert event.severity in {"ERROR", "CRITICAL", "FATAL"}
        assert patterns.match(event.message, event.error_type_ecs) is not None
        assert isinstance(orjson.loads(value), dict)


def test_unique_only_has_no_repeats():
    data = generate(400, seed=1, unique_only=True)
    assert data.repeats == 0 and data.distinct_errors == 400


def test_pattern_rows_start_with_the_documents_and_compile():
    for n in (3, 30, 300):
        rows = pattern_rows(n)
        assert [r["id"] for r in rows] == list(range(1, n + 1))
        assert PatternSet(rows).invalid == []
    assert [(r["pattern_name"], r["pattern_regex"]) for r in pattern_rows(3)] == [
        (name, regex) for name, regex, *_ in DOCUMENT_PATTERNS
    ]


def test_grouping_accuracy_on_a_hand_made_example():
    truth = ["A", "A", "B", "B", "C"]
    # A exact; B split in two; C merged with nothing: 2 (A) + 1 (C) correct of 5
    assert grouping_accuracy([1, 1, 2, 3, 4], truth) == pytest.approx(3 / 5)
    # B merged with C: only A is right
    assert grouping_accuracy([1, 1, 2, 2, 2], truth) == pytest.approx(2 / 5)


def test_quick_flag_shrinks_the_run_and_only_validates_sections():
    args = parse_args(["--quick", "--only", "trigger,grouping"])
    assert args.events == 20_000 and args.sections == ["trigger", "grouping"]
    with pytest.raises(SystemExit):
        parse_args(["--only", "nonsense"])


def test_a_missing_corpus_skips_grouping_and_the_other_sections_still_report(tmp_path):
    from bench.__main__ import main

    out = tmp_path / "results"
    code = main(["--only", "classification,grouping", "--events", "300", "--corpus", str(tmp_path / "no-corpus"),
                 "--output", str(out)])  # fmt: skip
    assert code == 0
    results = orjson.loads((out / "latest.json").read_bytes())
    assert results["sections_status"]["classification"] == "ok"
    assert results["sections_status"]["grouping"].startswith("skipped: no corpus")
    assert results["classification"]["us_per_event"]
    markdown = (out / "latest.md").read_text()
    assert "grouping: skipped: no corpus" in markdown and "Classification cost" in markdown


def test_a_failing_section_is_reported_and_the_next_one_still_runs(tmp_path, monkeypatch):
    import bench.__main__ as bench_main

    async def broken(stack, args, results):
        raise RuntimeError("boom")

    monkeypatch.setitem(bench_main.RUNNERS, "classification", broken)
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "Tiny_2k.log_structured.csv").write_text("LineId,Content,EventId\n1,a b,E1\n2,a c,E1\n3,x,E2\n")
    out = tmp_path / "results"
    assert bench_main.main(["--only", "classification,grouping", "--corpus", str(corpus), "--output", str(out)]) == 0
    results = orjson.loads((out / "latest.json").read_bytes())
    assert results["sections_status"] == {"classification": "failed: RuntimeError: boom", "grouping": "ok"}
    assert "average" in results["grouping"]


def test_profile_top_entries_count_own_and_total_samples_per_function():
    from bench.profile_ingest import top_entries

    collapsed = (
        "process 1:\"python\";main (a.py:1);work (b.py:10);parse (c.py:5) 6\n"
        "process 1:\"python\";main (a.py:1);work (b.py:12) 3\n"
        "process 1:\"python\";main (a.py:2);parse (c.py:7) 1\n"
    )
    samples, own, total = top_entries(collapsed)
    assert samples == 10
    assert dict(own) == {"parse (c.py)": 7, "work (b.py)": 3}
    assert dict(total)["main (a.py)"] == 10 and dict(total)["work (b.py)"] == 9 and dict(total)["parse (c.py)"] == 7
