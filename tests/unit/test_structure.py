"""The package's shape: no import cycle between its modules, and no module longer than 600 lines.

The import graph is read from the source with :mod:`ast` (nothing is imported). Every import
statement counts, those inside functions (lazy imports) included; only those under
``if TYPE_CHECKING:`` are left out, as they never run. ``from .x import name`` counts as importing
the submodule ``x.name`` when there is one, else ``x``. Importing ``a.b.c`` is not counted as
importing the packages ``a`` and ``a.b`` (which Python runs first), or every package whose
``__init__`` imports a submodule would be a cycle.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = "omnizip_cli"
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
MAX_LINES = 600


@dataclass(frozen=True)
class Edge:
    """``source`` imports ``target`` at ``path:line``."""

    source: str
    target: str
    path: str
    line: int


def modules(root: Path = ROOT, package: str = PACKAGE) -> dict[str, Path]:
    """Every module of the package by dotted name (a package by the name of its ``__init__``)."""
    found: dict[str, Path] = {}
    for path in sorted(root.rglob("*.py")):
        parts = path.relative_to(root).with_suffix("").parts
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join((package, *parts))] = path
    return found


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_nodes(nodes: Iterable[ast.AST]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements in ``nodes``, at any depth, except in the bodies of ``if TYPE_CHECKING:``."""
    for node in nodes:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _import_nodes(node.orelse)
        else:
            yield from _import_nodes(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, name: str, path: Path, known: dict[str, Path]) -> list[str]:
    """The package's modules that one import statement in module ``name`` (file ``path``) imports."""
    if isinstance(node, ast.Import):
        dotted = [alias.name for alias in node.names]
    else:
        base = node.module or ""
        if node.level:
            package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
            package = package[: len(package) - (node.level - 1)]
            base = ".".join([*package, *([base] if base else [])])
        dotted = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
    targets = []
    for target in dotted:
        while target and target not in known:  # import a.b.name: the module a.b
            target = target.rpartition(".")[0]
        if target and target != name:
            targets.append(target)
    return targets


def import_graph(root: Path = ROOT, package: str = PACKAGE) -> dict[str, list[Edge]]:
    """Module -> the edges to the package's modules it imports (the first statement per target)."""
    known = modules(root, package)
    graph: dict[str, list[Edge]] = {}
    for name, path in known.items():
        edges: dict[str, Edge] = {}
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in _import_nodes([tree]):
            for target in _targets(node, name, path, known):
                edges.setdefault(target, Edge(name, target, str(path.relative_to(root.parent)), node.lineno))
        graph[name] = sorted(edges.values(), key=lambda edge: edge.target)
    return graph


def strongly_connected(graph: dict[str, list[Edge]]) -> list[list[str]]:
    """The components with more than one module (Tarjan), each sorted, in sorted order."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for edge in graph.get(node, []):
            if edge.target not in index:
                visit(edge.target)
                low[node] = min(low[node], low[edge.target])
            elif edge.target in on_stack:
                low[node] = min(low[node], index[edge.target])
        if low[node] == index[node]:
            component: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                components.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return sorted(components)


def shortest_cycle(graph: dict[str, list[Edge]], start: str, within: set[str]) -> list[Edge]:
    """The shortest chain of imports from ``start`` back to ``start`` inside ``within`` (breadth first)."""
    came_by: dict[str, Edge] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for edge in graph[node]:
                if edge.target not in within:
                    continue
                if edge.target == start:
                    chain = [edge]
                    while chain[0].source != start:
                        chain.insert(0, came_by[chain[0].source])
                    return chain
                if edge.target not in came_by:
                    came_by[edge.target] = edge
                    following.append(edge.target)
        frontier = following
    return []


def cycles(graph: dict[str, list[Edge]]) -> list[list[Edge]]:
    """For each component, the shortest cycle through each of its modules (each cycle once)."""
    found: dict[frozenset[tuple[str, str]], list[Edge]] = {}
    for component in strongly_connected(graph):
        for module in component:
            chain = shortest_cycle(graph, module, set(component))
            found.setdefault(frozenset((edge.source, edge.target) for edge in chain), chain)
    return list(found.values())


def describe(chain: list[Edge]) -> str:
    """``a -> b -> a`` and, below, where each import is."""
    names = " -> ".join([*(edge.source for edge in chain), chain[0].source])
    where = "".join(f"\n      {edge.path}:{edge.line} imports {edge.target}" for edge in chain)
    return names + where


def test_the_checker_counts_lazy_relative_and_submodule_imports_but_not_type_checking(tmp_path: Path) -> None:
    """The checker has teeth, on a package written for the test."""
    root = tmp_path / "pkg"
    (root / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "from .a import run\n",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
                "def run():\n    from .sub import c\n",
        "b.py": "import os\nfrom . import a\n",
        "sub/__init__.py": "",
        "sub/c.py": "from ..b import thing\n",
    }
    for name, text in files.items():
        (root / name).write_text(text)
    graph = import_graph(root, "pkg")
    assert {name: [edge.target for edge in edges] for name, edges in graph.items()} == {
        "pkg": ["pkg.a"], "pkg.a": ["pkg.sub.c"], "pkg.b": ["pkg.a"], "pkg.sub": [], "pkg.sub.c": ["pkg.b"],
    }
    (found,) = cycles(graph)
    assert describe(found).splitlines()[0] == "pkg.a -> pkg.sub.c -> pkg.b -> pkg.a"
    assert "pkg/a.py:5 imports pkg.sub.c" in describe(found)


def test_no_import_cycle() -> None:
    found = cycles(import_graph())
    if found:
        pytest.fail(f"{len(found)} import cycle(s) in {PACKAGE}:\n" + "\n".join("  " + describe(c) for c in found),
                    pytrace=False)


def test_no_module_longer_than_600_lines() -> None:
    long = {
        str(path.relative_to(ROOT.parent)): count
        for path in modules().values()
        if (count := len(path.read_text(encoding="utf-8").splitlines())) > MAX_LINES
    }
    if long:
        pytest.fail(f"modules over {MAX_LINES} lines: " + ", ".join(f"{p} ({n})" for p, n in sorted(long.items())),
                    pytrace=False)
