#!/usr/bin/env python3
"""One entry point for a fresh machine with nothing but Python 3.11+.

    python3 dev.py up          # the service on its embedded Kafka + PostgreSQL
    python3 dev.py test        # the whole test suite against real services
    python3 dev.py bench       # the benchmark (bench/README in the main README)
    python3 dev.py demo        # a dry-run walk through the pipeline with shipped events
    python3 dev.py -- ARGS     # any other elk-resolver command

Each command creates .venv and installs the project into it first, once per change of
pyproject.toml (a stamp file remembers), so it is safe to run on a clean clone.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("ELK_RESOLVER_VENV", ROOT / ".venv"))
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
EXTRAS = "embedded,kubernetes,kubectl,test,bench"  # embedded: `up` and the tests need the broker and database


def _stamp() -> str:
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + EXTRAS.encode()).hexdigest()
    return f"{sys.version_info[:2]}:{digest}"


def ensure_env() -> None:
    if sys.version_info < (3, 11):
        sys.exit(f"dev.py: Python 3.11 or newer is needed, this is {sys.version.split()[0]}")
    stamp_file = VENV / ".elk-resolver-installed"
    if stamp_file.exists() and stamp_file.read_text() == _stamp():
        return
    if not (BIN / "python").exists():
        print(f"dev.py: creating {VENV}", flush=True)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    print("dev.py: installing the project and its dependencies (first run only)", flush=True)
    pip = [str(BIN / "python"), "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "install", "--upgrade", "pip"], check=True)
    subprocess.run([*pip, "install", "-e", f".[{EXTRAS}]"], check=True, cwd=ROOT)
    stamp_file.write_text(_stamp())


# Debian packages some tests drive: the console's browser tests (headless Chromium and its
# driver) and the alert-rule tests (promtool). Installed here, so the README's test command does
# its own set-up on a fresh machine; where that cannot be done (not root, no apt-get) the tests
# that need them say so and fail.
SYSTEM_TOOLS = {"chromium": "chromium", "chromedriver": "chromium-driver", "promtool": "prometheus"}


def ensure_system_tools() -> None:
    import shutil

    missing = sorted({pkg for tool, pkg in SYSTEM_TOOLS.items() if shutil.which(tool) is None})
    if not missing:
        return
    if os.name != "posix" or os.geteuid() != 0 or shutil.which("apt-get") is None:
        print(f"dev.py: missing {', '.join(missing)} (Debian packages) and cannot install them here; "
              "the tests that need them will fail", file=sys.stderr, flush=True)
        return
    print(f"dev.py: installing {', '.join(missing)} for the browser and alert-rule tests (first run only)", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
    subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
                   check=True, env=env, stdout=subprocess.DEVNULL)


def run(argv: list[str]) -> int:
    os.chdir(ROOT)
    if os.name == "posix":
        # become the command: Ctrl-C and SIGTERM reach it directly, and its exit status is ours
        os.execv(argv[0], argv)
    return subprocess.call(argv)


def main(args: list[str]) -> int:
    command, rest = (args[0], args[1:]) if args else ("help", [])
    if command in ("help", "-h", "--help"):
        print(__doc__)
        return 0
    ensure_env()
    if command == "test":
        ensure_system_tools()
        # the browser tests' screenshots are kept where CI can collect them (build/ is ignored by git)
        os.environ.setdefault("ELK_RESOLVER_SCREENSHOTS", str(ROOT / "build" / "screenshots"))
        return run([str(BIN / "python"), "-m", "pytest", *rest])
    if command == "bench":
        return run([str(BIN / "python"), "-m", "bench", *rest])
    if command in ("up", "demo"):
        return run([str(BIN / "elk-resolver"), command, *rest])
    if command == "--":
        return run([str(BIN / "elk-resolver"), *rest])
    print(f"dev.py: unknown command {command!r}\n{__doc__}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
