"""`maintain`: exactly the rows past the retention go, and learned success rates stay."""

from __future__ import annotations

from elk_resolver.store.maintain import maintain


async def _error(conn, hash_: str, days_ago: int) -> int:
    return await conn.fetchval(
        """INSERT INTO error_logs (error_type, error_message, source_system, hash_signature,
                                   created_at, last_seen_at, timestamp)
           VALUES ('kubernetes', $1::text, 'svc', $1::text, LOCALTIMESTAMP - make_interval(days => $2),
                   LOCALTIMESTAMP - make_interval(days => $2), LOCALTIMESTAMP - make_interval(days => $2))
           RETURNING id""",
        hash_, days_ago,
    )


async def _solution(conn, hash_: str) -> int:
    return await conn.fetchval(
        """INSERT INTO solutions (error_hash, solution_type, solution_description, solution_commands)
           VALUES ($1, 'restart', 'restart it', '[]'::jsonb) RETURNING id""",
        hash_,
    )


async def _run(conn, error_id: int, solution_id: int, status: str, days_ago: int) -> None:
    await conn.execute(
        """INSERT INTO execution_history (error_log_id, solution_id, execution_status, executed_at)
           VALUES ($1, $2, $3, LOCALTIMESTAMP - make_interval(days => $4))""",
        error_id, solution_id, status, days_ago,
    )


async def test_maintain_removes_exactly_the_rows_past_retention_and_keeps_learned_rates(pool):
    async with pool.acquire() as conn:
        learned = await _error(conn, "a" * 64, 200)  # old error whose solution ran
        learned_sol = await _solution(conn, "a" * 64)
        await _run(conn, learned, learned_sol, "success", 150)
        await _run(conn, learned, learned_sol, "success", 120)
        await _run(conn, learned, learned_sol, "failed", 100)
        unexecuted = await _error(conn, "b" * 64, 200)  # old error, solution never ran
        await _solution(conn, "b" * 64)
        await _error(conn, "c" * 64, 95)  # old error, nothing refers to it
        recent = await _error(conn, "d" * 64, 10)
        recent_sol = await _solution(conn, "d" * 64)
        await _run(conn, recent, recent_sol, "success", 5)
        await _run(conn, recent, recent_sol, "failed", 120)  # an old run of a recent error
        for days in (100, 1):
            await conn.execute(
                """INSERT INTO decision_log (request_id, decision, reason, decided_at)
                   VALUES ($1, 'dry_run', 'test', LOCALTIMESTAMP - make_interval(days => $2))""",
                f"r{days}", days,
            )
        old_part = await conn.fetchval("SELECT ensure_error_occurrences_partition('2020-01-01')")
        await conn.execute(
            """INSERT INTO error_occurrences (event_identity, occurred_at, hash_signature)
               VALUES ('old', '2020-01-15', $1), ('new', LOCALTIMESTAMP, $1)""",
            "a" * 64,
        )
        before = await conn.fetchrow(
            "SELECT success_rate, execution_count, success_count, last_success_at FROM solutions WHERE id = $1",
            learned_sol,
        )
        assert before["execution_count"] == 3 and float(before["success_rate"]) == 66.67

    result = await maintain(pool, retention_days=90, batch_size=1)  # batch of 1: the loop is exercised

    async with pool.acquire() as conn:
        assert sorted(await conn.fetchval("SELECT array_agg(hash_signature) FROM error_logs")) == ["a" * 64, "d" * 64]
        assert await conn.fetchval("SELECT count(*) FROM error_logs WHERE id = $1", unexecuted) == 0
        assert sorted(await conn.fetchval("SELECT array_agg(id) FROM solutions")) == sorted([learned_sol, recent_sol])
        after = await conn.fetchrow(
            "SELECT success_rate, execution_count, success_count, last_success_at FROM solutions WHERE id = $1",
            learned_sol,
        )
        assert dict(after) == dict(before)
        history = await conn.fetch("SELECT solution_id, execution_status FROM execution_history")
        assert [(r["solution_id"], r["execution_status"]) for r in history] == [(recent_sol, "success")]
        assert await conn.fetchval("SELECT array_agg(request_id) FROM decision_log") == ["r1"]
        assert await conn.fetchval("SELECT to_regclass($1)", old_part) is None
        assert await conn.fetchval("SELECT array_agg(event_identity) FROM error_occurrences") == ["new"]
        run = await conn.fetchrow("SELECT retention_days, finished_at, deleted FROM maintenance_runs")
        assert run["finished_at"] is not None and run["deleted"]["error_logs"] == 2

    assert result.deleted["execution_history"] == 4
    assert result.deleted["solutions"] == 1
    assert result.dropped_partitions == [old_part]

    again = await maintain(pool, retention_days=90)
    assert sum(again.deleted.values()) == 0 and again.dropped_partitions == []
