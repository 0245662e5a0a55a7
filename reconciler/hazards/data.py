"""MF1xx: statements whose success depends on the rows already in the table.

Data-aware: each check fires only when the table may hold rows (the environment says it is not empty, or its
size is unknown). Vetting cannot catch these failures: the scratch clone has the schema, not the rows. A failing
statement rolls back its transaction, so nothing is half-applied, but the plan stops there.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, enums

from ..model import HazardKind, QualifiedName, Severity
from .context import ParsedStatement, PlanContext
from .destructive import recast_to_recreated
from .names import added_constraint, qualified, relname, strings, subcommands, validated_constraints
from .registry import Rule, Select, check, check_rules
from .types import from_type_name

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType


def _cmds(node: Any) -> tuple[Any, ...]:
    return tuple(node.cmds or ()) if node.objtype == OT.OBJECT_TABLE else ()


def _on_rows(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[tuple[QualifiedName, Any]]:
    """(table, command) for each command of an ALTER TABLE whose table may hold rows (nothing on an empty one)."""
    table = qualified(node.relation)
    if ctx.has_rows(table, stmt.index):
        yield from ((table, cmd) for cmd in _cmds(node))


def _keys(con: Any) -> str:
    return ", ".join(str(k.sval) for k in con.keys or () if isinstance(k, ast.String)) or "?"


@check(
    "MF101",
    HazardKind.DATA_DEPENDENT,
    Severity.DANGER,
    "NOT NULL column added without a default to a table with rows",
    nodes=["AlterTableStmt"],
)
def not_null_without_default(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, cmd in _on_rows(node, stmt, ctx):
        if cmd.subtype != AT.AT_AddColumn or not isinstance(cmd.def_, ast.ColumnDef):
            continue
        col = cmd.def_
        types = {c.contype for c in col.constraints or ()}
        not_null = col.is_not_null or CT.CONSTR_NOTNULL in types or CT.CONSTR_PRIMARY in types
        filled = types & {CT.CONSTR_DEFAULT, CT.CONSTR_IDENTITY, CT.CONSTR_GENERATED} or col.identity not in (
            None,
            "",
            "\x00",
        )
        if not_null and not filled:
            yield (
                f"adds NOT NULL column {col.colname} without a default to {ctx.figures(table)}: fails if the table "
                "has any row (add it nullable, backfill, then SET NOT NULL; or give it a default)"
            )


@check(
    "MF102",
    HazardKind.DATA_DEPENDENT,
    Severity.WARNING,
    "unique index or constraint added to a table with rows",
    nodes=["IndexStmt", "AlterTableStmt"],
)
def unique_added(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    table = qualified(node.relation)
    if not ctx.has_rows(table, stmt.index):
        return
    if isinstance(node, ast.IndexStmt):
        if node.unique:
            yield f"builds unique index {node.idxname or '?'} on {ctx.figures(table)}: fails if existing rows hold duplicates"
        return
    for cmd in _cmds(node):
        con = added_constraint(cmd)
        if con is None or con.indexname:
            continue  # USING INDEX: the unique index exists already
        if con.contype in (CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY):
            yield (
                f"adds {'PRIMARY KEY' if con.contype == CT.CONSTR_PRIMARY else 'UNIQUE'} ({_keys(con)}) to "
                f"{ctx.figures(table)}: fails if existing rows hold duplicates (or NULLs, for a primary key)"
            )
        elif con.contype == CT.CONSTR_EXCLUSION:
            yield f"adds exclusion constraint {con.conname or '?'} to {ctx.figures(table)}: fails if existing rows conflict"


def _on_rows_where(*subtypes: Any) -> Select:
    return lambda node, stmt, ctx: subcommands(_on_rows(node, stmt, ctx), *subtypes)


def _validated_on_rows(contype: Any) -> Select:
    return lambda node, stmt, ctx: validated_constraints(_on_rows(node, stmt, ctx), contype)


check_rules(
    HazardKind.DATA_DEPENDENT,
    ["AlterTableStmt"],
    [
        Rule(
            "MF103",
            Severity.WARNING,
            "CHECK constraint validated on a table with rows",
            _validated_on_rows(CT.CONSTR_CHECK),
            lambda node, tc, ctx: (
                f"adds CHECK constraint {tc[1].conname or '?'} to {ctx.figures(tc[0])}: fails if an existing row "
                "violates it"
            ),
        ),
        Rule(
            "MF104",
            Severity.WARNING,
            "SET NOT NULL on a table with rows",
            _on_rows_where(AT.AT_SetNotNull),
            lambda node, tc, ctx: (
                f"sets {tc[1].name} NOT NULL on {ctx.figures(tc[0])}: fails if an existing row has NULL there"
            ),
        ),
        Rule(
            "MF105",
            Severity.WARNING,
            "FOREIGN KEY validated on a table with rows",
            _validated_on_rows(CT.CONSTR_FOREIGN),
            lambda node, tc, ctx: (
                f"adds FOREIGN KEY {tc[1].conname or '?'} to {ctx.figures(tc[0])}: fails if an existing row refers "
                f"to a missing row of {qualified(tc[1].pktable)}"
            ),
        ),
        Rule(
            "MF106",
            Severity.WARNING,
            "constraint validated against existing rows",
            _on_rows_where(AT.AT_ValidateConstraint),
            lambda node, tc, ctx: (
                f"validates {tc[1].name} on {ctx.figures(tc[0])}: fails if an existing row violates it"
            ),
        ),
    ],
)


@check(
    "MF107",
    HazardKind.DATA_DEPENDENT,
    Severity.WARNING,
    "column recast to a recreated type on a table with rows",
    nodes=["AlterTableStmt"],
)
def recast_to_recreated_type(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, cmd in _on_rows(node, stmt, ctx):
        if cmd.subtype == AT.AT_AlterColumnType and cmd.def_ is not None:
            new = from_type_name(cmd.def_.typeName)
            if new is not None and recast_to_recreated(new, stmt, ctx):
                yield (
                    f"recasts {cmd.name} of {ctx.figures(table)} to the recreated type {new}: fails if a row holds "
                    "a value the new type lacks"
                )


def _sequence_option(opt: Any) -> tuple[str, str]:
    """(name, value as written) of one ALTER SEQUENCE option."""
    arg = opt.arg
    if isinstance(arg, ast.TypeName):
        return str(opt.defname), str(from_type_name(arg) or ".".join(str(n.sval) for n in arg.names or ()))
    for attr in ("ival", "fval", "boolval"):
        if hasattr(arg, attr):
            return str(opt.defname), str(getattr(arg, attr))
    return str(opt.defname), ""


@check(
    "MF108",
    HazardKind.DATA_DEPENDENT,
    Severity.WARNING,
    "sequence range or type changed",
    nodes=["AlterSeqStmt"],
)
def sequence_range_changed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if ctx.plan.created_before(qualified(node.sequence), stmt.index):
        return  # created by this plan: no value has been drawn from it yet
    name = relname(node.sequence)
    for opt in node.options or ():
        if not isinstance(opt, ast.DefElem):
            continue
        option, value = _sequence_option(opt)
        if option in ("as", "minvalue", "maxvalue"):
            yield (
                f"sets {option} {value} on sequence {name}: fails if its current value lies outside the new range, "
                "and nextval fails once the range is used up"
            )
        elif option == "cycle" and getattr(opt.arg, "boolval", True):
            yield f"makes sequence {name} cycle: once its range is used up, nextval repeats values (keys collide)"


@check(
    "MF109",
    HazardKind.DATA_DEPENDENT,
    Severity.WARNING,
    "domain constraint or NOT NULL checked against existing values",
    nodes=["AlterDomainStmt"],
)
def domain_constraint_checked(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    name = ".".join(strings(node.typeName))
    if node.subtype == "O":
        yield f"sets NOT NULL on domain {name}: fails if a column of that domain holds a NULL"
    elif node.subtype == "V" or (node.subtype == "C" and not getattr(node.def_, "skip_validation", False)):
        yield f"checks a constraint of domain {name} against every column of that domain: fails if a value violates it"
