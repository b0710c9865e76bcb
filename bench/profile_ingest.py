"""``python -m bench.profile_ingest``: where the ingest process spends its CPU under load.

Starts the embedded stack, fills a topic with the benchmark's events, starts one ingest
process (``bench.run_ingest``, as the throughput section does) and samples it with py-spy
from ready to all committed. Prints the functions with the most samples, by own time
(``self``: the sampled frame itself) and by total time (``total``: the frame anywhere on the
stack), plus the process's CPU seconds per event. py-spy is a development tool, not a
dependency: ``.venv/bin/pip install py-spy``.

Sampling without ``--nonblocking`` pauses the process for each sample; the CPU per event
printed is the process's own (``time.process_time``), so it includes that overhead: compare
it between runs of this tool, and take the unprofiled figure from ``python -m bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path

from bench.__main__ import Child, Stack, _committed_total, produce, say
from bench.events import generate

_LINE = re.compile(r":\d+\)$")


def top_entries(collapsed: str, n: int = 25) -> tuple[int, list[tuple[str, int]], list[tuple[str, int]]]:
    """(samples, top by own samples, top by total samples) of py-spy's ``--format raw`` output.
    Frames are named ``function (file)``: line numbers are dropped so a function is one entry."""
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    samples = 0
    for line in collapsed.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        samples += count
        frames = [_LINE.sub(")", f) for f in stack.split(";")]
        # the thread/process header py-spy puts first is not a function
        frames = [f for f in frames if "(" in f]
        if not frames:
            continue
        own[frames[-1]] += count
        for f in set(frames):
            total[f] += count
    return samples, own.most_common(n), total.most_common(n)


async def profile(stack: Stack, args) -> None:
    data = generate(args.events, seed=args.seed)
    await stack.prepare_template()
    database_url = await stack.fresh_database()
    topics = await stack.topics("profile")
    await produce(stack.kafka, topics["raw"], data.records)
    say(f"profile: {len(data.records):,} events produced; starting one ingest process")
    child = Child("bench.run_ingest", stack.env(database_url, topics, f"bench-prof-{uuid.uuid4().hex[:8]}"))
    out = Path(tempfile.mkdtemp(prefix="elk-prof-")) / "ingest.txt"
    spy = None
    try:
        while not child.latest.get("ready"):
            child.check_alive()
            await asyncio.sleep(0.02)
        n0 = _committed_total([child])
        cpu0 = child.latest.get("cpu_s", 0.0)
        command = ["py-spy", "record", "--pid", str(child.proc.pid), "--format", "raw", "-r", str(args.rate),
                   "-o", str(out)] + (["--nonblocking"] if args.nonblocking else [])  # fmt: skip
        spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started = time.time()
        while _committed_total([child]) < len(data.records):
            child.check_alive()
            await asyncio.sleep(0.05)
        seconds = time.time() - started
        events = len(data.records) - n0
        cpu = child.latest.get("cpu_s", 0.0) - cpu0
    finally:
        if spy is not None:
            spy.send_signal(signal.SIGINT)
            spy.wait(30)
        await child.stop()
        await stack.drop_database(database_url)
    samples, own, total = top_entries(out.read_text())
    print(f"\n{events:,} events in {seconds:.1f} s ({events / seconds:,.0f}/s under the profiler), "
          f"{cpu / events * 1e6:.1f} µs CPU per event, {samples:,} samples")  # fmt: skip
    for title, rows in (("own", own), ("total", total)):
        print(f"\ntop by {title} samples:")
        for name, count in rows:
            print(f"  {count / samples:6.1%}  {name}")
    if args.keep:
        say(f"raw samples kept in {out}")
    else:
        shutil.rmtree(out.parent, ignore_errors=True)


def main(argv: list[str] | None = None) -> None:
    from elk_resolver.kafka.embedded import EmbeddedKafka, EmbeddedPostgres

    parser = argparse.ArgumentParser(prog="python -m bench.profile_ingest", description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seed", type=int, default=6)
    parser.add_argument("--rate", type=int, default=250, help="py-spy samples per second")
    parser.add_argument("--nonblocking", action="store_true", help="sample without pausing the process")
    parser.add_argument("--keep", action="store_true", help="keep py-spy's raw samples (collapsed stacks) and print where")
    args = parser.parse_args(argv)
    if shutil.which("py-spy") is None:
        parser.error("py-spy is not installed (.venv/bin/pip install py-spy)")
    workdir = Path(tempfile.mkdtemp(prefix="elk-prof-stack-"))
    pg = EmbeddedPostgres(workdir / "pg", durable=True)
    pg.start()
    kafka = EmbeddedKafka()
    kafka.start()
    try:
        asyncio.run(profile(Stack(pg.dsn("postgres"), kafka.bootstrap_servers), args))
    finally:
        kafka.stop()
        pg.stop()
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
