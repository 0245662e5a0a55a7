"""Phases of a plan: its non-transactional statements (``CREATE``/``DROP INDEX CONCURRENTLY`` ...) run after the
transactional ones, in a phase of their own.

A statement outside a transaction cannot roll back with its neighbours, so between two transactional statements it
would cut their unit in two: a failure in it (a concurrent unique index build meets duplicates) would leave the
first half committed and the second never run. Moved after the last transactional statement, a failure there
leaves every transactional unit either fully committed or never started. A non-transactional statement stays where
it is when a later statement may depend on it: one that touches the same table (a constraint ``USING INDEX``, a
foreign key whose referenced unique index it builds, a re-created index of the same name) or the index itself; the
engine's own guard keeps such a statement out of any drop/re-create pair.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pglast import ast, enums
from pglast.visitors import Visitor

from ..model import QualifiedName, Statement
from .context import ParsedStatement
from .engine import parse_plan, statement_relations
from .names import DEFAULT_SCHEMA, qualified

__all__ = ["order_phases"]


def _non_transactional(stmt: Statement) -> bool:
    steps = stmt.execution()
    return bool(steps) and not any(step.transactional for step in steps)


AT = enums.AlterTableType
# ALTER TABLE subcommands that never need an index the plan builds (nor are harmed by one it drops later).
_INDEPENDENT_CMDS = frozenset(
    {
        AT.AT_EnableRowSecurity, AT.AT_DisableRowSecurity, AT.AT_ForceRowSecurity, AT.AT_NoForceRowSecurity,
        AT.AT_EnableTrig, AT.AT_DisableTrig, AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig, AT.AT_ColumnDefault,
        AT.AT_AddColumn, AT.AT_SetRelOptions, AT.AT_ResetRelOptions, AT.AT_ChangeOwner,
    }
)  # fmt: skip
# Statements that may share a table with an index build without depending on it.
_INDEPENDENT_NODES = (ast.CreateTrigStmt, ast.CreatePolicyStmt, ast.AlterPolicyStmt, ast.GrantStmt, ast.CommentStmt)


class _Names(Visitor):
    """The index and constraint names a statement mentions (``USING INDEX``, a built index, a constraint's own)."""

    def __init__(self, schema: str) -> None:
        super().__init__()
        self.schema = schema
        self.names: set[QualifiedName] = set()

    def visit_Constraint(self, ancestors: Any, node: Any) -> None:
        for name in (node.indexname, node.conname):
            if name:
                self.names.add(QualifiedName(self.schema, str(name)))


def _index_names(stmt: ParsedStatement) -> set[QualifiedName]:
    """The indexes ``stmt`` names: the one it builds or drops, and those its constraints name or use."""
    node = stmt.node
    out = set(statement_relations(stmt))
    rel = getattr(node, "relation", None)
    schema = qualified(rel).schema if rel is not None else DEFAULT_SCHEMA
    if isinstance(node, ast.IndexStmt) and node.idxname:
        out.add(QualifiedName(schema, str(node.idxname)))
    if node is not None:
        v = _Names(schema)
        v(node)
        out |= v.names
    return out


def _depends(later: ParsedStatement, table: QualifiedName | None, index: set[QualifiedName]) -> bool:
    """Whether ``later`` may need the index (``index``: its names) that a statement builds on ``table``, or
    conflict with its drop: it names the index, or it touches the table in a way that could (a foreign key that
    references it, a constraint, a column change, a drop ...)."""
    if _index_names(later) & index:
        return True
    node = later.node
    if node is None:
        return True
    if table is None or table not in statement_relations(later):
        return False
    if isinstance(node, _INDEPENDENT_NODES):
        return False
    if isinstance(node, ast.AlterTableStmt) and qualified(node.relation) == table:
        return not all(cmd.subtype in _INDEPENDENT_CMDS for cmd in node.cmds or ())
    return not isinstance(node, ast.IndexStmt)


def _movable(stmt: Statement, parsed: ParsedStatement) -> bool:
    """A non-transactional index build or drop, and not a DROP that fails when a later statement already dropped
    its object. Other non-transactional statements (``ALTER TYPE ... ADD VALUE``, whose label later statements
    use) stay where they are: only an index's dependants are worked out here."""
    node = parsed.node
    if isinstance(node, ast.DropStmt):
        return bool(node.missing_ok) and node.removeType == enums.ObjectType.OBJECT_INDEX and _non_transactional(stmt)
    return isinstance(node, ast.IndexStmt) and _non_transactional(stmt)


def order_phases(statements: Sequence[Statement]) -> list[Statement]:
    """``statements`` with each non-transactional one that no later statement depends on moved after the
    transactional ones (their order kept within each phase)."""
    parsed = parse_plan([s.sql for s in statements])
    moved: set[int] = set()
    for i in reversed(range(len(statements))):  # a later statement that moves too keeps its order after this one
        node = parsed[i].node
        if node is None or not _movable(statements[i], parsed[i]):
            continue
        table = qualified(node.relation) if isinstance(node, ast.IndexStmt) else None
        names = _index_names(parsed[i]) - ({table} if table else set())
        if not any(_depends(parsed[j], table, names) for j in range(i + 1, len(statements)) if j not in moved):
            moved.add(i)
    if not moved:
        return list(statements)
    keep = [s for i, s in enumerate(statements) if i not in moved]
    return keep + [statements[i] for i in sorted(moved)]
