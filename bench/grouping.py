"""Grouping accuracy (GA) of the error fingerprint on LogHub-2k, as the service groups.

GA (Zhu et al., ICSE 2019): a message is correct iff the set of messages its fingerprint
groups it with is exactly the set of messages sharing its true EventId; GA = correct / total.
A fingerprint that merges two true groups or splits one loses every message of those groups,
so GA rewards templates that are neither too coarse nor too fine. Beside GA: the over-merge
share (messages in a group that holds more than one true event) and the over-split share
(messages whose true event is spread over more than one group).

Columns: ``exact`` (raw message), ``pieces`` (the template rules masking the part of a token
they recognise, before normalize's whole-token step), ``template`` (normalize: the stateless
template alone), ``service`` (what ingest stores: the template, resolved through the alias
index, with a merge pass every ``--merge-every`` messages, each system's messages in their
order), ``digits`` (every token holding a digit is a value: rules written for no system in
particular) and ``digits+merge`` (the same under the service's merge pass: what the merge
does where the rules know nothing), ``drain3`` (Drain3's defaults, online); ``o-m``/``o-s``
after a column: its over-merge and over-split shares. The merge's own effect is ``service``
minus ``template`` and ``digits+merge`` minus ``digits``.

Two corpora: LogHub-2k, split in two halves, ``dev`` (rules were checked against them while
written) and ``held-out`` (only measured), and the PostgreSQL corpus this repository builds
from the server's own message catalogs (``bench/pg_corpus.py``, ``bench/data``), which no rule
was written against.

Run: ``python -m bench.grouping [--corpus DIR ...]``. LogHub-2k is read in place
(``../shared/corpus/loghub-2k`` beside the repository); it is never copied in. A corpus that
is missing is named and skipped.
"""

from __future__ import annotations

import argparse
import csv
import logging
import re
import time
from collections import Counter
from collections.abc import Callable, Hashable, Sequence
from pathlib import Path

from elk_resolver.events.fingerprint import fingerprint, mask_values, normalize
from elk_resolver.events.merging import AliasIndex, MergeConfig, TemplateRow, plan_merges, tokens_of

# beside the repository (a clone) or beside the worktrees' directory (/work/wt/NAME)
DEFAULT_CORPUS = next(
    (p / "shared" / "corpus" / "loghub-2k" for p in Path(__file__).resolve().parents[1:4]
     if (p / "shared" / "corpus" / "loghub-2k").is_dir()),
    Path(__file__).resolve().parent.parent.parent / "shared" / "corpus" / "loghub-2k",
)
BUILT_CORPUS = Path(__file__).resolve().parent / "data"  # bench/pg_corpus.py's output
FILE_GLOB = "*.log_structured.csv"

Grouper = Callable[[Sequence[str]], list[Hashable]]
# The half of the corpus the rules were checked against while being written; the rest is
# held out (measured, never tuned on). Chosen before writing the rules: every other system
# in alphabetical order.
DEV_SYSTEMS = frozenset({"Android", "HDFS", "HealthApp", "OpenStack", "Spark"})
MERGE_EVERY = 200
ERROR_TYPE = "loghub"


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


def split_shares(predicted: Sequence[Hashable], truth: Sequence[Hashable]) -> tuple[float, float]:
    """(over-merge share, over-split share): messages in a predicted group holding more than
    one true event, and messages whose true event spans more than one predicted group."""
    if not truth:
        return 0.0, 0.0
    labels_in: dict[Hashable, set] = {}
    groups_of: dict[Hashable, set] = {}
    for group, label in zip(predicted, truth):
        labels_in.setdefault(group, set()).add(label)
        groups_of.setdefault(label, set()).add(group)
    merged = sum(1 for g in predicted if len(labels_in[g]) > 1)
    split = sum(1 for t in truth if len(groups_of[t]) > 1)
    return merged / len(truth), split / len(truth)


_DIGIT_TOKEN = re.compile(r"\S*\d\S*")


def mask_digits(message: str) -> str:
    """The plain baseline: every token holding a digit is a value. Stands in for rules
    written for no system in particular, to show what the merge pass adds on its own."""
    return _DIGIT_TOKEN.sub("<*>", message)


class OnlineService:
    """The ingest stage's grouping in memory: each message is fingerprinted, resolved through
    the alias index and counted into its row; every ``merge_every`` messages the merge pass
    runs over the rows, as the service's periodic pass does over ``error_logs``."""

    def __init__(
        self, merge_every: int = MERGE_EVERY, config: MergeConfig = MergeConfig(), template=None
    ) -> None:
        self.template = template
        self.merge_every = merge_every
        self.config = config
        self.rows: dict[str, TemplateRow] = {}  # insertion order = age
        self.aliases: dict[str, str] = {}
        self.index = AliasIndex()
        self.seen = 0

    def add(self, message: str, error_type: str = ERROR_TYPE) -> str:
        if self.template is None:
            fp = fingerprint(error_type, message)
            text, own = fp.template, fp.hash
        else:  # a baseline template in place of the fingerprint's rules
            text = own = self.template(message)
        key = self.index.resolve(error_type, text, own)
        row = self.rows.get(key)
        if row is None:
            self.rows[key] = TemplateRow(key, error_type, tokens_of(text), 1)
        else:
            row.count += 1
        self.seen += 1
        if self.seen % self.merge_every == 0:
            self.merge_pass()
        return key

    def merge_pass(self) -> int:
        live = [r for k, r in self.rows.items() if k not in self.aliases]
        merges = plan_merges(live, config=self.config)
        for m in merges:
            canonical = self.rows[m.canonical]
            for key in m.members:
                self.aliases[key] = m.canonical
                canonical.count += self.rows[key].count
            canonical.tokens = m.tokens
            canonical.learned = True
        if merges:
            # as the service does (alias-learned): only templates a merge gave a <*>
            learned = [(r.key, r.error_type, r.tokens) for k, r in self.rows.items() if k not in self.aliases and r.learned]
            self.index = AliasIndex.build(self.aliases.items(), learned)
        return len(merges)

    def final(self, key: str) -> str:
        while key in self.aliases:
            key = self.aliases[key]
        return key


def group_service(messages: Sequence[str], merge_every: int = MERGE_EVERY, template=None) -> list[Hashable]:
    service = OnlineService(merge_every, template=template)
    keys = [service.add(message) for message in messages]
    service.merge_pass()
    return [service.final(key) for key in keys]


def group_digits(messages: Sequence[str]) -> list[Hashable]:
    return [mask_digits(message) for message in messages]


def group_digits_merged(messages: Sequence[str]) -> list[Hashable]:
    return group_service(messages, template=mask_digits)


def group_exact(messages: Sequence[str]) -> list[Hashable]:
    return list(messages)


def group_template(messages: Sequence[str]) -> list[Hashable]:
    return [normalize(message) for message in messages]


def group_pieces(messages: Sequence[str]) -> list[Hashable]:
    return [mask_values(message) for message in messages]


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
    found: dict[str, Grouper] = {
        "exact": group_exact,
        "pieces": group_pieces,
        "template": group_template,
        "service": group_service,
        "digits": group_digits,
        "digits+merge": group_digits_merged,
    }
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


def system_of(path: Path) -> str:
    return path.name.split("_", 1)[0]


SHARES_OF = ("template", "service", "digits", "digits+merge")  # columns followed by o-m and o-s


def grouping_results(corpus: Path = DEFAULT_CORPUS) -> dict[str, dict[str, float]]:
    """Per file: GA per fingerprint, and the over-merge and over-split shares of some:
    ``{"HDFS_2k.log_structured.csv": {"exact": .., "template": .., "template o-m": .., ...}}``;
    ``over_merge``/``over_split`` are the service's."""
    compared = groupers()
    results: dict[str, dict[str, float]] = {}
    for path in corpus_files(corpus):
        messages, truth = read_structured(path)
        row: dict[str, float] = {}
        for name, group in compared.items():
            predicted = group(messages)
            row[name] = grouping_accuracy(predicted, truth)
            if name in SHARES_OF:
                row[f"{name} o-m"], row[f"{name} o-s"] = split_shares(predicted, truth)
        row["over_merge"], row["over_split"] = row["service o-m"], row["service o-s"]
        row["merge gain"] = row["service"] - row["template"]
        row["merge gain (digits)"] = row["digits+merge"] - row["digits"]
        results[path.name] = row
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


# the columns the table prints (the results hold them all)
TABLE = ("exact", "pieces", "template", "template o-m", "template o-s", "service", "service o-m", "service o-s",
         "merge gain", "digits", "digits o-m", "digits+merge", "digits+merge o-m", "digits+merge o-s",
         "merge gain (digits)", "drain3")


def print_table(results: dict[str, dict[str, float]], halves: bool) -> None:
    columns = [c for c in TABLE if c in next(iter(results.values()))]
    widths = [max(len(c), 6) for c in columns]
    width = max(len(system_of(Path(name))) for name in results) + len(" (held-out)")

    def line(label: str, values: list[float]) -> str:
        return f"{label:<{width}}  " + "  ".join(f"{v:>{w}.3f}" for v, w in zip(values, widths))

    print(f"{'system':<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(columns, widths)))
    groups = [("", results)]
    if halves:
        groups = [
            ("dev", {n: r for n, r in results.items() if system_of(Path(n)) in DEV_SYSTEMS}),
            ("held-out", {n: r for n, r in results.items() if system_of(Path(n)) not in DEV_SYSTEMS}),
        ]
    for half, rows in groups:
        for name, row in rows.items():
            print(line(f"{system_of(Path(name))}" + (f" ({half})" if half else ""), [row[c] for c in columns]))
        if rows and len(rows) < len(results):
            print(line(f"average {half}", [average(rows, c) for c in columns]))
    print(line("average", [average(results, c) for c in columns]))


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, action="append",
                        help=f"a directory of *.log_structured.csv (repeatable; default {DEFAULT_CORPUS} and {BUILT_CORPUS})")
    parser.add_argument("--speed", action="store_true", help="also print normalize µs/message")
    args = parser.parse_args(argv)
    corpora = args.corpus or [DEFAULT_CORPUS, BUILT_CORPUS]
    # drain3 logs every cluster it creates at INFO; the benchmark output is the table.
    logging.getLogger("drain3").setLevel(logging.WARNING)

    last = None
    for corpus in corpora:
        try:
            results = grouping_results(corpus)
        except FileNotFoundError as exc:
            print(f"grouping skipped: {exc} (pass --corpus DIR holding *.log_structured.csv)")
            continue
        print(f"== {corpus}")
        print_table(results, halves=any(system_of(Path(n)) in DEV_SYSTEMS for n in results))
        if args.speed:
            print(f"normalize {template_speed_us(corpus):.2f} us/message")
        last = results
        print(f"average GA {average(results, 'service'):.4f}")
    if last is None:
        return


if __name__ == "__main__":
    main()
