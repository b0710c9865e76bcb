"""``python -m bench.masking_cost [--against OLD/masking.py]``: CPU cost of masking per event.

Masking runs on every event (the message, the stack trace, the whole decoded record), so a
rule set that grows must not make it slow. Prints CPU microseconds per event (best of 30 runs
over 5,000 bench events). With ``--against``, another version of ``elk_resolver/events/masking.py``
(e.g. main's, from another worktree) is measured in the same process, runs interleaved, so
the machine's load weighs on both alike.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
import timeit

import orjson

from bench.events import generate

N_EVENTS = 5_000
ROUNDS = 6


def _load(path: str, name: str):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _cost(events: list[dict], masker) -> float:
    def run() -> None:
        for ev in events:
            masker.mask_obj(ev)
            masker.mask_text(ev.get("message") or "")
            err = ev.get("error")
            if isinstance(err, dict) and isinstance(err.get("stack_trace"), str):
                masker.mask_text(err["stack_trace"])

    return min(timeit.repeat(run, number=1, repeat=5, timer=time.process_time)) / len(events) * 1e6


def _record_pass(records: list[bytes], module) -> tuple[float, float]:
    """The fast path ingest takes first (``record_is_clean`` over the record's bytes): CPU
    microseconds per record, and the share of records it calls clean (the rest are masked)."""
    check = module.record_is_clean

    def run() -> None:
        for value in records:
            check(value)

    cost = min(timeit.repeat(run, number=1, repeat=5, timer=time.process_time)) / len(records) * 1e6
    return cost, sum(map(check, records)) / len(records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", help="another masking.py to measure in the same run")
    args = parser.parse_args(argv)
    from elk_resolver.events import masking

    modules = {"this": masking}
    if args.against:
        modules["against"] = _load(args.against, "masking_against")
    versions = {name: module.SecretMasker() for name, module in modules.items()}
    records = generate(N_EVENTS).records
    events = [e for e in (orjson.loads(r) for r in records) if isinstance(e, dict)]
    best: dict[str, float] = {}
    passes: dict[str, tuple[float, float]] = {}
    for _ in range(ROUNDS):
        for name, masker in versions.items():
            best[name] = min(best.get(name, float("inf")), _cost(events, masker))
            cost, clean = _record_pass(records, modules[name])
            passes[name] = (min(passes.get(name, (float("inf"), 0))[0], cost), clean)
    for name, cost in best.items():
        print(f"masking ({name}): {cost:.2f} us CPU per bench event ({len(events)} events, best of {ROUNDS * 5})")
        pass_cost, clean = passes[name]
        print(f"record pass ({name}): {pass_cost:.2f} us CPU per record, {clean:.1%} of records called clean")
    return 0


if __name__ == "__main__":
    sys.exit(main())
