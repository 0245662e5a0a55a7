"""Module boundaries, read from the source with ``ast``.

* psycopg is imported only by ``reconciler/db.py``: every connection is opened there, with its session settings.
* migra, schemainspect and sqlbag are imported only by ``reconciler/diff.py`` and ``reconciler/inspect.py``.
* Every ``raise`` picks a leaf of the error tree, never ``ReconcilerError``, ``TerminalError`` or
  ``RetryableError`` themselves.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "reconciler"

# Modules that still import psycopg while their connection code moves into db.py. Empty it when they are done.
PENDING_SEAM: set[str] = set()
# Modules that still raise a base of the error tree. Empty it when they are done.
PENDING_LEAVES: set[str] = set()

DRIVER = {"psycopg", "psycopg_pool", "psycopg2"}
DRIVER_OWNERS = {"db.py"}
SCHEMA_TOOLS = {"migra", "schemainspect", "sqlbag"}
SCHEMA_TOOL_OWNERS = {"diff.py", "inspect.py"}
ERROR_BASES = {"ReconcilerError", "TerminalError", "RetryableError"}


def _modules() -> Iterator[tuple[str, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path.relative_to(PACKAGE).as_posix(), ast.parse(path.read_text(encoding="utf-8"), str(path))


def _imported(tree: ast.Module) -> set[str]:
    """Top-level names of the absolute imports anywhere in ``tree`` (also inside functions and TYPE_CHECKING)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def _importers(packages: set[str]) -> set[str]:
    return {name for name, tree in _modules() if _imported(tree) & packages}


def _raised_name(node: ast.Raise) -> str | None:
    exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
    if isinstance(exc, ast.Name):
        return exc.id
    if isinstance(exc, ast.Attribute):
        return exc.attr
    return None


def _base_raisers() -> dict[str, list[int]]:
    """Module -> lines where a base of the error tree is raised."""
    found: dict[str, list[int]] = {}
    for name, tree in _modules():
        for node in ast.walk(tree):
            if isinstance(node, ast.Raise) and _raised_name(node) in ERROR_BASES:
                found.setdefault(name, []).append(node.lineno)
    return found


def test_the_package_is_found() -> None:
    names = {name for name, _ in _modules()}
    assert {"db.py", "diff.py", "inspect.py", "errors.py"} <= names


def test_only_db_imports_the_driver() -> None:
    assert _importers(DRIVER) - DRIVER_OWNERS - PENDING_SEAM == set()


def test_only_diff_and_inspect_import_the_schema_tools() -> None:
    assert _importers(SCHEMA_TOOLS) - SCHEMA_TOOL_OWNERS == set()


def test_every_raise_picks_a_leaf() -> None:
    offenders = {name: lines for name, lines in _base_raisers().items() if name not in PENDING_LEAVES}
    assert offenders == {}


def test_pending_exceptions_are_still_needed() -> None:
    """A module that no longer needs its exception must leave the allow-set, so that it cannot slip back."""
    assert PENDING_SEAM - _importers(DRIVER) == set()
    assert PENDING_LEAVES - set(_base_raisers()) == set()


def test_the_checks_see_what_they_look_for() -> None:
    tree = ast.parse(
        "import psycopg.sql\n"
        "from schemainspect.pg import obj\n"
        "def f():\n"
        "    from migra import Migration\n"
        "    raise errors.TerminalError('x')\n"
        "def g():\n"
        "    raise RetryableError\n"
        "from .db import connect\n"
    )
    assert _imported(tree) == {"psycopg", "schemainspect", "migra"}
    raised = [_raised_name(n) for n in ast.walk(tree) if isinstance(n, ast.Raise)]
    assert sorted(r for r in raised if r) == ["RetryableError", "TerminalError"]
