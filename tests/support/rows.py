"""Rows a test needs in place, written the one way the schema accepts them."""

from __future__ import annotations

import asyncpg


async def record_run(conn: asyncpg.Connection, hash_signature: str = "h1", status: str = "success") -> None:
    """An error, one solution for it, and one execution_history row of that solution."""
    await conn.execute("""
        INSERT INTO error_logs (error_type, error_message, source_system, hash_signature)
        VALUES ('network', 'x', 'svc', $1)
    """, hash_signature)
    await conn.execute("""
        INSERT INTO solutions (error_hash, solution_type, solution_description, solution_commands)
        VALUES ($1, 'restart', 'r', '[]')
    """, hash_signature)
    await conn.execute("""
        INSERT INTO execution_history (error_log_id, solution_id, execution_status)
        SELECT (SELECT id FROM error_logs WHERE hash_signature = $1),
               (SELECT id FROM solutions WHERE error_hash = $1), $2
    """, hash_signature, status)
