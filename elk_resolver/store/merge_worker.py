"""The learned-merge pass in a process of its own, beside an ingest copy, never on its path.

Why a process: the pass plans merges in Python over up to ``BUCKET_ROWS`` templates per
bucket. Inside the ingest process (its own asyncio task, planning on a thread) it held the
GIL and the event loop from the batches: issue 24 measured ingest at 0.35x of the same run
without passes when one landed in the window, and the process's peak RSS at 415 MiB. Here the
pass has its own interpreter, its own connection and its own memory; ingest keeps only the
cheap part, the alias index it reloads when ``fingerprint_state.alias_generation`` moves
(:mod:`elk_resolver.store.alias_cache`).

What it visits: a pass starts from ``fingerprint_state.tokenized_upto`` (rows stored since the
last pass) and the buckets those rows fall in, one bucket at a time, at most ``BUCKET_ROWS``
rows each (:func:`elk_resolver.store.merge_pass.run_merge_pass`): its memory follows the
largest bucket, not the number of distinct errors.

When: the process is started the first time a pass is due (``merge_every_s`` after the copy
starts: a short-lived copy, a test, never pays for it), runs a pass at once, then every
``merge_every_s`` seconds, spaced out after a long pass (``next_pass_in``) so passes take at
most ``MERGE_PASS_SHARE`` of the time: the machine's cores are shared with PostgreSQL and the
stage. One pass at a time over every copy (the advisory lock). A database outage skips the
pass and the next one tries again. The process leaves when its parent is gone; a process that
died is started again by the copy at the next due pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pickle
import subprocess
import sys
import time
from typing import Any

log = logging.getLogger(__name__)

# The pass shares the machine's cores with the stage and PostgreSQL: after a pass that took
# ``t`` seconds the next one waits at least ``t * (1 / MERGE_PASS_SHARE - 1)``, so passes take at
# most this share of the time however many new errors a burst brings.
MERGE_PASS_SHARE = 0.05
_PARENT_CHECK_S = 1.0
NICE = 10  # the process's CPU priority below the stage's (Linux: 10 is about a tenth of the weight)


def next_pass_in(every_s: float, took_s: float, share: float = MERGE_PASS_SHARE) -> float:
    """Seconds until the next merge pass: the interval, or longer after a long pass."""
    return max(every_s, took_s * (1.0 / share - 1.0))


class MergeWorker:
    """Starts, watches and stops the merge-pass process of one ingest copy."""

    def __init__(self, settings: Any, *, every_s: float, version: str) -> None:
        self._settings = settings
        self._every_s = every_s
        self._version = version
        self._process: subprocess.Popen | None = None
        self.starts = 0

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process is not None else None

    @property
    def alive(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def ensure_running(self) -> bool:
        """Start the process if it is not running; True when it was started now."""
        if self.alive:
            return False
        if self._process is not None:
            log.warning("merge pass process exited (status %s); starting it again", self._process.returncode,
                        extra={"stage": "ingest"})
        # A fresh interpreter running this module, not a fork (the parent runs an event loop and
        # threads a fork would copy half of) nor multiprocessing's spawn (which imports the
        # parent's main module again: the whole CLI and console for the service). The settings
        # (the database URL among them) go through a pipe, never the command line.
        self._process = subprocess.Popen(
            [sys.executable, "-m", __name__],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            close_fds=True,
        )
        assert self._process.stdin is not None
        with self._process.stdin as pipe:
            pipe.write(pickle.dumps((self._settings, self._every_s, self._version, os.getpid())))
        self.starts += 1
        return True

    async def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the process (SIGTERM: a pass in flight finishes first), SIGKILL past
        ``timeout_s`` (its transaction then rolls back)."""
        process, self._process = self._process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            await asyncio.to_thread(process.wait, timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            await asyncio.to_thread(process.wait)


def main() -> None:
    """``python -m elk_resolver.store.merge_worker``, started by :class:`MergeWorker` with its
    arguments pickled on stdin (its parent, trusted: never a person's input)."""
    settings, every_s, version, parent_pid = pickle.loads(sys.stdin.buffer.read())  # noqa: S301
    # The stage and PostgreSQL come first on a shared core: a pass that lands in a burst of new
    # errors (its first one tokenizes every row stored since start) otherwise took CPU from the
    # batches for a second or two, the whole p99 of the latency benchmark.
    with contextlib.suppress(OSError):
        os.nice(NICE)
    logging.basicConfig(level=os.environ.get("ELK_RESOLVER_LOG_LEVEL", "WARNING"))
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_passes(settings, every_s, version, parent_pid))


async def _passes(settings: Any, every_s: float, version: str, parent_pid: int) -> None:
    import signal

    from elk_resolver.store.db import create_pool, is_transient_db_error, pool_options
    from elk_resolver.store.merge_pass import run_merge_pass

    stopped = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopped.set)
    pool = None
    next_at = time.monotonic()  # the parent starts this process when a pass is due
    while not stopped.is_set() and os.getppid() == parent_pid:
        wait = next_at - time.monotonic()
        if wait > 0:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stopped.wait(), min(wait, _PARENT_CHECK_S))
            continue
        started = time.monotonic()
        try:
            if pool is None:
                pool = await create_pool(settings.database_url, min_size=1, max_size=1, **pool_options(settings))
            await run_merge_pass(pool, version=version)
        except Exception as exc:
            if not is_transient_db_error(exc):
                log.exception("merge pass failed", extra={"stage": "ingest"})
            else:
                log.warning("merge pass gave way (%s: %s); the next one tries again", type(exc).__name__, exc,
                            extra={"stage": "ingest"})
        took = time.monotonic() - started
        next_at = started + took + next_pass_in(every_s, took)
    if pool is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(pool.close(), 2.0)


if __name__ == "__main__":
    main()
