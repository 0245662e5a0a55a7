"""RC1xx: objects dropped and created again in the same plan. No data is lost; dependants and grants are named.

migra drops and recreates a view whose columns change, a function whose signature changes, a trigger whose
definition changes, a materialized view whose query changes, and an enum that gains values. Between the drop and
the create the object does not exist (invisible inside one transaction, visible if the two run apart), and what
migra does not read is not recreated: grants on views and functions, view options, materialized view indexes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import enums

from ..model import HazardKind, QualifiedName, Severity
from .context import ParsedStatement, PlanContext
from .destructive import type_replaced
from .names import dropped_key
from .registry import check

OT = enums.ObjectType


def _dependants_in_plan(kind: str, name: QualifiedName, ctx: PlanContext, stmt: ParsedStatement) -> list[str]:
    """Objects that the plan recreates after ``stmt`` and whose definitions use ``name``."""
    out: list[str] = []
    for (k, other), at in sorted(ctx.plan.created.items(), key=lambda kv: kv[1]):
        if at <= stmt.index or other == str(name):
            continue
        used = ctx.plan.function_refs.get(at, set()) if kind == "function" else ctx.plan.relation_refs.get(at, set())
        if name in used:
            out.append(f"{k} {other}")
    return out


def _describe(name: QualifiedName, kind: str, ctx: PlanContext, stmt: ParsedStatement) -> str:
    parts: list[str] = []
    st = ctx.stats(name)
    deps = _dependants_in_plan(kind, name, ctx, stmt)
    if st is not None:
        deps += [f"view {d}" for d in st.dependants if f"view {d}" not in deps and f"matview {d}" not in deps]
    if deps:
        parts.append("dependants: " + ", ".join(deps))
    if st is not None and st.has_grants:
        parts.append("it has grants in the environment that the plan does not restore (migra does not read them)")
    return "; " + "; ".join(parts) if parts else ""


def _recreated(
    node: Any, stmt: ParsedStatement, ctx: PlanContext, remove: Any, kind: str
) -> Iterator[tuple[QualifiedName, int]]:
    if node.removeType != remove:
        return
    for obj in node.objects or ():
        name = dropped_key(obj)
        again = ctx.plan.recreated_after(kind, name, stmt.index) if name is not None else None
        if name is not None and again is not None:
            yield name, again


@check("RC101", HazardKind.RECREATE, Severity.INFO, "view dropped and recreated", nodes=["DropStmt"])
def view_recreated(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for name, again in _recreated(node, stmt, ctx, OT.OBJECT_VIEW, "view"):
        yield (
            f"drops view {name} and recreates it (statement {again + 1}); no data is lost, but queries on it fail if "
            f"they run in between, and options such as security_invoker come back only if the desired state sets "
            f"them{_describe(name, 'view', ctx, stmt)}"
        )


@check("RC102", HazardKind.RECREATE, Severity.INFO, "function dropped and recreated", nodes=["DropStmt"])
def function_recreated(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for remove in (OT.OBJECT_FUNCTION, OT.OBJECT_PROCEDURE):
        for name, again in _recreated(node, stmt, ctx, remove, "function"):
            yield (
                f"drops function {name} and recreates it with another signature (statement {again + 1}): callers "
                f"of the old signature fail and EXECUTE grants on it are not restored"
                f"{_describe(name, 'function', ctx, stmt)}"
            )


@check("RC103", HazardKind.RECREATE, Severity.INFO, "trigger dropped and recreated", nodes=["DropStmt"])
def trigger_recreated(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, name, again in ctx.plan.children_recreated(node, "trigger", stmt.index):
        yield (
            f"drops trigger {name} on {table} and recreates it (statement {again + 1}): if the two do not run in "
            "one transaction, writes in between skip the trigger"
        )


@check("RC104", HazardKind.RECREATE, Severity.WARNING, "materialized view dropped and recreated", nodes=["DropStmt"])
def matview_recreated(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for name, again in _recreated(node, stmt, ctx, OT.OBJECT_MATVIEW, "matview"):
        st = ctx.stats(name)
        rebuilt = {i for i, at in ctx.plan.indexes_on.get(name, []) if at > again}
        lost = [i for i in (st.indexes if st is not None else ()) if i not in rebuilt]
        missing = (
            f"; its indexes {', '.join(lost)} are not recreated by this plan (migra adds them on the next diff)"
            if lost
            else ""
        )
        yield (
            f"drops materialized view {name} and recreates it (statement {again + 1}): its rows are recomputed by "
            f"running its query, and reads fail in between if the two do not run in one transaction"
            f"{missing}{_describe(name, 'view', ctx, stmt)}"
        )


@check("RC105", HazardKind.RECREATE, Severity.INFO, "type recreated (old version dropped)", nodes=["DropStmt"])
def type_recreated(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if node.removeType not in (OT.OBJECT_TYPE, OT.OBJECT_DOMAIN):
        return
    for obj in node.objects or ():
        name = dropped_key(obj)
        new = type_replaced(name, stmt, ctx) if name is not None else None
        if new is not None:
            yield (
                f"drops {name}, the old version of type {new} that this plan recreated and recast the columns to: "
                "no data is lost once the recast succeeded"
            )
