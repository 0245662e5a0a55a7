"""RN1xx: a drop and an add in one plan that look like a rename. migra plans a rename as drop plus add, which
loses the data; these hints say how to rename instead."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, enums

from ..model import HazardKind, QualifiedName, Severity, display_ident
from .context import ParsedStatement, PlanContext
from .names import dropped_key, qualified
from .registry import check
from .types import TypeRef, from_type_name, parse_type, same_type

AT = enums.AlterTableType
OT = enums.ObjectType


def _same(old_text: str, new: Any) -> bool:
    old = parse_type(old_text) if old_text else None
    ref = from_type_name(new)
    return old is not None and ref is not None and same_type(old, ref)


def _column_candidates(table: QualifiedName, column: str, ctx: PlanContext) -> list[tuple[str, TypeRef | None]]:
    st = ctx.stats(table)
    old_type = st.columns.get(column, "") if st is not None else ""
    return [
        (added.column, from_type_name(added.type_name))
        for added in ctx.plan.added_columns.get(table, [])
        if _same(old_type, added.type_name)
    ]


def _column_steps(table: QualifiedName, old: str, new: str) -> str:
    return (
        f"to keep the data, rename instead: run ALTER TABLE {table} RENAME COLUMN {old} TO {new} on the environment "
        f"and plan again; without downtime, expand/contract: (1) add {new} while keeping {old} in the desired state, "
        f"copy {old} into {new} in batches and keep them in step (trigger or application) until every reader "
        f"uses {new}; (2) then remove {old} from the desired state"
    )


@check(
    "RN101",
    HazardKind.RENAME,
    Severity.WARNING,
    "column dropped and another of the same type added: likely a rename",
    nodes=["AlterTableStmt"],
)
def column_rename(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    table = qualified(node.relation)
    for cmd in node.cmds or ():
        if cmd.subtype == AT.AT_DropColumn:
            for new, ref in _column_candidates(table, str(cmd.name), ctx):
                yield (
                    f"{table}.{cmd.name} is dropped and {table}.{new} ({ref}) is added in the same plan: if this is "
                    f"a rename, {_column_steps(table, str(cmd.name), new)}"
                )
        elif cmd.subtype == AT.AT_AddColumn:
            new = str(cmd.def_.colname)
            for old, _at in ctx.plan.dropped_columns.get(table, []):
                st = ctx.stats(table)
                if st is not None and _same(st.columns.get(old, ""), cmd.def_.typeName):
                    yield (
                        f"{table}.{new} is added while {table}.{old} of the same type is dropped: if this is a "
                        f"rename, {_column_steps(table, old, new)}"
                    )


def _same_columns(old: dict[str, str], new: list[tuple[str, Any]]) -> bool:
    return len(old) == len(new) and all(name in old and _same(old[name], tn) for name, tn in new)


def _table_steps(old: QualifiedName, new: QualifiedName) -> str:
    return (
        f"to keep the data, rename instead: run ALTER TABLE {old} RENAME TO {display_ident(new.name)} on the "
        f"environment and plan again; without downtime, expand/contract: (1) create {new} while keeping {old}, "
        f"copy the rows and keep both in step until every reader uses {new} (or leave a view named {old}); "
        f"(2) then remove {old} from the desired state"
    )


@check(
    "RN102",
    HazardKind.RENAME,
    Severity.WARNING,
    "table dropped and another with the same columns created: likely a rename",
    nodes=["DropStmt", "CreateStmt"],
)
def table_rename(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if getattr(node, "removeType", None) == OT.OBJECT_TABLE:
        for obj in node.objects or ():
            old = dropped_key(obj)
            st = ctx.stats(old) if old is not None else None
            if old is None or st is None or not st.columns:
                continue
            for new, cols in ctx.plan.created_table_columns.items():
                if new != old and _same_columns(dict(st.columns), cols):
                    yield f"table {old} is dropped and {new} with the same columns is created: if this is a rename, {_table_steps(old, new)}"
    elif isinstance(node, ast.CreateStmt) and node.relation is not None:
        new = qualified(node.relation)
        cols = ctx.plan.created_table_columns.get(new, [])
        for old in ctx.plan.dropped_tables:
            st = ctx.stats(old)
            if old != new and st is not None and st.columns and _same_columns(dict(st.columns), cols):
                yield f"table {new} is created while {old} with the same columns is dropped: if this is a rename, {_table_steps(old, new)}"
