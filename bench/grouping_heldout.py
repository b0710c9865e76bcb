"""Held-out discipline for the grouping rules: every rule judged on systems it was not written for.

A template rule or a merge guard written while looking at one system may lift that system and
cost others; averaged over the systems it was written against, it looks like progress. This
reports, over every labelled system there is (LogHub-2k's ten, the PostgreSQL corpus, the
gettext corpus's five: ``bench.grouping`` reads them all):

* ``--ablate``: each template rule (and the whole-token step) switched off in turn, GA of the
  service per system against the rules as they are. A rule whose gain sits on one system and
  that costs another is corpus-shaped; one that helps nowhere is dead weight.
* ``--loso``: leave-one-system-out over the merge's settings (a small grid of
  :class:`~elk_resolver.events.merging.MergeConfig`): for each system, the setting that scores
  best on the *other* systems, scored on it. What a setting chosen without a system does on
  that system is the honest figure; the mean over systems and the worst ones are printed.
* without a flag: the table (GA and over-merge of template, service, digits, digits+merge per
  system; the ten's average, each held-out corpus's, the worst systems).

    python -m bench.grouping_heldout [--ablate] [--loso] [--set FIELD=VALUE ...]

``--set`` moves a :class:`~elk_resolver.events.merging.MergeConfig` default for every run (the
grid of ``--loso`` varies the rest): ``--set max_slots=1`` measures without merges at two
positions, ``--set dependent_slots=0`` without the dependent-slot evidence.
"""

from __future__ import annotations

import argparse
import itertools
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

from bench.grouping import (BUILT_CORPUS, DEFAULT_CORPUS, corpus_files, grouping_accuracy, mask_digits, read_structured,
                            split_shares, system_of)
from bench.grouping import OnlineService
from elk_resolver.events import fingerprint as fp
from elk_resolver.events.merging import MergeConfig

Template = Callable[[str], str]
RULE_NAMES = ("url", "email", "iso-time", "ctime", "host", "host-port", "k8s-name", "user-word", "quoted-after-=",
              "windows-path", "mac", "path", "slash-word", "key=value", "digit-token", "no-vowel", "hex-letters",
              "empty-parens", "restated", "join", "double-quoted", "single-quoted")


def systems(corpora: Sequence[Path] = (DEFAULT_CORPUS, BUILT_CORPUS)) -> dict[str, tuple[list[str], list[str]]]:
    """system -> (messages, true EventIds), over every corpus found."""
    out = {}
    for corpus in corpora:
        try:
            files = corpus_files(corpus)
        except FileNotFoundError:
            continue
        for path in files:
            out[system_of(path)] = read_structured(path)
    return out


def family(name: str) -> str:
    """Which corpus a system comes from: loghub, postgres or gettext."""
    if name == "PostgreSQL":
        return "postgres"
    return "gettext" if name in {"Git", "Kerberos", "Auth", "Packages", "GnuPG"} else "loghub"


def template_without(skip: frozenset[int], whole: bool = True) -> Template:
    """normalize with the rules numbered ``skip`` left out (and the whole-token step if not ``whole``)."""
    plan = tuple(p for i, p in enumerate(fp._PLAN) if i not in skip)

    def template(message: str) -> str:
        message = fp.mask_values(message, plan)
        return fp.whole_tokens(message) if whole else message

    return template


BASE = MergeConfig()  # the defaults every run starts from (``--set`` moves them)


def parse_setting(text: str) -> tuple[str, object]:
    """``FIELD=VALUE`` of MergeConfig, the value cast to the field's type."""
    name, _, value = text.partition("=")
    current = getattr(MergeConfig(), name)  # AttributeError names an unknown field
    if isinstance(current, bool):
        return name, value.lower() in {"1", "true", "yes"}
    return name, type(current)(value)


def service_groups(messages: Sequence[str], template: Template | None, config: MergeConfig) -> list:
    service = OnlineService(config=config, template=template)
    keys = [service.add(m) for m in messages]
    service.merge_pass()
    return [service.final(k) for k in keys]


def score(messages, truth, template: Template | None = None, config: MergeConfig | None = None, merge: bool = True):
    """(GA, over-merge) of one grouping over one system."""
    config = config or BASE
    if merge:
        predicted = service_groups(messages, template, config)
    else:
        t = template or fp.normalize
        predicted = [t(m) for m in messages]
    return grouping_accuracy(predicted, truth), split_shares(predicted, truth)[0]


def summary(per: dict[str, float]) -> str:
    groups: dict[str, list[float]] = {}
    for name, v in per.items():
        groups.setdefault(family(name), []).append(v)
    worst = sorted(per.items(), key=lambda kv: kv[1])[:3]
    return "  ".join(f"{g} {sum(v) / len(v):.3f}" for g, v in groups.items()) + "  worst " + ", ".join(
        f"{n} {v:.3f}" for n, v in worst)


def table(data) -> None:
    cols = {"template": dict(merge=False), "service": {}, "digits": dict(template=mask_digits, merge=False),
            "digits+merge": dict(template=mask_digits)}
    print(f"{'system':<12}" + "".join(f"{c:>14}{'o-m':>7}" for c in cols))
    results: dict[str, dict[str, float]] = {c: {} for c in cols}
    for name, (messages, truth) in data.items():
        line = f"{name:<12}"
        for c, kw in cols.items():
            ga, om = score(messages, truth, **kw)
            results[c][name] = ga
            line += f"{ga:>14.3f}{om:>7.3f}"
        print(line)
    for c, per in results.items():
        print(f"{c:<13} {summary(per)}")


def ablate(data) -> None:
    base = {n: score(m, t)[0] for n, (m, t) in data.items()}
    print(f"service GA as it is: {summary(base)}")
    variants = [(f"-{name}", template_without(frozenset({i}))) for i, name in enumerate(RULE_NAMES)]
    variants.append(("-whole-token", template_without(frozenset(), whole=False)))
    for label, template in variants:
        delta = {n: score(m, t, template)[0] - base[n] for n, (m, t) in data.items()}
        moved = ", ".join(f"{n} {d:+.3f}" for n, d in sorted(delta.items(), key=lambda kv: kv[1]) if abs(d) >= 0.001)
        print(f"{label:<16} mean {sum(delta.values()) / len(delta):+.4f}  {moved or '(no change)'}")


GRID = {
    "min_values": (2, 3, 4, 5),
    "min_rare": (0, 1, 2),
    "sample_factor": (0, 3),
    "known_in": (1, 2, 3),
}  # MergeConfig's defaults must be a point of it


MERGE_OM = 0.01


def loso(data) -> None:
    """Each system held out in turn; the merge settings chosen on the others. A system counts
    twice: under the service's template and under the digits template (where the merge does
    the work the rules do not). Over-merge disqualifies on the service's template only: the
    digits template makes some over-merges of its own (a key masked with its value)."""
    configs = [replace(BASE, **dict(zip(GRID, values))) for values in itertools.product(*GRID.values())]
    alone = {n: score(m, t, merge=False)[1] for n, (m, t) in data.items()}  # the template's own over-merge
    scores = {c: {n: (score(m, t, config=c), score(m, t, mask_digits, c)) for n, (m, t) in data.items()}
              for c in configs}
    held: dict[str, float] = {}
    held_digits: dict[str, float] = {}
    for name in data:
        def others(c):
            rest = [(v, alone[n]) for n, v in scores[c].items() if n != name]
            fine = all(svc[1] - base <= MERGE_OM for (svc, _), base in rest)
            return fine, sum(svc[0] + dig[0] for (svc, dig), _ in rest) / len(rest)
        chosen = max(configs, key=others)
        (ga, om), (dga, dom) = scores[chosen][name]
        held[name], held_digits[name] = ga, dga
        print(f"{name:<12} held-out service {ga:.3f} (o-m {om:.3f})  digits+merge {dga:.3f} (o-m {dom:.3f})  with "
              + ", ".join(f"{k}={getattr(chosen, k)}" for k in GRID))
    default = scores.get(BASE)
    print(f"leave-one-system-out service:      {summary(held)}")
    print(f"leave-one-system-out digits+merge: {summary(held_digits)}")
    if default:
        print(f"default settings service:          {summary({n: v[0][0] for n, v in default.items()})}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ablate", action="store_true")
    parser.add_argument("--loso", action="store_true")
    parser.add_argument("--corpus", type=Path, action="append")
    parser.add_argument("--set", type=parse_setting, action="append", default=[], metavar="FIELD=VALUE")
    args = parser.parse_args(argv)
    global BASE
    BASE = replace(MergeConfig(), **dict(args.set))
    data = systems(args.corpus or (DEFAULT_CORPUS, BUILT_CORPUS))
    if args.ablate:
        ablate(data)
    elif args.loso:
        loso(data)
    else:
        table(data)


if __name__ == "__main__":
    main()
