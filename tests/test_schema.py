"""The design document's schema, checked by introspecting a real, migrated PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal

import asyncpg
import pytest

# (column, data_type as information_schema reports it, length/precision, nullable, default)
DOCUMENT_COLUMNS = {
    "error_logs": [
        ("id", "integer", None, "NO", "nextval('error_logs_id_seq'::regclass)"),
        ("timestamp", "timestamp without time zone", None, "YES", "now()"),
        ("error_type", "character varying", 100, "NO", None),
        ("error_message", "text", None, "NO", None),
        ("source_system", "character varying", 50, "NO", None),
        ("severity", "character varying", 20, "YES", "'ERROR'::character varying"),
        ("stack_trace", "text", None, "YES", None),
        ("elasticsearch_id", "character varying", 100, "YES", None),
        ("raw_log_data", "jsonb", None, "YES", None),
        ("hash_signature", "character varying", 64, "NO", None),
        ("created_at", "timestamp without time zone", None, "YES", "now()"),
    ],
    "solutions": [
        ("id", "integer", None, "NO", "nextval('solutions_id_seq'::regclass)"),
        ("error_hash", "character varying", 64, "YES", None),
        ("solution_type", "character varying", 50, "NO", None),
        ("solution_description", "text", None, "NO", None),
        ("solution_commands", "jsonb", None, "NO", None),
        ("success_rate", "numeric", (5, 2), "YES", "0.00"),
        ("execution_count", "integer", None, "YES", "0"),
        ("last_success_at", "timestamp without time zone", None, "YES", None),
        ("ai_analysis", "text", None, "YES", None),
        ("created_at", "timestamp without time zone", None, "YES", "now()"),
        ("updated_at", "timestamp without time zone", None, "YES", "now()"),
        ("ai_model", "character varying", 50, "YES", None),
        ("ai_confidence", "numeric", (3, 2), "YES", None),
    ],
    "execution_history": [
        ("id", "integer", None, "NO", "nextval('execution_history_id_seq'::regclass)"),
        ("error_log_id", "integer", None, "YES", None),
        ("solution_id", "integer", None, "YES", None),
        ("execution_status", "character varying", 20, "NO", None),
        ("execution_output", "text", None, "YES", None),
        ("execution_time", "interval", None, "YES", None),
        ("executed_at", "timestamp without time zone", None, "YES", "now()"),
        ("executed_by", "character varying", 50, "YES", "'auto-resolver'::character varying"),
    ],
    "error_patterns": [
        ("id", "integer", None, "NO", "nextval('error_patterns_id_seq'::regclass)"),
        ("pattern_name", "character varying", 100, "NO", None),
        ("pattern_regex", "text", None, "NO", None),
        ("error_category", "character varying", 50, "NO", None),
        ("priority", "integer", None, "YES", "5"),
        ("auto_resolve", "boolean", None, "YES", "false"),
        ("created_at", "timestamp without time zone", None, "YES", "now()"),
    ],
    "system_status": [
        ("id", "integer", None, "NO", "nextval('system_status_id_seq'::regclass)"),
        ("component_name", "character varying", 50, "NO", None),
        ("status", "character varying", 20, "NO", None),
        ("last_check", "timestamp without time zone", None, "YES", "now()"),
        ("error_count", "integer", None, "YES", "0"),
        ("last_error_at", "timestamp without time zone", None, "YES", None),
        ("metadata", "jsonb", None, "YES", None),
    ],
}

DOCUMENT_INDEXES = {
    # name: (table, columns, method)
    "idx_error_logs_timestamp": ("error_logs", ["timestamp"], "btree"),
    "idx_error_logs_hash": ("error_logs", ["hash_signature"], "btree"),
    "idx_error_logs_type": ("error_logs", ["error_type"], "btree"),
    "idx_solutions_error_hash": ("solutions", ["error_hash"], "btree"),
    "idx_execution_history_error_log_id": ("execution_history", ["error_log_id"], "btree"),
    "idx_execution_history_executed_at": ("execution_history", ["executed_at"], "btree"),
    "idx_solutions_ai_model": ("solutions", ["ai_model"], "btree"),
    "idx_error_logs_severity": ("error_logs", ["severity"], "btree"),
    "idx_error_logs_raw_log_data": ("error_logs", ["raw_log_data"], "gin"),
}


async def test_every_document_column_has_its_type_default_and_nullability(pool):
    for table, expected in DOCUMENT_COLUMNS.items():
        rows = await pool.fetch(
            """
            SELECT column_name, data_type, character_maximum_length, numeric_precision,
                   numeric_scale, is_nullable, column_default
            FROM information_schema.columns
            WHERE table_schema = 'public' AND table_name = $1
            """,
            table,
        )
        actual = {r["column_name"]: r for r in rows}
        for name, data_type, size, nullable, default in expected:
            assert name in actual, f"{table}.{name} is missing"
            col = actual[name]
            assert col["data_type"] == data_type, (table, name, col["data_type"])
            if isinstance(size, tuple):
                assert (col["numeric_precision"], col["numeric_scale"]) == size, (table, name)
            elif size is not None:
                assert col["character_maximum_length"] == size, (table, name)
            assert col["is_nullable"] == nullable, (table, name)
            assert col["column_default"] == default, (table, name, col["column_default"])


async def test_primary_keys_unique_hash_and_foreign_keys(pool):
    pks = await pool.fetch(
        """
        SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc
        JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
        WHERE tc.constraint_type = 'PRIMARY KEY' AND tc.table_schema = 'public'
        """
    )
    pk = {(r["table_name"], r["column_name"]) for r in pks}
    for table in DOCUMENT_COLUMNS:
        assert (table, "id") in pk

    unique = await pool.fetch(
        """
        SELECT tc.table_name, kcu.column_name FROM information_schema.table_constraints tc
        JOIN information_schema.key_column_usage kcu USING (constraint_schema, constraint_name)
        WHERE tc.constraint_type = 'UNIQUE' AND tc.table_schema = 'public'
        """
    )
    assert ("error_logs", "hash_signature") in {(r["table_name"], r["column_name"]) for r in unique}

    fks = await pool.fetch(
        """
        SELECT conrelid::regclass::text AS child, a.attname AS child_col,
               confrelid::regclass::text AS parent, af.attname AS parent_col
        FROM pg_constraint c
        JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = ANY(c.conkey)
        JOIN pg_attribute af ON af.attrelid = c.confrelid AND af.attnum = ANY(c.confkey)
        WHERE c.contype = 'f'
        """
    )
    found = {(r["child"], r["child_col"], r["parent"], r["parent_col"]) for r in fks}
    assert ("solutions", "error_hash", "error_logs", "hash_signature") in found
    assert ("execution_history", "error_log_id", "error_logs", "id") in found
    assert ("execution_history", "solution_id", "solutions", "id") in found


async def test_every_document_index_exists_on_its_columns(pool):
    rows = await pool.fetch(
        """
        SELECT i.relname AS name, t.relname AS table_name, am.amname AS method,
               array_agg(a.attname ORDER BY k.ord) AS columns
        FROM pg_index x
        JOIN pg_class i ON i.oid = x.indexrelid
        JOIN pg_class t ON t.oid = x.indrelid
        JOIN pg_am am ON am.oid = i.relam
        CROSS JOIN LATERAL unnest(x.indkey) WITH ORDINALITY AS k(attnum, ord)
        JOIN pg_attribute a ON a.attrelid = t.oid AND a.attnum = k.attnum
        GROUP BY i.relname, t.relname, am.amname
        """
    )
    actual = {r["name"]: (r["table_name"], list(r["columns"]), r["method"]) for r in rows}
    for name, expected in DOCUMENT_INDEXES.items():
        assert actual.get(name) == expected, (name, actual.get(name))


async def test_sample_patterns_are_seeded_and_new_patterns_get_fresh_ids(pool):
    rows = await pool.fetch(
        "SELECT id, pattern_name, pattern_regex, error_category, priority, auto_resolve FROM error_patterns ORDER BY id"
    )
    assert [tuple(r) for r in rows] == [
        (1, "Pod CrashLoopBackOff", "CrashLoopBackOff.*pod.*", "kubernetes", 1, True),
        (2, "Out of Memory", "OutOfMemory|OOMKilled.*", "resource", 2, True),
        (3, "Connection Refused", "Connection refused.*port.*", "network", 3, True),
    ]
    new_id = await pool.fetchval(
        "INSERT INTO error_patterns (pattern_name, pattern_regex, error_category) VALUES ('x', 'x', 'y') RETURNING id"
    )
    assert new_id == 4
    assert await pool.fetchval("SELECT priority FROM error_patterns WHERE id = 4") == 5


async def _error(pool, hash_signature="a" * 64, error_type="kubernetes"):
    return await pool.fetchval(
        """INSERT INTO error_logs (error_type, error_message, source_system, hash_signature)
           VALUES ($1, 'boom', 'api', $2) RETURNING id""",
        error_type,
        hash_signature,
    )


async def _solution(pool, error_hash="a" * 64, solution_type="restart"):
    return await pool.fetchval(
        """INSERT INTO solutions (error_hash, solution_type, solution_description, solution_commands)
           VALUES ($1, $2, 'restart it', '[]'::jsonb) RETURNING id""",
        error_hash,
        solution_type,
    )


async def test_trigger_keeps_success_rate_count_and_last_success(pool):
    error_id = await _error(pool)
    solution_id = await _solution(pool)
    before = await pool.fetchval("SELECT updated_at FROM solutions WHERE id = $1", solution_id)
    t0 = datetime(2026, 1, 1, 12, 0, 0)
    for offset, status in [(0, "success"), (1, "success"), (2, "failed")]:
        await pool.execute(
            """INSERT INTO execution_history (error_log_id, solution_id, execution_status, executed_at)
               VALUES ($1, $2, $3, $4)""",
            error_id,
            solution_id,
            status,
            t0 + timedelta(minutes=offset),
        )
    row = await pool.fetchrow("SELECT * FROM solutions WHERE id = $1", solution_id)
    assert row["success_rate"] == Decimal("66.67")
    assert row["execution_count"] == 3
    assert row["last_success_at"] == t0 + timedelta(minutes=1)  # the last success, not the failure
    assert row["updated_at"] > before


async def test_duplicate_hash_signature_is_rejected(pool):
    await _error(pool)
    with pytest.raises(asyncpg.UniqueViolationError):
        await _error(pool)


async def test_rows_breaking_a_foreign_key_are_rejected(pool):
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await _solution(pool, error_hash="f" * 64)
    error_id = await _error(pool)
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute(
            "INSERT INTO execution_history (error_log_id, solution_id, execution_status) VALUES ($1, 999, 'success')",
            error_id,
        )
    with pytest.raises(asyncpg.ForeignKeyViolationError):
        await pool.execute(
            "INSERT INTO execution_history (error_log_id, execution_status) VALUES (999, 'success')"
        )


async def test_document_example_queries_run_unchanged(pool):
    from elk_resolver.store.db import queries

    q = queries()
    e1 = await _error(pool, "1" * 64, "kubernetes")
    await _error(pool, "2" * 64, "kubernetes")
    await _error(pool, "3" * 64, "network")
    await pool.execute(
        "INSERT INTO error_logs (error_type, error_message, source_system, hash_signature, created_at) "
        "VALUES ('old', 'x', 'y', $1, NOW() - INTERVAL '30 days')",
        "4" * 64,
    )
    s1 = await _solution(pool, "1" * 64, "kubernetes")
    await _solution(pool, "2" * 64, "restart")  # never executed: not ranked
    for status in ("success", "failed"):
        await pool.execute(
            "INSERT INTO execution_history (error_log_id, solution_id, execution_status, execution_time) "
            "VALUES ($1, $2, $3, INTERVAL '2 seconds')",
            e1,
            s1,
            status,
        )
    await pool.execute(
        "INSERT INTO system_status (component_name, status, error_count) VALUES "
        "('kibana', 'healthy', 0), ('elasticsearch', 'error', 3), ('logstash', 'warning', 1), ('kafka', 'error', 7)"
    )

    stats = await pool.fetch(q.report_error_stats)
    assert [(r["error_type"], r["total_errors"], r["days_occurred"]) for r in stats] == [
        ("kubernetes", 2, 1),
        ("network", 1, 1),
    ]
    ranking = await pool.fetch(q.report_solution_ranking)
    assert [(r["solution_type"], r["avg_success_rate"], r["total_executions"]) for r in ranking] == [
        ("kubernetes", Decimal("50.00"), 2)
    ]
    recent = await pool.fetch(q.report_recent_executions)
    assert [(r["error_type"], r["solution_type"], r["execution_status"]) for r in recent] == [
        ("kubernetes", "kubernetes", "failed"),
        ("kubernetes", "kubernetes", "success"),
    ] or [(r["error_type"], r["solution_type"], r["execution_status"]) for r in recent] == [
        ("kubernetes", "kubernetes", "success"),
        ("kubernetes", "kubernetes", "failed"),
    ]
    assert all(r["execution_time"] == timedelta(seconds=2) for r in recent)
    dashboard = await pool.fetch(q.report_system_status)
    assert [r["component_name"] for r in dashboard] == ["kafka", "elasticsearch", "logstash", "kibana"]
    assert all(r["seconds_since_check"] >= 0 for r in dashboard)
