"""The product's embedded default: starts from nothing, works, and leaves nothing behind."""

from __future__ import annotations

import os
import subprocess
import sys

import orjson
import psutil

from elk_resolver.kafka.embedded import port_open


def test_embedded_stack_starts_from_nothing_round_trips_and_stops_cleanly(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELK_RESOLVER_")}
    proc = subprocess.run(
        [sys.executable, "-m", "tests.support.embedded_probe", str(tmp_path / "state")],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    started, result = (orjson.loads(line) for line in proc.stdout.strip().splitlines()[-2:])
    assert result == {"values": ['{"message": "hello"}'], "partitions": 6, "patterns": 3}
    assert (tmp_path / "state" / "postgres" / "PG_VERSION").exists()
    for pid in started["pids"]:
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    for port in started["ports"]:
        assert not port_open("127.0.0.1", port), f"port {port} still open"
