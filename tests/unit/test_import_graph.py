"""The import graph of the ``reconciler`` package, read with ``ast`` (no module is imported), has no cycle.

Every import counts: absolute and relative, at module level, under ``TYPE_CHECKING`` and inside functions (an import
moved into a function to dodge a cycle is still a cycle). Today the hazards package is held to it; the same two
functions serve the whole package and its layers.
"""

from __future__ import annotations

import ast
import textwrap
from collections.abc import Iterator, Mapping
from pathlib import Path

import reconciler

PACKAGE = Path(reconciler.__file__).resolve().parent

Graph = dict[str, set[str]]


def module_name(path: Path, root: Path, package: str) -> str:
    """``reconciler.hazards.engine`` for ``<root>/hazards/engine.py``; a package is named by its folder."""
    parts = [package, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imported(node: ast.AST, importer: str, is_package: bool, modules: set[str]) -> Iterator[str]:
    """The modules of ``modules`` that one import statement names."""
    if isinstance(node, ast.Import):
        yield from (a.name for a in node.names)
        return
    if not isinstance(node, ast.ImportFrom):
        return
    base = node.module or ""
    if node.level:
        anchor = importer.split(".")
        anchor = anchor[: len(anchor) - node.level + (1 if is_package else 0)]
        base = ".".join([*anchor, *([base] if base else [])])
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        yield sub if sub in modules else base


def import_graph(root: Path = PACKAGE, package: str = "reconciler") -> Graph:
    """For each module of the package, the modules of the package it imports (anywhere in its text)."""
    files = {module_name(p, root, package): p for p in sorted(root.rglob("*.py"))}
    graph: Graph = {name: set() for name in files}
    for name, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            for target in _imported(node, name, path.name == "__init__.py", set(files)):
                if target in files and target != name:
                    graph[name].add(target)
    return graph


def subgraph(graph: Mapping[str, set[str]], prefix: str) -> Graph:
    """The modules ``prefix`` and below, with the imports among them."""
    inside = {m for m in graph if m == prefix or m.startswith(prefix + ".")}
    return {m: graph[m] & inside for m in inside}


def find_cycles(graph: Mapping[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import one another in a circle (strongly connected, more than one module)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group: list[str] = []
            while not group or group[-1] != v:
                group.append(stack.pop())
                on_stack.discard(group[-1])
            if len(group) > 1:
                cycles.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(cycles)


def test_hazards_import_graph_has_no_cycle() -> None:
    hazards = subgraph(import_graph(), "reconciler.hazards")
    engine = {f"reconciler.hazards.{m}" for m in ("context", "online", "registry", "locks")}
    assert engine <= hazards["reconciler.hazards.engine"]  # the graph is read, not empty
    assert find_cycles(hazards) == []


def test_the_graph_sees_every_kind_of_import(tmp_path: Path) -> None:
    files = {
        "__init__.py": "from .a import x\n",
        "a.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .sub.b import y\nx = 1\n",
        "sub/__init__.py": "from . import b\n",
        "sub/b.py": "def f():\n    from ..a import x\n    import pkg.c\n",
        "c.py": "import os\nfrom pkg.sub import b\n",
        "d.py": "from .. import elsewhere\nfrom pkg import a, c\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(textwrap.dedent(text))
    graph = import_graph(tmp_path, "pkg")
    assert graph == {
        "pkg": {"pkg.a"},
        "pkg.a": {"pkg.sub.b"},
        "pkg.sub": {"pkg.sub.b"},
        "pkg.sub.b": {"pkg.a", "pkg.c"},
        "pkg.c": {"pkg.sub.b"},
        "pkg.d": {"pkg.a", "pkg.c"},
    }
    assert find_cycles(graph) == [["pkg.a", "pkg.c", "pkg.sub.b"]]
    assert find_cycles(subgraph(graph, "pkg.sub")) == []


# The package's layers, top to bottom: a module may import modules of its own layer or of a lower one, never of a
# higher one. The data flow of DESIGN.md, read from the entry points down to the plain values.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("reconciler.__main__", "reconciler.cli"),
    ("reconciler.reconcile",),
    ("reconciler.server",),
    ("reconciler.demo",),
    ("reconciler.cli_render",),
    ("reconciler.check", "reconciler.promotion"),
    ("reconciler.service",),
    ("reconciler.applier",),
    ("reconciler.approvals",),
    ("reconciler.planning", "reconciler.vet", "reconciler.policytests", "reconciler.docs", "reconciler.migration"),
    (
        "reconciler.target",
        "reconciler.locks",
        "reconciler.steps",
        "reconciler.apply",
        "reconciler.scratch",
        "reconciler.defaultprivs",
        "reconciler.buildcache",
        "reconciler.stats",
        "reconciler.diff",
        "reconciler.drift",
        "reconciler.policy",
        "reconciler.windows",
        "reconciler.desired",
        "reconciler.sources",
        "reconciler.pgembedded",
    ),
    ("reconciler.store", "reconciler.inspect", "reconciler.catalog", "reconciler.obs", "reconciler.corrections"),
    ("reconciler.config", "reconciler.signing", "reconciler.principals"),
    ("reconciler.sandbox",),
    ("reconciler.hazards", "reconciler.cron"),
    ("reconciler.db", "reconciler.status", "reconciler.warm"),
    ("reconciler.model", "reconciler.errors", "reconciler.sqltext", "reconciler"),
)


def layer_of(module: str) -> int:
    """The index of the layer whose longest prefix names ``module``."""
    best, found = -1, -1
    for i, layer in enumerate(LAYERS):
        for prefix in layer:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best:
                best, found = len(prefix), i
    if found < 0:
        raise AssertionError(f"{module} is in no layer: add it to LAYERS")
    return found


def test_the_whole_package_has_no_import_cycle() -> None:
    assert find_cycles(import_graph()) == []


def test_no_import_points_up_the_layers() -> None:
    graph = import_graph()
    upward = [(m, d) for m, deps in graph.items() for d in deps if layer_of(d) < layer_of(m)]
    assert upward == []
