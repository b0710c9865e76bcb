"""The image's build context holds every file the Dockerfile copies (.dockerignore excludes none
of them), and the image is the production one: non-root, no embedded services."""

from __future__ import annotations

import re
import shlex
import subprocess
import tomllib

from tests.support.kubernetes import ROOT

DOCKERFILE = (ROOT / "Dockerfile").read_text()


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    text = re.sub(r"\\\n", " ", DOCKERFILE)
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def copied_from_context() -> list[str]:
    sources = []
    for word, rest in instructions():
        if word not in ("COPY", "ADD"):
            continue
        args = shlex.split(rest)
        if any(a.startswith("--from") for a in args):
            continue
        args = [a for a in args if not a.startswith("--")]
        sources += args[:-1]
    return sources


def _pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker matches it (Go filepath.Match plus '**')."""
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out, i = out + ".*", i + 2
            if pattern.startswith("/", i):
                out, i = out + "(?:/)?", i + 1
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out + r"\Z")


def excluded(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last matching pattern wins; a pattern matching a parent directory
    excludes everything under it."""
    parts = path.split("/")
    candidates = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    result = False
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = _pattern(raw.lstrip("!").strip("/"))
        if any(pattern.match(c) for c in candidates):
            result = not negate
    return result


def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [ln.strip() for ln in lines if ln.strip() and not ln.strip().startswith("#")]


def tracked_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    return [p for p in out.decode().split("\0") if p and (ROOT / p).exists()]


def test_every_copied_path_exists_and_survives_dockerignore():
    patterns = ignore_patterns()
    sources = copied_from_context()
    assert sources, "the Dockerfile copies nothing from the context?"
    files = tracked_files()
    for source in sources:
        path = source.rstrip("/").removeprefix("./")
        assert (ROOT / path).exists(), f"Dockerfile copies {source}, which does not exist"
        assert not excluded(path, patterns), f".dockerignore excludes {source}, which the Dockerfile copies"
        # and nothing the package needs from inside a copied directory (code, SQL, JSON, templates)
        inside = [f for f in files if f.startswith(path + "/")]
        lost = [f for f in inside if excluded(f, patterns)]
        assert not lost, f".dockerignore drops {lost[:5]} from {source}"


def test_the_image_copies_the_packages_and_the_readme_the_install_needs():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    copied = {s.rstrip("/").removeprefix("./") for s in copied_from_context()}
    assert project["project"]["readme"] in copied
    for include in project["tool"]["setuptools"]["packages"]["find"]["include"]:
        package = include.rstrip("*")
        if package != "bench":  # the benchmark is not part of the service
            assert package in copied, f"package {package} is not copied into the image"


def test_the_image_runs_as_a_numeric_non_root_user_without_the_embedded_extra():
    users = [rest for word, rest in instructions() if word == "USER"]
    assert users and users[-1].split(":")[0].isdigit() and users[-1].split(":")[0] != "0"
    assert "embedded" not in DOCKERFILE.split("ARG EXTRAS=", 1)[1].split()[0]


def test_dockerignore_matching_follows_docker():
    assert excluded("bench/results/x.json", ["bench"])
    assert excluded("elk_resolver/__pycache__/a.pyc", ["**/__pycache__"])
    assert not excluded("elk_resolver/cli.py", ["**/__pycache__"])
    assert excluded("a.egg-info/PKG-INFO", ["*.egg-info"])
    assert not excluded("docs/a.md", ["docs", "!docs/a.md"])
