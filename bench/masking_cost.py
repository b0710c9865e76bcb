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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--against", help="another masking.py to measure in the same run")
    args = parser.parse_args(argv)
    from elk_resolver.events import masking

    versions = {"this": masking.SecretMasker()}
    if args.against:
        versions["against"] = _load(args.against, "masking_against").SecretMasker()
    events = [e for e in (orjson.loads(r) for r in generate(N_EVENTS).records) if isinstance(e, dict)]
    best: dict[str, float] = {}
    for _ in range(ROUNDS):
        for name, masker in versions.items():
            best[name] = min(best.get(name, float("inf")), _cost(events, masker))
    for name, cost in best.items():
        print(f"masking ({name}): {cost:.2f} us CPU per bench event ({len(events)} events, best of {ROUNDS * 5})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
