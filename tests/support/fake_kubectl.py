"""A stand-in ``kubectl``: a real executable that records its argv and behaves as scripted.

    fake = write_fake_kubectl(tmp_path, rules={"deployment/broken": "fail", "deployment/stuck": "hang"})
    policy = ExecutionPolicy(kubectl_path=str(fake.path), kubectl_namespaces=("payments",))
    ...
    assert fake.calls() == [["rollout", "restart", "deployment/api", "-n", "payments"]]

Behaviour is chosen per invocation: the first rule whose key equals one of the arguments wins,
else ``default``. Modes: ``ok`` (print ``output``, exit 0), ``fail`` (print, exit 1), ``hang``
(start a sleeping grandchild, record both pids, sleep), ``flood`` (print ``flood_bytes``).
``kubectl get KIND/NAME ... -o jsonpath={.spec.replicas}`` answers ``replicas[KIND/NAME]``
(else ``default_replicas``; None: NotFound). Every entry records the environment it got.
The script is written with the running interpreter, so it needs nothing else installed.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from dataclasses import dataclass
from pathlib import Path

_SCRIPT = r'''#!{python}
import json, os, subprocess, sys, time

CONFIG = json.loads({config!r})
args = sys.argv[1:]
mode = next((m for key, m in CONFIG["rules"].items() if key in args), CONFIG["default"])
entry = {{"argv": args, "mode": mode, "pid": os.getpid(), "env": dict(os.environ)}}
if args[:1] == ["get"] and "jsonpath={{.spec.replicas}}" in args:
    # the executor reading a workload's replica count before a bounded scale
    count = CONFIG["replicas"].get(args[1], CONFIG["default_replicas"])
    entry["mode"] = "get"
    with open(CONFIG["log"], "a") as log:
        log.write(json.dumps(entry) + "\n")
    if count is None:
        sys.stderr.write('Error from server (NotFound): "' + args[1] + '" not found\n')
        sys.exit(1)
    sys.stdout.write(str(count))
    sys.exit(0)
if mode == "hang":
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    entry["child_pid"] = child.pid
with open(CONFIG["log"], "a") as log:
    log.write(json.dumps(entry) + "\n")
sys.stdout.write(CONFIG["output"] + "\n")
sys.stderr.write("stderr: " + mode + "\n")
sys.stdout.flush()
sys.stderr.flush()
if mode == "hang":
    time.sleep(600)
elif mode == "flood":
    sys.stdout.write("x" * CONFIG["flood_bytes"])
    sys.stdout.write(CONFIG["output"] + "\n")
    sys.stdout.flush()
sys.exit(1 if mode == "fail" else 0)
'''


@dataclass(frozen=True)
class FakeKubectl:
    path: Path
    log: Path

    def entries(self) -> list[dict]:
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def calls(self) -> list[list[str]]:
        """The argv (without argv[0]) of every invocation, in order."""
        return [entry["argv"] for entry in self.entries()]


def write_fake_kubectl(
    directory: Path,
    *,
    name: str = "kubectl",
    default: str = "ok",
    rules: dict[str, str] | None = None,
    output: str = "deployment.apps/api restarted password=hunter2",
    flood_bytes: int = 100_000,
    replicas: dict[str, int] | None = None,
    default_replicas: int | None = 2,
) -> FakeKubectl:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    log = directory / f"{name}.calls.jsonl"
    config = {"rules": rules or {}, "default": default, "output": output, "log": str(log), "flood_bytes": flood_bytes,
              "replicas": replicas or {}, "default_replicas": default_replicas}
    path.write_text(_SCRIPT.format(python=sys.executable, config=json.dumps(config)))
    path.chmod(path.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return FakeKubectl(path=path, log=log)


def path_with(directory: Path) -> dict[str, str]:
    """An environment whose PATH finds the fake first (for tests that run bare ``kubectl``)."""
    return {**os.environ, "PATH": f"{directory}{os.pathsep}{os.environ.get('PATH', '')}"}
