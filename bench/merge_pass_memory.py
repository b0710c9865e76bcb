"""Peak memory of one merge pass over a backlog of new distinct errors.

The merge pass runs inside an ingest process, so its working set is that process's. This
loads ``--errors`` distinct errors (templates in ``--buckets`` (error type, width) buckets,
half of them members of families the pass merges) into a fresh embedded PostgreSQL database,
then runs one pass in a child process and reports that child's peak RSS against the same
child's RSS before the pass (imports, pool) and the pass's time.

    python -m bench.merge_pass_memory --errors 70000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg

LOAD = """
INSERT INTO error_logs (error_type, error_message, source_system, hash_signature, fingerprint_version,
                        fingerprint_template, occurrence_count)
SELECT 'app', m, 'bench', md5(m) || md5(m), 'template', m, 1 + g % 7
FROM (SELECT g, CASE WHEN g % 2 = 0
        THEN 'quota exceeded for tenant' || g || 'x in region r' || g % $2 || ' step ' || repeat('w ', g % $2)
        ELSE 'failure ' || md5(g::text) || ' in module m' || g % $2 || ' ' || repeat('v ', g % $2) END AS m
      FROM generate_series(1, $1) g) s
"""


async def child(dsn: str) -> None:
    from elk_resolver.store.db import create_pool
    from elk_resolver.store.merge_pass import run_merge_pass

    async with await create_pool(dsn, min_size=1, max_size=2) as pool:
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        started = time.perf_counter()
        result = await run_merge_pass(pool)
        took = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"before_mib": before / 1024, "peak_mib": peak / 1024, "seconds": took,
                      "tokenized": result.tokenized, "merges": len(result.merges), "merged_rows": result.merged_rows}))


async def prepare(dsn: str, errors: int, buckets: int) -> None:
    from elk_resolver.store.merge_pass import rules_digest
    from elk_resolver.store.migrate import migrate

    await migrate(dsn)
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(LOAD, errors, buckets)
        # the rules the rows were made with are the current ones: the pass merges, no remap
        await conn.execute("UPDATE fingerprint_state SET rules_digest = $1", rules_digest("template"))
    finally:
        await conn.close()


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--errors", type=int, default=70000)
    parser.add_argument("--buckets", type=int, default=20)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        asyncio.run(child(args.child))
        return
    from elk_resolver.kafka.embedded import EmbeddedPostgres

    with tempfile.TemporaryDirectory(prefix="merge-mem-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "pg", durable=False)
        pg.start()
        try:
            admin = pg.dsn()
            asyncio.run(_create(admin))
            dsn = pg.dsn("mergemem")
            asyncio.run(prepare(dsn, args.errors, args.buckets))
            out = subprocess.run([sys.executable, "-m", "bench.merge_pass_memory", "--child", dsn],
                                 capture_output=True, text=True)
            if out.returncode:
                raise SystemExit(out.stderr)
            out = out.stdout
        finally:
            pg.stop()
    result = json.loads(out.strip().splitlines()[-1])
    print(f"{args.errors} new errors in {args.buckets} widths: pass {result['seconds']:.1f} s, "
          f"RSS {result['before_mib']:.0f} MiB before, peak {result['peak_mib']:.0f} MiB "
          f"(+{result['peak_mib'] - result['before_mib']:.0f} MiB); {result['merges']} merges of "
          f"{result['merged_rows']} rows")


async def _create(admin_dsn: str) -> None:
    conn = await asyncpg.connect(admin_dsn)
    try:
        await conn.execute("DROP DATABASE IF EXISTS mergemem")
        await conn.execute("CREATE DATABASE mergemem")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()
