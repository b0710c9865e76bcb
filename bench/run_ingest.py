"""``python -m bench.run_ingest``: the project's ingest stage in a process of its own.

The benchmark starts one or two of these (one consumer group) so the stage's CPU and peak RSS
are its own. Settings come from the ``ELK_RESOLVER_*`` environment the benchmark sets. Every
``--report-s`` seconds one JSON line goes to stdout: readiness, the process's CPU seconds,
the stage's counters and its committed offsets, which is how the benchmark knows when every record is through. SIGTERM
or SIGINT stops the stage gracefully.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import time

import orjson


async def run(report_s: float) -> None:
    from elk_resolver.settings import make_settings
    from elk_resolver.store.db import create_pool
    from streams.ingest import build_ingest

    settings = make_settings()
    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopped.set)

    def report(stage) -> None:
        m = stage.metrics
        line = {
            "t": time.time(),
            "cpu_s": time.process_time(),
            "ready": stage.ready,
            "events_in": m.events_in,
            "stored": m.stored,
            "published": m.published,
            "batches": m.batches,
            "dead_lettered": m.dead_lettered,
            "db_retries": m.db_retries,
            "dropped_on_rebalance": m.dropped_on_rebalance,
            "committed": {f"{tp.topic}:{tp.partition}": off for tp, off in m.committed.items()},
        }
        sys.stdout.buffer.write(orjson.dumps(line) + b"\n")
        sys.stdout.flush()

    async with await create_pool(settings.database_url, min_size=1, max_size=4) as pool:
        stage = build_ingest(settings, pool=pool)
        await stage.start()
        runner = asyncio.ensure_future(stage.run_until_stopped())
        try:
            while not stopped.is_set() and not runner.done():
                report(stage)
                try:
                    await asyncio.wait_for(stopped.wait(), report_s)
                except TimeoutError:
                    pass
            if runner.done():
                runner.result()
        finally:
            await stage.stop()
            report(stage)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report-s", type=float, default=0.1)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    asyncio.run(run(args.report_s))


if __name__ == "__main__":
    main()
