"""Grouping accuracy (GA) of the error fingerprint on LogHub-2k.

GA (Zhu et al., ICSE 2019): a message is correct iff the set of messages its fingerprint
groups it with is exactly the set of messages sharing its true EventId; GA = correct / total.
A fingerprint that merges two true groups or splits one loses every message of those groups,
so GA rewards templates that are neither too coarse nor too fine.

Run: ``python -m bench.grouping [--corpus DIR]``. The corpus is read in place
(``../shared/corpus/loghub-2k`` beside the repository); it is never copied in.
"""

from __future__ import annotations

import argparse
import csv
import logging
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from elk_resolver.fingerprint import normalize

DEFAULT_CORPUS = Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "loghub-2k"
FILE_GLOB = "*_2k.log_structured.csv"

Grouper = Callable[[Sequence[str]], list[Hashable]]


def grouping_accuracy(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> float:
    """Share of messages whose predicted group is exactly their true group."""
    if len(predicted) != len(truth):
        raise ValueError(f"{len(predicted)} predictions for {len(truth)} messages")
    if not truth:
        return 0.0
    truth_sizes = Counter(truth)
    members: dict[Hashable, list[Hashable]] = {}
    for group, label in zip(predicted, truth):
        members.setdefault(group, []).append(label)
    correct = 0
    for labels in members.values():
        # A predicted group is exact iff it holds one true label and all of that label's messages.
        first = labels[0]
        if all(label == first for label in labels) and truth_sizes[first] == len(labels):
            correct += len(labels)
    return correct / len(truth)


def group_exact(messages: Sequence[str]) -> list[Hashable]:
    return list(messages)


def group_template(messages: Sequence[str]) -> list[Hashable]:
    return [normalize(message) for message in messages]


def group_drain3(messages: Sequence[str]) -> list[Hashable]:
    # Benchmark-only dependency, imported when used. An explicit default config: without one
    # TemplateMiner looks for drain3.ini and prints that it is missing.
    from drain3 import TemplateMiner
    from drain3.template_miner_config import TemplateMinerConfig

    miner = TemplateMiner(config=TemplateMinerConfig())
    return [miner.add_log_message(message)["cluster_id"] for message in messages]


def _drain3_available() -> bool:
    try:
        import drain3  # noqa: F401
    except ImportError:
        return False
    return True


def groupers() -> dict[str, Grouper]:
    """The fingerprints compared, by column name; drain3 only when it is installed."""
    found: dict[str, Grouper] = {"exact": group_exact, "template": group_template}
    if _drain3_available():
        found["drain3"] = group_drain3
    return found


def read_structured(path: Path) -> tuple[list[str], list[str]]:
    """(messages, true EventIds) of one ``*_2k.log_structured.csv``."""
    with path.open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return [row["Content"] for row in rows], [row["EventId"] for row in rows]


def corpus_files(corpus: Path) -> list[Path]:
    files = sorted(corpus.glob(FILE_GLOB))
    if not files:
        raise FileNotFoundError(f"no {FILE_GLOB} in {corpus}")
    return files


def grouping_results(corpus: Path = DEFAULT_CORPUS) -> dict[str, dict[str, float]]:
    """GA per file and per fingerprint: ``{"HDFS_2k.log_structured.csv": {"exact": .., ...}}``."""
    compared = groupers()
    results: dict[str, dict[str, float]] = {}
    for path in corpus_files(corpus):
        messages, truth = read_structured(path)
        results[path.name] = {
            name: grouping_accuracy(group(messages), truth) for name, group in compared.items()
        }
    return results


def average(results: dict[str, dict[str, float]], column: str) -> float:
    return sum(row[column] for row in results.values()) / len(results)


def template_speed_us(corpus: Path = DEFAULT_CORPUS, repeats: int = 3) -> float:
    """Best-of-``repeats`` microseconds per message for ``normalize`` over the whole corpus."""
    messages = [m for path in corpus_files(corpus) for m in read_structured(path)[0]]
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        for message in messages:
            normalize(message)
        best = min(best, time.perf_counter() - start)
    return best / len(messages) * 1e6


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--speed", action="store_true", help="also print normalize µs/message")
    args = parser.parse_args(argv)
    # drain3 logs every cluster it creates at INFO; the benchmark output is the table.
    logging.getLogger("drain3").setLevel(logging.WARNING)

    results = grouping_results(args.corpus)
    columns = list(next(iter(results.values())))
    width = max(len(name) for name in results)
    for name, row in results.items():
        print(f"{name:<{width}}  " + "  ".join(f"{c}={row[c]:.3f}" for c in columns))
    print(f"{'average':<{width}}  " + "  ".join(f"{c}={average(results, c):.3f}" for c in columns))
    if args.speed:
        print(f"normalize {template_speed_us(args.corpus):.2f} us/message")
    print(f"average GA {average(results, 'template'):.4f}")


if __name__ == "__main__":
    main()
