"""Migration 0008: the incremental success-rate trigger gives the document's results exactly.

"The document's results" is computed here with the document's own expression (migration
0002's recount) over execution_history, and compared with the solutions row after every
insert, on random histories, and after concurrent inserts from several connections.
"""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

from elk_resolver.store.migrate import load_migrations

STATUSES = ("success", "failed", "timeout", "success", "error")

# The document's expressions (0002), evaluated for every solution, assigned to the column types.
RECOUNT = """
SELECT s.id,
       (SELECT CASE
                   WHEN COUNT(*) = 0 THEN 0
                   ELSE (COUNT(*) FILTER (WHERE execution_status = 'success') * 100.0 / COUNT(*))
               END
        FROM execution_history WHERE solution_id = s.id)::DECIMAL(5,2) AS success_rate,
       (SELECT COUNT(*) FROM execution_history WHERE solution_id = s.id)::INTEGER AS execution_count
FROM solutions s
WHERE s.id = any($1::int[])
ORDER BY s.id
"""

STORED = """
SELECT id, success_rate, execution_count, success_count, last_success_at, updated_at
FROM solutions WHERE id = any($1::int[]) ORDER BY id
"""


async def _solutions(conn, n: int) -> list[int]:
    ids = []
    for i in range(n):
        ids.append(
            await conn.fetchval(
                """INSERT INTO solutions (solution_type, solution_description, solution_commands)
                   VALUES ($1, 'test', '[]'::jsonb) RETURNING id""",
                f"type-{i}",
            )
        )
    return ids


async def _insert(conn, solution_id: int, status: str, executed_at: datetime) -> datetime:
    """Insert one history row in its own transaction; return that transaction's now()."""
    async with conn.transaction():
        await conn.execute(
            "INSERT INTO execution_history (solution_id, execution_status, executed_at) VALUES ($1, $2, $3)",
            solution_id,
            status,
            executed_at,
        )
        return await conn.fetchval("SELECT CURRENT_TIMESTAMP::timestamp")


def _random_time(rng: random.Random) -> datetime:
    # Random, not increasing: the document's CASE takes the inserted row's time, not the max.
    return datetime(2026, 1, 1) + timedelta(seconds=rng.randrange(0, 90 * 86400), microseconds=rng.randrange(10**6))


async def _assert_equal_to_recount(conn, ids: list[int]) -> list[asyncpg.Record]:
    expected = await conn.fetch(RECOUNT, ids)
    stored = await conn.fetch(STORED, ids)
    for want, got in zip(expected, stored, strict=True):
        assert (got["id"], got["success_rate"], got["execution_count"]) == (
            want["id"],
            want["success_rate"],
            want["execution_count"],
        )
    return stored


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_each_insert_leaves_the_documents_recount(pool, seed):
    rng = random.Random(seed)
    async with pool.acquire() as conn:
        ids = await _solutions(conn, 4)
        last_success: dict[int, datetime | None] = dict.fromkeys(ids)
        for _ in range(150):
            solution_id = rng.choice(ids)
            status = rng.choice(STATUSES)
            executed_at = _random_time(rng)
            now = await _insert(conn, solution_id, status, executed_at)
            if status == "success":
                last_success[solution_id] = executed_at
            stored = await _assert_equal_to_recount(conn, ids)
            for row in stored:
                assert row["last_success_at"] == last_success[row["id"]]
            touched = next(r for r in stored if r["id"] == solution_id)
            assert touched["updated_at"] == now


async def test_concurrent_inserts_from_several_connections_match_the_recount(pool, database_url):
    rng = random.Random(42)
    async with pool.acquire() as conn:
        ids = await _solutions(conn, 3)
    connections = [await asyncpg.connect(database_url) for _ in range(8)]
    try:
        plans = [
            [(rng.choice(ids), rng.choice(STATUSES), _random_time(rng)) for _ in range(60)]
            for _ in connections
        ]

        async def worker(conn, plan):
            for solution_id, status, executed_at in plan:
                if rng.random() < 0.3:
                    # several rows in one transaction: the row lock is held to the commit
                    async with conn.transaction():
                        for _ in range(3):
                            await conn.execute(
                                "INSERT INTO execution_history (solution_id, execution_status, executed_at)"
                                " VALUES ($1, $2, $3)",
                                solution_id,
                                status,
                                executed_at,
                            )
                else:
                    await _insert(conn, solution_id, status, executed_at)

        await asyncio.gather(*(worker(c, p) for c, p in zip(connections, plans)))
    finally:
        for conn in connections:
            await conn.close()

    async with pool.acquire() as conn:
        stored = await _assert_equal_to_recount(conn, ids)
        total = await conn.fetchval("SELECT count(*) FROM execution_history WHERE solution_id = any($1::int[])", ids)
        assert sum(r["execution_count"] for r in stored) == total > 8 * 60
        for row in stored:
            successes = await conn.fetch(
                "SELECT executed_at FROM execution_history WHERE solution_id = $1 AND execution_status = 'success'",
                row["id"],
            )
            assert row["success_count"] == len(successes)
            # whichever success committed last: always one of this solution's successes
            if successes:
                assert row["last_success_at"] in {r["executed_at"] for r in successes}
            else:
                assert row["last_success_at"] is None


async def test_document_example_two_successes_one_failure(pool):
    t0 = datetime(2026, 1, 1, 12, 0, 0)
    async with pool.acquire() as conn:
        [solution_id] = await _solutions(conn, 1)
        for minutes, status in [(0, "success"), (1, "success"), (2, "failed")]:
            await _insert(conn, solution_id, status, t0 + timedelta(minutes=minutes))
        row = await conn.fetchrow("SELECT * FROM solutions WHERE id = $1", solution_id)
    assert row["success_rate"] == Decimal("66.67")
    assert row["execution_count"] == 3
    assert row["success_count"] == 2
    assert row["last_success_at"] == t0 + timedelta(minutes=1)


async def test_rounding_matches_the_document_on_awkward_fractions(pool):
    """1/3, 2/3, 1/7 ... up to 1/400: DECIMAL(5,2) rounding of the same numeric value."""
    async with pool.acquire() as conn:
        [solution_id] = await _solutions(conn, 1)
        rng = random.Random(7)
        for _ in range(400):
            async with conn.transaction():
                await conn.execute(
                    "INSERT INTO execution_history (solution_id, execution_status) VALUES ($1, $2)",
                    solution_id,
                    "success" if rng.random() < 0.37 else "failed",
                )
            await _assert_equal_to_recount(conn, [solution_id])


async def test_migration_backfills_counts_from_existing_history(pool):
    """Apply 0008 over a history written by the document's trigger: counts start exact."""
    migrations = {m.version: m for m in load_migrations()}
    document_function = migrations[2].sql.split("CREATE TRIGGER")[0]
    async with pool.acquire() as conn:
        ids = await _solutions(conn, 3)
        async with conn.transaction():
            await conn.execute("ALTER TABLE solutions DROP COLUMN success_count")
            await conn.execute(document_function)
            rng = random.Random(5)
            for _ in range(60):
                await conn.execute(
                    "INSERT INTO execution_history (solution_id, execution_status) VALUES ($1, $2)",
                    rng.choice(ids[:2]),  # ids[2] keeps an empty history
                    rng.choice(STATUSES),
                )
            await conn.execute(migrations[8].sql)
        stored = await _assert_equal_to_recount(conn, ids)
        for row in stored:
            successes = await conn.fetchval(
                "SELECT count(*) FROM execution_history WHERE solution_id = $1 AND execution_status = 'success'",
                row["id"],
            )
            assert row["success_count"] == successes
        # and the incremental body carries on from the backfilled counts
        await _insert(conn, ids[2], "success", datetime(2026, 2, 1))
        await _insert(conn, ids[0], "failed", datetime(2026, 2, 1))
        await _assert_equal_to_recount(conn, ids)
