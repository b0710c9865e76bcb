"""The CLI during an incident (issue 26, item 7 and part of 8): a typo fails loudly, the state of
things is shown with its age, a merge says what it merges and refuses to mix error types, the
kill switch shows itself, errors can be listed like the console lists them, and --help is quick
because it imports none of the service."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import pytest

from tests.test_ops_cli import cli  # noqa: F401 (the fixture)


@pytest.fixture
def run(cli, database_url):  # noqa: F811
    return lambda *argv: cli(*argv, env={"ELK_RESOLVER_DATABASE_URL": database_url, "ELK_RESOLVER_OPERATOR": "oncall"})


def test_disabling_a_playbook_that_does_not_exist_fails_and_lists_the_names(run, database_url):
    """Was: `playbooks disable no-such-playbook` printed 'disabled' and exited 0."""
    code, out, err = run("playbooks", "disable", "no-such-playbook")
    assert code == 2 and out == ""
    assert "no playbook is named 'no-such-playbook'" in err and "elasticsearch-read-only-index" in err
    code, out, err = run("playbooks", "list")
    assert code == 0, err
    rows = {line.split()[0]: line.split()[1] for line in out.splitlines()[2:]}
    assert "pod-crashloopbackoff-restart" in rows and set(rows.values()) == {"enabled"}
    code, out, err = run("playbooks", "disable", "pod-crashloopbackoff-restart")
    assert code == 0 and "disabled" in out, err
    code, out, _ = run("playbooks", "list")
    assert re.search(r"^pod-crashloopbackoff-restart +disabled +oncall ", out, re.M), out
    assert len(out.splitlines()) - 2 == len(rows)
    assert sql(database_url, "SELECT count(*) FROM audit_log WHERE action = 'playbook disabled' AND actor = 'oncall'") == 1


def sql(database_url: str, statement: str, *args):
    """One statement on its own connection, from a plain (not async) test: the CLI runs its own
    event loop, so these tests do not run in one."""
    import asyncio

    import asyncpg

    async def one():
        conn = await asyncpg.connect(database_url)
        try:
            return await conn.fetchval(statement, *args)
        finally:
            await conn.close()

    return asyncio.run(one())


def test_status_shows_each_rows_age_and_marks_stale_rows(run, database_url):
    """Was: every stage 'healthy' ten minutes after the service stopped, with no age."""
    sql(database_url, """
        INSERT INTO system_status (component_name, status, last_check, error_count) VALUES
          ('stage.ingest@gone:1', 'healthy', LOCALTIMESTAMP - INTERVAL '10 minutes', 0),
          ('kafka', 'healthy', LOCALTIMESTAMP - INTERVAL '5 seconds', 0)""")
    code, out, err = run("status")
    assert code == 0, err
    gone = next(line for line in out.splitlines() if line.startswith("stage.ingest@gone:1"))
    fresh = next(line for line in out.splitlines() if line.startswith("kafka"))
    assert "STALE (was healthy)" in gone and " 10m " in gone
    assert "STALE" not in fresh and "healthy" in fresh and (" 5s " in fresh or " 6s " in fresh)
    assert "1 row(s) not checked for over 60s" in out
    code, out, _ = run("status", "--json")
    rows = {r["component_name"]: r for r in json.loads(out)}
    assert rows["stage.ingest@gone:1"]["stale"] and rows["stage.ingest@gone:1"]["shown_status"] == "stale"
    assert not rows["kafka"]["stale"]


def _two_errors(database_url: str, type_a: str, type_b: str) -> tuple[int, int]:
    ids = []
    for i, kind in enumerate((type_a, type_b)):
        ids.append(sql(database_url,
                       "INSERT INTO error_logs (error_type, error_message, source_system, hash_signature) "
                       "VALUES ($1, $2, 'x', $3) RETURNING id", kind, f"message {i} of {kind}", f"{i:064x}"))
    return ids[0], ids[1]


def test_merging_errors_of_different_types_needs_force_and_says_what_it_merges(run, database_url):
    """Was: `errors merge 3 9` merged a Java OOM into a network error without a word."""
    network, oom = _two_errors(database_url, "network", "java_oom")
    code, out, err = run("errors", "merge", str(network), str(oom))
    assert code == 2 and "'java_oom'" in err and "'network'" in err and "--force" in err
    assert sql(database_url, "SELECT merged_into FROM error_logs WHERE id = $1", oom) is None
    code, out, err = run("errors", "merge", str(network), str(oom), "--force")
    assert code == 0, err
    assert f"merged error {oom} (java_oom: message 1 of java_oom) into error {network} (network: message 0 of network)" in out
    assert sql(database_url, "SELECT merged_into FROM error_logs WHERE id = $1", oom) == network
    assert sql(database_url, "SELECT actor FROM error_merge_log WHERE action = 'merge'") == "oncall"


def test_errors_of_one_type_merge_without_force(run, database_url):
    a, b = _two_errors(database_url, "network", "network")
    code, out, err = run("errors", "merge", str(a), str(b))
    assert code == 0 and f"merged error {b} (network" in out, err


def test_kill_switch_with_no_argument_shows_the_state(run):
    """Was: `kill-switch` with no argument failed."""
    code, out, err = run("kill-switch")
    assert code == 0 and out.startswith("kill switch: off"), err
    code, out, _ = run("kill-switch", "on")
    assert code == 0 and "ON" in out
    code, out, _ = run("kill-switch")
    assert code == 0 and out.startswith("kill switch: ON") and "last set by oncall" in out


def test_errors_list_filters_like_the_console(run, database_url):
    sql(database_url, """
        INSERT INTO error_logs (error_type, error_message, source_system, hash_signature, raw_log_data) VALUES
          ('kubernetes', 'back-off restarting', 'kubelet', 'h1', '{"kubernetes": {"pod": {"name": "logstash-0"}}}'),
          ('network', 'refused', 'billing', 'h2', '{}')""")
    code, out, err = run("errors", "list", "--q", "logstash-0")
    assert code == 0, err
    assert "back-off restarting" in out and "refused" not in out
    code, out, _ = run("errors", "list", "--type", "network", "--json")
    assert [e["error_message"] for e in json.loads(out)["errors"]] == ["refused"]
    first = sql(database_url, "SELECT id FROM error_logs WHERE hash_signature = 'h1'")
    code, out, err = run("errors", "resolve", str(first))
    assert code == 0 and f"error {first}: resolved" in out and "by oncall" in out, err
    code, out, _ = run("errors", "list", "--state", "resolved")
    assert "back-off restarting" in out and "refused" not in out
    code, out, err = run("errors", "snooze", str(first), "2h")
    assert code == 0 and "snoozed until" in out, err
    code, out, _ = run("errors", "list", "--state", "open")
    assert "refused" in out and "back-off" not in out


def test_help_imports_none_of_the_service():
    """Was: `elk-resolver --help` imported the console and the handlers (~3 s on a cold start)."""
    probe = ("import sys\nfrom elk_resolver.cli.main import main\n"
             "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
             "heavy = ('handlers', 'streams', 'elk_resolver.console', 'elk_resolver.operations.approvals', "
             "'asyncpg', 'aiohttp', 'aiokafka', 'faststream', 'pydantic', 'elk_resolver.settings')\n"
             "print(sorted(m for m in sys.modules if m.split('.')[0] in ('handlers', 'streams', 'asyncpg', 'aiohttp', "
             "'aiokafka', 'faststream', 'pydantic') or m.startswith(heavy)), file=sys.stderr)\n")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert done.stderr.strip() == "[]", done.stderr
    assert "kill-switch" in done.stdout and "errors" in done.stdout


def test_run_on_a_busy_http_port_names_the_port_and_the_setting(cli, database_url, kafka, monkeypatch):  # noqa: F811
    """Was: 'cannot reach a service' (the same path serves `up`: both bind the HTTP port in _serve)."""
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        code, _, err = cli("run", "--stage", "monitor", env={
            "ELK_RESOLVER_DATABASE_URL": database_url, "ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap_servers,
            "ELK_RESOLVER_HTTP_PORT": str(port), "ELK_RESOLVER_HTTP_HOST": "127.0.0.1"})
    assert code == 2 and err.count("\n") == 1, err
    assert f"HTTP port {port} on 127.0.0.1 is in use" in err and "ELK_RESOLVER_HTTP_PORT" in err
