"""The CLI's database commands: report, patterns, status, solutions, and one-line failures."""

from __future__ import annotations

import json

import pytest

from elk_resolver.cli.main import main
from elk_resolver.events.fingerprint import fingerprint


@pytest.fixture
def cli(monkeypatch, capsys):
    def run(*argv: str, env: dict[str, str] | None = None) -> tuple[int, str, str]:
        for key, value in (env or {}).items():
            monkeypatch.setenv(key, value)
        try:
            code = main(list(argv))
        except SystemExit as exc:  # argparse
            code = exc.code
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
async def fixture_data(pool):
    async with pool.acquire() as conn:
        await conn.execute("""
            INSERT INTO error_logs (error_type, error_message, source_system, hash_signature, created_at) VALUES
              ('kubernetes', 'CrashLoopBackOff pod api', 'api', 'h-k8s-1', NOW()),
              ('kubernetes', 'CrashLoopBackOff pod web', 'web', 'h-k8s-2', NOW() - INTERVAL '1 day'),
              ('network', 'Connection refused port 5432', 'billing', 'h-net', NOW()),
              ('resource', 'OOMKilled old', 'worker', 'h-old', NOW() - INTERVAL '30 days');
            INSERT INTO solutions (error_hash, solution_type, solution_description, solution_commands) VALUES
              ('h-k8s-1', 'restart', 'restart api', '[]'), ('h-net', 'config_fix', 'fix dns', '[]');
            INSERT INTO execution_history (error_log_id, solution_id, execution_status, execution_time)
              SELECT el.id, s.id, st, INTERVAL '2 seconds'
              FROM error_logs el JOIN solutions s ON s.error_hash = el.hash_signature,
                   unnest(ARRAY['success', 'success', 'failed']) st
              WHERE el.hash_signature = 'h-k8s-1';
            INSERT INTO system_status (component_name, status, error_count) VALUES
              ('elasticsearch', 'warning', 2), ('kibana', 'healthy', 0), ('logstash', 'error', 5);
        """)


def test_report_prints_the_four_queries_for_fixture_data(cli, database_url, fixture_data):
    env = {"ELK_RESOLVER_DATABASE_URL": database_url}
    code, out, err = cli("report", env=env)
    assert code == 0, err
    for title in ("Error statistics by type", "Solution success ranking", "Executions in the last 24 hours",
                  "System status"):
        assert title in out
    stats = out.split("== Solution")[0]
    assert "kubernetes" in stats and "network" in stats and "resource" not in stats  # 7-day window
    lines = [line.split() for line in stats.splitlines()]
    assert ["kubernetes", "2", "2"] in lines and ["network", "1", "1"] in lines
    status_part = out.split("== System status ==")[1].splitlines()
    assert status_part[3].startswith("logstash") and status_part[5].startswith("kibana")  # worst first

    code, out, _ = cli("report", "--json", env=env)
    report = json.loads(out)
    assert report["solution_ranking"] == [{"solution_type": "restart", "avg_success_rate": 66.67, "total_executions": 3}]
    assert [r["execution_status"] for r in report["recent_executions"]].count("success") == 2
    assert [r["component_name"] for r in report["system_status"]] == ["logstash", "elasticsearch", "kibana"]


def test_patterns_test_shows_the_match_template_and_hash(cli, database_url):
    env = {"ELK_RESOLVER_DATABASE_URL": database_url}
    message = "Connection refused: connect to db.prod.internal port 5432 failed after 3000 ms"
    code, out, err = cli("patterns", "test", message, env=env)
    assert code == 0, err
    expected = fingerprint("network", message, "template")
    assert "3 'Connection Refused'" in out
    assert "error_type: network" in out
    assert f"template:   {expected.template}" in out
    assert f"hash:       {expected.hash}" in out

    code, out, _ = cli("patterns", "add", "--name", "DB refused", "--regex", r"Connection refused.*port 5432",
                       "--category", "database", "--priority", "1", env=env)
    assert code == 0 and "added pattern" in out
    code, out, _ = cli("patterns", "test", message, env=env)
    assert "error_type: database" in out and f"hash:       {fingerprint('database', message).hash}" in out

    new_id = out.split("pattern:    ")[1].split()[0]
    assert cli("patterns", "disable", new_id, env=env)[0] == 0
    code, out, _ = cli("patterns", "list", env=env)
    assert "disabled" in out
    assert "error_type: network" in cli("patterns", "test", message, env=env)[1]

    code, out, _ = cli("patterns", "test", "java.lang.IllegalStateException: boom", "--error-type", "IllegalState",
                       env=env)
    assert "none matched" in out and "error_type: IllegalState" in out

    code, _, err = cli("patterns", "add", "--name", "bad", "--regex", r"(a)\1", "--category", "x", env=env)
    assert code == 2 and err.count("\n") == 1 and "regex refused" in err


def test_status_and_solutions_list(cli, database_url, fixture_data):
    env = {"ELK_RESOLVER_DATABASE_URL": database_url}
    code, out, _ = cli("status", env=env)
    assert code == 0 and out.splitlines()[2].startswith("logstash")
    code, out, _ = cli("solutions", "list", "--json", env=env)
    rows = json.loads(out)
    assert rows[0]["solution_type"] == "restart" and rows[0]["execution_count"] == 3


COMMANDS = [
    ["report"], ["status"], ["solutions"], ["patterns", "list"], ["patterns", "test", "x"], ["maintain"],
    ["approvals", "list"], ["kill-switch", "status"], ["replay", "--since", "1h"],
    ["backfill-es", "--index", "logs-*", "--since", "1h"], ["run", "--stage", "ingest"],
]


@pytest.mark.parametrize("argv", COMMANDS, ids=lambda a: " ".join(a[:2]))
def test_every_command_answers_an_unreachable_database_in_one_line(cli, argv):
    env = {
        "ELK_RESOLVER_DATABASE_URL": "postgresql://app:secret@127.0.0.1:1/elk",
        "ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:2",
        "ELK_RESOLVER_ELASTICSEARCH_URL": "http://127.0.0.1:3",
    }
    code, out, err = cli(*argv, env=env)
    assert code == 5
    assert err.count("\n") == 1 and "cannot reach PostgreSQL at 127.0.0.1:1/elk" in err
    assert "secret" not in err and "Traceback" not in err


def test_a_database_behind_the_migrations_is_one_line(cli, empty_database_url):
    code, _, err = cli("report", env={"ELK_RESOLVER_DATABASE_URL": empty_database_url})
    assert code == 3 and err.count("\n") == 1 and "elk-resolver migrate" in err


def test_bad_arguments_are_one_line(cli):
    code, _, err = cli("replay", "--since", "last tuesday")
    assert code == 2 and err.count("\n") == 1
    code, _, err = cli("patterns", "frobnicate")
    assert code == 2 and err.count("\n") == 1
