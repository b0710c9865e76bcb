"""The rooms of the code and the one way imports run between them.

Every import in the project's own packages (at module level, inside functions and under
TYPE_CHECKING alike) must point at its own room or a room below it in ROOMS, and no set of
modules may import each other in a circle. A new module lands in a room by its dotted name, so
putting a face's import inside the library, or the library's inside ``settings``, fails here.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bench", "elk_resolver", "streams", "handlers", "schema")

# Top to bottom: a room imports only itself and rooms after it.
ROOMS = (
    "bench",                      # the benchmark drives everything below it
    "elk_resolver.cli",           # faces: the command line ...
    "elk_resolver.service",       # ... the service a person starts (stages + console)
    "elk_resolver.console",       # ... the web console
    "elk_resolver.operations",    # ... what a person does, for every face
    "streams",                    # stages on Kafka
    "handlers",                   # one plain module per stage
    "elk_resolver.health",        # library: checks of the ELK components
    "elk_resolver.notify",        # notifications
    "elk_resolver.kafka",         # topics, offsets, the embedded stack
    "elk_resolver.store",         # PostgreSQL
    "elk_resolver.actions",       # what may be done, to which object
    "elk_resolver.events",        # what an event is, its identity, the contracts
    "elk_resolver.settings",      # depends on nothing of the service
    "schema",                     # SQL
    "elk_resolver",               # the package's own docstring
)  # fmt: skip


def room_of(module: str) -> int:
    """Index in ROOMS of the longest room name that is the module or a package above it."""
    best = None
    for i, room in enumerate(ROOMS):
        if (module == room or module.startswith(room + ".")) and (best is None or len(room) > len(ROOMS[best])):
            best = i
    if best is None:
        raise LookupError(f"{module} is in no room: add it to ROOMS in {Path(__file__).name}")
    return best


def modules_of(root: Path) -> dict[str, Path]:
    found = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            found[name] = path
    return found


def imports_of(name: str, path: Path, known: set[str]) -> set[str]:
    """The project's modules this module imports (``from pkg import mod`` counts as ``pkg.mod``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            targets = [f"{source}.{alias.name}" if f"{source}.{alias.name}" in known else source for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a package path: the deepest known
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def import_graph(root: Path) -> dict[str, set[str]]:
    modules = modules_of(root)
    known = set(modules)
    return {name: imports_of(name, path, known) for name, path in modules.items()}


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{a} -> {b}" for a, targets in graph.items() for b in targets if room_of(b) < room_of(a)
    )


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected sets of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return found


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    return import_graph(ROOT)


def test_every_module_is_in_a_room(graph):
    for name in graph:
        room_of(name)


def test_imports_run_one_way_down(graph):
    assert upward_imports(graph) == []


def test_no_modules_import_each_other_in_a_circle(graph):
    assert cycles(graph) == []


def test_settings_depend_on_nothing_of_the_service(graph):
    assert graph["elk_resolver.settings"] == set()


def test_handlers_import_no_broker():
    """Handlers take decoded events and a connection: the CLI and tests call them directly."""
    for path in (ROOT / "handlers").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n.split(".")[0] in ("faststream", "aiokafka") for n in names), path.name


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for rel, text in files.items():
        target = tmp_path / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
    for package in PACKAGES:
        (tmp_path / package).mkdir(exist_ok=True)
    return tmp_path


def test_the_check_finds_an_import_that_runs_back_up(tmp_path):
    root = _tree(tmp_path, {
        "elk_resolver/__init__.py": "",
        "elk_resolver/events/__init__.py": "",
        "elk_resolver/events/masking.py": "def mask(): from handlers import ingest\n",
        "handlers/__init__.py": "",
        "handlers/ingest.py": "from elk_resolver.events import masking\n",
    })
    graph = import_graph(root)
    assert upward_imports(graph) == ["elk_resolver.events.masking -> handlers.ingest"]
    assert cycles(graph) == [["elk_resolver.events.masking", "handlers.ingest"]]


def test_the_check_finds_a_circle_inside_one_room(tmp_path):
    root = _tree(tmp_path, {
        "elk_resolver/__init__.py": "",
        "elk_resolver/cli/__init__.py": "",
        "elk_resolver/cli/a.py": "from elk_resolver.cli.b import x\n",
        "elk_resolver/cli/b.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from elk_resolver.cli import a\n",
    })
    graph = import_graph(root)
    assert upward_imports(graph) == []
    assert cycles(graph) == [["elk_resolver.cli.a", "elk_resolver.cli.b"]]
