"""The house rules of `suite/` (the fwbench package): no import circles, no oversized module.

Imports inside functions and under ``if TYPE_CHECKING:`` count too: a lazy or type-only import
hides a circle from Python, not from a reader (nor from an outside import-graph tool).
"""
from __future__ import annotations

import ast
from pathlib import Path

import networkx as nx

SUITE = Path(__file__).resolve().parents[1] / "suite"
MAX_LINES = 600


def _module_name(path: Path) -> str:
    parts = ["fwbench", *path.relative_to(SUITE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in SUITE.rglob("*.py")}


def _imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The fwbench modules ``name`` imports (module level, inside functions, for type checkers)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target == name:  # a package's __init__ importing from itself (`from . import x`)
                found.add(name)
                continue
            for alias in node.names:  # `from . import spec` names a module, not an attribute
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")
                elif target in known:
                    found.add(target)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name in known)
    return found


def import_graph() -> nx.DiGraph:
    known = _modules()
    graph = nx.DiGraph()
    for name, path in known.items():
        graph.add_node(name)
        graph.add_edges_from((name, target) for target in _imports(name, path, known))
    return graph


def test_the_graph_sees_relative_and_lazy_imports():
    graph = import_graph()
    assert graph.has_edge("fwbench.spec", "fwbench.families")  # `from . import families`
    assert graph.has_edge("fwbench.commands.run", "fwbench.run.matrix")  # inside a function
    assert graph.has_edge("fwbench.micro.families", "fwbench.run.process")  # `from ..run.process`
    assert graph.has_edge("fwbench.backend", "fwbench.spec")  # under `if TYPE_CHECKING:`


def test_no_import_circles():
    graph = import_graph()
    circles = [sorted(c) for c in nx.strongly_connected_components(graph) if len(c) > 1]
    circles += [[a] for a, _ in nx.selfloop_edges(graph)]  # an __init__ that imports its own package
    assert circles == [], f"modules that import each other (directly or round a circle): {circles}"


def test_no_module_over_600_lines():
    long = {str(p.relative_to(SUITE)): n for p in SUITE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > MAX_LINES}
    assert long == {}, f"split these by concern: {long}"


MAX_ROOT_MODULES = 20


def test_the_root_of_suite_holds_at_most_20_modules():
    root = sorted(p.name for p in SUITE.glob("*.py"))
    assert len(root) <= MAX_ROOT_MODULES, f"{len(root)} modules at the root; move a concern into a wing: {root}"


def _private_imports() -> list[str]:
    """``from X import _name`` where X lies in another folder (wing) than the importer."""
    found = []
    for name, path in _modules().items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ImportFrom):
                continue
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("fwbench"):
                continue
            target_package = target if (SUITE / Path(*target.split(".")[1:]) / "__init__.py").exists() \
                else target.rpartition(".")[0]
            for alias in node.names:
                if alias.name.startswith("_") and not alias.name.startswith("__") and target_package != package:
                    found.append(f"{name}: from {target} import {alias.name}")
    return found


def test_no_module_imports_another_wings_private_name():
    assert _private_imports() == [], "make these public in their wing, or move the caller into it"
