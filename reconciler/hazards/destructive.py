"""DS1xx: statements that lose data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import enums

from ..model import HazardKind, Severity
from .names import object_name, relname
from .registry import ParsedStatement, PlanContext, check

OT = enums.ObjectType

_DROPPED = {
    OT.OBJECT_SCHEMA: "schema",
    OT.OBJECT_TABLE: "table",
    OT.OBJECT_SEQUENCE: "sequence",
    OT.OBJECT_TYPE: "type",
    OT.OBJECT_MATVIEW: "materialized view",
    OT.OBJECT_DOMAIN: "domain",
    OT.OBJECT_FOREIGN_TABLE: "foreign table",
    OT.OBJECT_EXTENSION: "extension",
}


def _drops(node: Any, kind: Any) -> Iterator[str]:
    if node.removeType == kind:
        for obj in node.objects or ():
            cascade = (
                " with CASCADE (dependent objects go too)" if node.behavior == enums.DropBehavior.DROP_CASCADE else ""
            )
            yield f"drops {_DROPPED[kind]} {object_name(obj)}{cascade}"


@check("DS101", HazardKind.DESTRUCTIVE, Severity.DANGER, "schema dropped", nodes=["DropStmt"])
def schema_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield from _drops(node, OT.OBJECT_SCHEMA)


@check("DS102", HazardKind.DESTRUCTIVE, Severity.DANGER, "table dropped", nodes=["DropStmt"])
def table_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield from _drops(node, OT.OBJECT_TABLE)
    yield from _drops(node, OT.OBJECT_FOREIGN_TABLE)


@check("DS103", HazardKind.DESTRUCTIVE, Severity.DANGER, "column dropped", nodes=["AlterTableStmt"])
def column_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for cmd in node.cmds or ():
        if cmd.subtype == enums.AlterTableType.AT_DropColumn:
            yield f"drops column {relname(node.relation)}.{cmd.name} and its data"


@check("DS104", HazardKind.DESTRUCTIVE, Severity.DANGER, "sequence dropped", nodes=["DropStmt"])
def sequence_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield from _drops(node, OT.OBJECT_SEQUENCE)


@check("DS105", HazardKind.DESTRUCTIVE, Severity.DANGER, "type or domain dropped", nodes=["DropStmt"])
def type_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield from _drops(node, OT.OBJECT_TYPE)
    yield from _drops(node, OT.OBJECT_DOMAIN)


@check("DS106", HazardKind.DESTRUCTIVE, Severity.WARNING, "materialized view dropped", nodes=["DropStmt"])
def matview_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield from _drops(node, OT.OBJECT_MATVIEW)


@check("DS107", HazardKind.DESTRUCTIVE, Severity.DANGER, "column type changed", nodes=["AlterTableStmt"])
def column_type_changed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for cmd in node.cmds or ():
        if cmd.subtype == enums.AlterTableType.AT_AlterColumnType:
            new = ".".join(n.sval for n in cmd.def_.typeName.names) if cmd.def_ is not None else "?"
            yield f"changes the type of {relname(node.relation)}.{cmd.name} to {new}: values may be cast or lost"


@check("DS108", HazardKind.DESTRUCTIVE, Severity.DANGER, "rows truncated", nodes=["TruncateStmt"])
def truncated(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for rv in node.relations or ():
        yield f"removes every row of {relname(rv)}"


@check("DS109", HazardKind.DESTRUCTIVE, Severity.DANGER, "rows deleted", nodes=["DeleteStmt"])
def deleted(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield f"deletes rows of {relname(node.relation)}"


@check("DS110", HazardKind.DESTRUCTIVE, Severity.DANGER, "extension dropped", nodes=["DropStmt"])
def extension_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield from _drops(node, OT.OBJECT_EXTENSION)
