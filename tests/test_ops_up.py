"""`elk-resolver up`: embedded stack and every stage in one process; Ctrl-C stops all of it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import psutil

from elk_resolver.cli.main import main
from elk_resolver.kafka.embedded import free_port, port_open


def test_up_prints_where_things_are_serves_ready_and_ctrl_c_leaves_nothing_behind(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELK_RESOLVER_")}
    env.update({"ELK_RESOLVER_STATE_DIR": str(tmp_path / "state"), "ELK_RESOLVER_HTTP_PORT": str(free_port()),
                "ELK_RESOLVER_TOPIC_PARTITIONS": "2", "ELK_RESOLVER_MONITOR_INTERVAL_S": "1"})
    proc = subprocess.Popen([sys.executable, "-m", "elk_resolver.cli", "up"], env=env, cwd=tmp_path,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 90
        while not any(line.startswith("stages running") for line in lines):
            assert time.monotonic() < deadline and proc.poll() is None, lines
            lines.append(proc.stdout.readline().strip())
        out = "\n".join(lines)
        kafka = re.search(r"Kafka bootstrap servers: (\S+)", out)[1]
        database = re.search(r"Database URL: (\S+)", out)[1]
        http = re.search(r"HTTP: (\S+)", out)[1]
        assert "Logstash writes to topic elk.errors.raw" in out
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 2  # the broker and PostgreSQL

        deadline = time.monotonic() + 60
        while httpx.get(f"{http}/ready", timeout=3).status_code != 200:
            assert time.monotonic() < deadline, httpx.get(f"{http}/ready").text
            time.sleep(0.2)

        # another command finds the running stack's database without being told
        assert "postgresql" in (tmp_path / "state" / "running.json").read_text()

        proc.send_signal(signal.SIGINT)
        assert proc.wait(60) == 0
        for child in children:
            assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE
        for address in (kafka, database.split("@")[1].split("/")[0], http.split("//")[1]):
            host, port = address.rsplit(":", 1)
            assert not port_open(host, int(port)), f"{address} still open"
        assert not (tmp_path / "state" / "running.json").exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_an_unreachable_broker_is_one_line(database_url, monkeypatch, capsys):
    monkeypatch.setenv("ELK_RESOLVER_DATABASE_URL", database_url)
    monkeypatch.setenv("ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS", f"127.0.0.1:{free_port()}")
    for argv in (["replay", "--since", "1h"], ["topics"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 5 and err.count("\n") == 1 and "cannot reach Kafka" in err, err


def test_live_mode_with_kubectl_refuses_to_start_without_a_context_or_a_service_account(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.chdir(tmp_path)  # no .env
    monkeypatch.setenv("ELK_RESOLVER_DATABASE_URL", "postgresql://nobody@127.0.0.1:1/none")
    monkeypatch.setenv("ELK_RESOLVER_KAFKA_BOOTSTRAP_SERVERS", "127.0.0.1:1")
    monkeypatch.setenv("ELK_RESOLVER_EXECUTION_MODE", "live")
    monkeypatch.setenv("ELK_RESOLVER_KUBECTL_NAMESPACES", "shop")
    token = tmp_path / "serviceaccount" / "token"
    monkeypatch.setenv("ELK_RESOLVER_KUBECTL_SERVICEACCOUNT_TOKEN", str(token))
    monkeypatch.delenv("ELK_RESOLVER_KUBECTL_CONTEXT", raising=False)
    for argv in (["run"], ["run", "--stage", "execute"], ["up"]):
        code = main(argv)
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1, err
        assert "live mode with kubectl refuses to start" in err and "ELK_RESOLVER_KUBECTL_CONTEXT" in err
    # Stages that run nothing are not held back by it (they fail later, on the fake broker).
    assert "refuses to start" not in _first_line(main, ["run", "--stage", "ingest"], capsys)

    from elk_resolver.actions.policy import live_kubectl_problem
    from elk_resolver.settings import make_settings

    assert live_kubectl_problem(make_settings(execution_mode="dry-run")) is None
    assert live_kubectl_problem(make_settings(kubectl_context="prod")) is None
    assert live_kubectl_problem(make_settings(kubectl_namespaces=[])) is None  # kubectl can act nowhere
    token.parent.mkdir()
    token.write_text("eyJ...")
    assert live_kubectl_problem(make_settings()) is None  # in a pod with a service account


def _first_line(run, argv, capsys) -> str:
    run(argv)
    return capsys.readouterr().err.split("\n")[0]
