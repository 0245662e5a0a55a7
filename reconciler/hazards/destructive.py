"""DS1xx: statements that lose data."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, enums

from ..model import HazardKind, QualifiedName, Severity
from .context import ParsedStatement, PlanContext
from .names import dropped_key, object_name, qualified, relname
from .registry import check
from .types import compare, from_type_name, parse_type, same_type

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


def _drops(node: Any, kind: Any, keep: Any = None) -> Iterator[str]:
    """Messages for each object that ``node`` drops if it drops ``kind``; ``keep(name)`` True skips one."""
    if node.removeType == kind:
        for obj in node.objects or ():
            key = dropped_key(obj)
            if keep is not None and key is not None and keep(key):
                continue
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
    yield from _drops(node, OT.OBJECT_TYPE, lambda name: type_replaced(name, stmt, ctx) is not None)
    yield from _drops(node, OT.OBJECT_DOMAIN, lambda name: type_replaced(name, stmt, ctx) is not None)


def type_replaced(name: QualifiedName, stmt: ParsedStatement, ctx: PlanContext) -> QualifiedName | None:
    """If type ``name`` is the old version of a type that the plan renamed away and created anew, its new name.

    migra changes an enum by renaming it to ``..._old_version_to_be_dropped``, creating the new one, recasting
    the columns and dropping the old one: that drop loses no data (RC105 describes it).
    """
    renamed = ctx.plan.type_renames.get(name)
    if renamed is None or renamed[1] > stmt.index:
        return None
    old, _ = renamed
    return old if ("type", str(old)) in ctx.plan.created else None


@check("DS106", HazardKind.DESTRUCTIVE, Severity.WARNING, "materialized view dropped", nodes=["DropStmt"])
def matview_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    # Recreated in the same plan, its rows are recomputed from its query: RC104 says so.
    yield from _drops(
        node, OT.OBJECT_MATVIEW, lambda name: ctx.plan.recreated_after("matview", name, stmt.index) is not None
    )


def _type_cmds(node: Any) -> Iterator[Any]:
    """The column type changes of an ALTER TABLE, in the order of :func:`_type_changes`."""
    for cmd in node.cmds or ():
        if cmd.subtype == enums.AlterTableType.AT_AlterColumnType and cmd.def_ is not None:
            yield cmd


def _type_changes(node: Any, ctx: PlanContext) -> Iterator[tuple[str, str, Any]]:
    """(table.column, old type text or "", new TypeName) for each column type change of an ALTER TABLE."""
    table = qualified(node.relation)
    st = ctx.stats(table)
    for cmd in _type_cmds(node):
        old = st.columns.get(str(cmd.name), "") if st is not None else ""
        yield f"{relname(node.relation)}.{cmd.name}", old, cmd.def_.typeName


@check("DS107", HazardKind.DESTRUCTIVE, Severity.DANGER, "column type changed", nodes=["AlterTableStmt"])
def column_type_changed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for (column, old_text, type_name), cmd in zip(_type_changes(node, ctx), _type_cmds(node), strict=True):
        new = from_type_name(type_name)
        old = parse_type(old_text) if old_text else None
        shown = str(new) if new is not None else "?"
        if old is None or new is None:
            yield f"changes the type of {column} to {shown}: values may be cast or lost (old type unknown)"
            continue
        if enum_swap(cmd, new, stmt, ctx):
            continue  # migra's enum change: MF107 and RC105 describe it
        change = compare(old, new)
        if change.verdict == "changed":
            yield f"changes the type of {column} from {old} to {new}: {change.reason}"
        elif change.verdict in ("same", "wider") and not _plain_cast(cmd, new):
            yield (
                f"changes the type of {column} from {old} to {new} USING an expression: the values it computes may "
                "differ from the old ones"
            )


def recast_to_recreated(new: Any, stmt: ParsedStatement, ctx: PlanContext) -> bool:
    """Whether ``new`` is a user type that this plan creates anew before ``stmt`` (an enum changed by migra, a new
    domain ...): rows whose values the new type lacks make the recast fail (MF107)."""
    if new.builtin:
        return False
    at = ctx.plan.created.get(("type", str(_type_key(new))))
    return at is not None and at < stmt.index


def _type_key(new: Any) -> QualifiedName:
    return QualifiedName(new.schema or "public", new.name)


def enum_swap(cmd: Any, new: Any, stmt: ParsedStatement, ctx: PlanContext) -> bool:
    """Whether ``cmd`` is migra's exact enum change: the old enum renamed away, a new enum of the same name created
    before ``stmt``, and the column recast ``USING column::text::new_enum``. Only this may suppress DS107: a recast
    to a new domain or to any other new type may cut or change values."""
    if new.builtin:
        return False
    name = _type_key(new)
    at = ctx.plan.created.get(("enum", str(name)))
    if at is None or at >= stmt.index:
        return False
    renamed_away = any(old == name and i < at for old, i in ctx.plan.type_renames.values())
    return renamed_away and _enum_swap_using(cmd, new)


def _enum_swap_using(cmd: Any, new: Any) -> bool:
    """Whether the USING of ``cmd`` is migra's exact enum recast: ``USING column::text::new_type``."""
    using = cmd.def_.raw_default if isinstance(cmd.def_, ast.ColumnDef) else None
    if not isinstance(using, ast.TypeCast) or not isinstance(using.arg, ast.TypeCast):
        return False
    inner, col = using.arg, using.arg.arg
    outer = from_type_name(using.typeName)
    text = from_type_name(inner.typeName)
    return (
        isinstance(col, ast.ColumnRef)
        and [str(getattr(f, "sval", "")) for f in col.fields or ()] == [str(cmd.name)]
        and text is not None
        and text.name == "text"
        and outer is not None
        and outer.name == new.name
        and outer.schema == new.schema
    )


def _plain_cast(cmd: Any, new: Any) -> bool:
    """Whether ``cmd`` has no USING, or USING is the column cast to the new type (``USING col::new``): PostgreSQL's
    own conversion, which :func:`~.types.compare` judged. Any other expression may compute other values."""
    using = cmd.def_.raw_default if isinstance(cmd.def_, ast.ColumnDef) else None
    if using is None:
        return True
    if not isinstance(using, ast.TypeCast) or not isinstance(using.arg, ast.ColumnRef):
        return False
    target = from_type_name(using.typeName)
    fields = [str(getattr(f, "sval", "")) for f in using.arg.fields or ()]
    return fields == [str(cmd.name)] and target is not None and same_type(target, new)


@check("DS111", HazardKind.DESTRUCTIVE, Severity.DANGER, "column type narrowed or lossy", nodes=["AlterTableStmt"])
def column_type_narrowed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for column, old_text, type_name in _type_changes(node, ctx):
        new = from_type_name(type_name)
        old = parse_type(old_text) if old_text else None
        if old is not None and new is not None:
            change = compare(old, new)
            if change.verdict == "narrower":
                yield f"narrows {column} from {old} to {new}: {change.reason}"


@check("DS108", HazardKind.DESTRUCTIVE, Severity.DANGER, "rows truncated", nodes=["TruncateStmt"])
def truncated(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for rv in node.relations or ():
        yield f"removes every row of {relname(rv)}"


@check("DS109", HazardKind.DESTRUCTIVE, Severity.DANGER, "rows deleted", nodes=["DeleteStmt"])
def deleted(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield f"deletes rows of {relname(node.relation)}"


@check("DS112", HazardKind.DESTRUCTIVE, Severity.DANGER, "rows updated or merged", nodes=["UpdateStmt", "MergeStmt"])
def updated(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    verb = (
        "overwrites values in" if type(node).__name__ == "UpdateStmt" else "merges into (may update or delete rows of)"
    )
    yield f"{verb} {relname(node.relation)}"


@check("DS113", HazardKind.DESTRUCTIVE, Severity.DANGER, "objects owned by a role dropped", nodes=["DropOwnedStmt"])
def owned_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for role in node.roles or ():
        yield f"drops every object owned by role {role.rolename or '?'} in this database, with its data"


@check("DS110", HazardKind.DESTRUCTIVE, Severity.DANGER, "extension dropped", nodes=["DropStmt"])
def extension_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield from _drops(node, OT.OBJECT_EXTENSION)


@check("DS114", HazardKind.DESTRUCTIVE, Severity.DANGER, "table made UNLOGGED", nodes=["AlterTableStmt"])
def set_unlogged(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for cmd in node.cmds or ():
        if cmd.subtype == enums.AlterTableType.AT_SetUnLogged:
            yield (
                f"makes {relname(node.relation)} UNLOGGED: every row is lost at the next crash or failover, and "
                "replicas never see them"
            )


@check("DS115", HazardKind.DESTRUCTIVE, Severity.DANGER, "collation dropped", nodes=["DropStmt"])
def collation_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if node.removeType == OT.OBJECT_COLLATION:
        for obj in node.objects or ():
            cascade = (
                " with CASCADE (the columns and indexes using it go too)"
                if node.behavior == enums.DropBehavior.DROP_CASCADE
                else ""
            )
            yield f"drops collation {object_name(obj)}{cascade}: text sorted or compared with it cannot be any more"
