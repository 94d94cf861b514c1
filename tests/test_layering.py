"""The package's floors: a module imports only its own package or the floors below it (at module level, in a
function, or for type checking alike), and no two modules import each other."""

from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

PACKAGE = Path(__file__).resolve().parent.parent / "dnnsplit"

# Bottom to top. A top-level module (dnnsplit/X.py) is a floor of its own; a package's modules share one.
FLOORS = (
    "errors",
    "progress",
    "text",
    "limits",
    "fileio",
    "output_dir",
    "dnnsplit",  # dnnsplit/__init__.py: the version
    "onnxrt",
    "images",
    "browser",
    "models",
    "profiling",
    "codecs",
    "partition",
    "splitting",
    "training",
    "branching",
    "pruning",
    "bottleneck",
    "runtime",
    "boundaries",
    "pipeline",
    "cli",
)


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _floor(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "dnnsplit"


def _imports(path: Path) -> set[str]:
    """Every dnnsplit module ``path`` imports, wherever the import statement stands."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "dnnsplit":
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)  # `from dnnsplit.x import module`
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "dnnsplit")
    return found


def _graph() -> nx.DiGraph:
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
    graph = nx.DiGraph()
    graph.add_nodes_from(modules)
    for name, path in modules.items():
        for target in _imports(path):
            if target in modules and target != name:
                graph.add_edge(name, target)
    return graph


def test_every_module_has_a_floor() -> None:
    assert {_floor(m) for m in _graph()} <= set(FLOORS)


def test_no_module_imports_a_floor_above_its_own() -> None:
    upward = sorted(
        f"{a} -> {b}" for a, b in _graph().edges if FLOORS.index(_floor(b)) > FLOORS.index(_floor(a))
    )
    assert upward == []


def test_no_two_modules_import_each_other() -> None:
    graph = _graph()
    mutual = sorted(f"{a} <-> {b}" for a, b in graph.edges if a < b and graph.has_edge(b, a))
    assert mutual == []


def test_no_command_imports_another() -> None:
    # What two commands share lives in cli.common or in the library, not in one of them.
    shared = {"dnnsplit.cli", "dnnsplit.cli.common"}
    crossing = sorted(
        f"{a} -> {b}"
        for a, b in _graph().edges
        if a.startswith("dnnsplit.cli.") and b.startswith("dnnsplit.cli.") and a != "dnnsplit.cli.main"
        and b not in shared
    )
    assert crossing == []
