"""LK1xx: statements that hold strong locks for long, or rewrite a table, on a large table.

Data-aware: each check fires only for a table above the environment's ``large_table`` threshold (or of unknown
size); on an empty or small table the same statement finishes before anyone notices. A statement that runs in an
online-safe form (see :mod:`.online`) carries no lock hazard: the plan shows the steps that run instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, enums
from pglast.visitors import Visitor

from ..model import HazardKind, QualifiedName, Severity
from .context import ParsedStatement, PlanContext
from .destructive import recast_to_recreated
from .names import added_constraint, dropped_key, qualified, qualified_child, validated_constraints
from .registry import Rule, Select, check, check_rules
from .types import compare, from_type_name, parse_type

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType

# Subcommands that take less than ACCESS EXCLUSIVE, or that a more specific LK check covers.
_NOT_ACCESS_EXCLUSIVE = {
    AT.AT_ValidateConstraint,  # SHARE UPDATE EXCLUSIVE
    AT.AT_SetStatistics,
    AT.AT_ClusterOn,
    AT.AT_DropCluster,
    AT.AT_AttachPartition,  # SHARE UPDATE EXCLUSIVE on the parent
    AT.AT_DetachPartitionFinalize,
}

# Functions whose default value PostgreSQL evaluates once (STABLE or IMMUTABLE): ADD COLUMN ... DEFAULT f() stores
# it in the catalog instead of rewriting. Any other function is assumed VOLATILE (PostgreSQL's own default).
_NON_VOLATILE = {
    "now",
    "current_timestamp",
    "statement_timestamp",
    "transaction_timestamp",
    "current_date",
    "localtimestamp",
    "lower",
    "upper",
    "length",
    "coalesce",
    "concat",
    "abs",
    "round",
    "to_jsonb",
    "jsonb_build_object",
    "json_build_object",
    "jsonb_build_array",
    "array_fill",
    "make_interval",
    "make_date",
    "to_timestamp",
    "md5",
    "int4range",
    "tstzrange",
}


def _large(table: QualifiedName, stmt: ParsedStatement, ctx: PlanContext) -> bool:
    return ctx.is_large(table, stmt.index)


def _cmds(node: Any) -> tuple[Any, ...]:
    return tuple(node.cmds or ()) if node.objtype in (OT.OBJECT_TABLE, OT.OBJECT_MATVIEW) else ()


def _on_large(
    node: Any, stmt: ParsedStatement, ctx: PlanContext, *, unless_online: bool = False
) -> Iterator[tuple[QualifiedName, Any]]:
    """(table, command) for each command of an ALTER TABLE on a large table; with ``unless_online``, nothing when
    the statement runs in an online-safe form."""
    table = qualified(node.relation)
    if (unless_online and ctx.online(stmt)) or not _large(table, stmt, ctx):
        return
    yield from ((table, cmd) for cmd in _cmds(node))


@check(
    "LK101", HazardKind.LOCK, Severity.WARNING, "index built without CONCURRENTLY on a large table", nodes=["IndexStmt"]
)
def index_not_concurrent(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    table = qualified(node.relation)
    if node.concurrent or ctx.online(stmt) or not _large(table, stmt, ctx):
        return
    st = ctx.stats(table)
    why = ""
    if st is not None and st.kind == "p":
        why = " (a partitioned table cannot be indexed CONCURRENTLY: build the index on each partition first)"
    elif not ctx.online_rewrites:
        why = " (online_rewrites is off for this environment)"
    yield (
        f"builds index {node.idxname or '?'} on {ctx.figures(table)} without CONCURRENTLY: writes to the table "
        f"wait until the build ends{why}"
    )


def _rewrites_column(node: Any, cmd: Any, stmt: ParsedStatement, ctx: PlanContext) -> str | None:
    new = from_type_name(cmd.def_.typeName) if cmd.def_ is not None else None
    st = ctx.stats(qualified(node.relation))
    old_text = st.columns.get(str(cmd.name), "") if st is not None else ""
    old = parse_type(old_text) if old_text else None
    if new is not None and recast_to_recreated(new, stmt, ctx):
        return f"recasts {cmd.name} to the recreated type {new}"
    if old is None or new is None:
        return f"changes the type of {cmd.name}"
    if compare(old, new).rewrite:
        return f"changes {cmd.name} from {old} to {new}"
    return None


@check(
    "LK102", HazardKind.REWRITE, Severity.WARNING, "column type change rewrites a large table", nodes=["AlterTableStmt"]
)
def type_change_rewrite(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, cmd in _on_large(node, stmt, ctx):
        if cmd.subtype == AT.AT_AlterColumnType:
            what = _rewrites_column(node, cmd, stmt, ctx)
            if what is not None:
                yield (
                    f"{what}: rewrites {ctx.figures(table)} and rebuilds its indexes under an ACCESS EXCLUSIVE "
                    "lock; reads and writes wait for the whole rewrite"
                )


class _Calls(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []

    def visit_FuncCall(self, ancestors: Any, node: Any) -> None:
        self.names.append(str(node.funcname[-1].sval) if node.funcname else "?")


def _volatile(expr: Any) -> str | None:
    """The name of a function in ``expr`` that may be volatile, if any."""
    if expr is None:
        return None
    calls = _Calls()
    calls(expr)
    return next((n for n in calls.names if n not in _NON_VOLATILE), None)


def _column_rewrite(col: Any) -> str | None:
    """Why adding column ``col`` rewrites the table, if it does."""
    for con in col.constraints or ():
        if con.contype == CT.CONSTR_DEFAULT:
            fn = _volatile(con.raw_expr)
            if fn is not None:
                return f"its default calls {fn}(), which is (or may be) VOLATILE"
        if con.contype == CT.CONSTR_IDENTITY:
            return "it is an identity column (every row gets a value)"
        if con.contype == CT.CONSTR_GENERATED:
            return "it is a stored generated column (computed for every row)"
    if col.identity not in (None, "", "\x00"):
        return "it is an identity column (every row gets a value)"
    return None


@check(
    "LK103",
    HazardKind.REWRITE,
    Severity.WARNING,
    "column added with a volatile default rewrites a large table",
    nodes=["AlterTableStmt"],
)
def volatile_default(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, cmd in _on_large(node, stmt, ctx):
        if cmd.subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
            why = _column_rewrite(cmd.def_)
            if why is not None:
                yield (
                    f"adds column {cmd.def_.colname} and {why}: rewrites {ctx.figures(table)} under an ACCESS "
                    "EXCLUSIVE lock (add it without the default, backfill in batches, then set the default)"
                )


@check(
    "LK104",
    HazardKind.LOCK,
    Severity.WARNING,
    "SET NOT NULL scans a large table under ACCESS EXCLUSIVE",
    nodes=["AlterTableStmt"],
)
def set_not_null_scan(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, cmd in _on_large(node, stmt, ctx, unless_online=True):
        if cmd.subtype == AT.AT_SetNotNull:
            yield (
                f"sets {cmd.name} NOT NULL: scans {ctx.figures(table)} for NULLs under an ACCESS EXCLUSIVE lock "
                "(reads and writes wait)"
            )


def _validated_on_large(contype: Any) -> Select:
    return lambda node, stmt, ctx: validated_constraints(_on_large(node, stmt, ctx, unless_online=True), contype)


check_rules(
    HazardKind.LOCK,
    ["AlterTableStmt"],
    [
        Rule(
            "LK105",
            Severity.WARNING,
            "CHECK constraint added without NOT VALID on a large table",
            _validated_on_large(CT.CONSTR_CHECK),
            lambda node, tc, ctx: (
                f"adds CHECK constraint {tc[1].conname or '?'} without NOT VALID: scans {ctx.figures(tc[0])} under "
                "an ACCESS EXCLUSIVE lock"
            ),
        ),
        Rule(
            "LK106",
            Severity.WARNING,
            "FOREIGN KEY added without NOT VALID on a large table",
            _validated_on_large(CT.CONSTR_FOREIGN),
            lambda node, tc, ctx: (
                f"adds FOREIGN KEY {tc[1].conname or '?'} without NOT VALID: scans {ctx.figures(tc[0])} while "
                f"writes to it and to {qualified(tc[1].pktable)} wait (SHARE ROW EXCLUSIVE)"
            ),
        ),
    ],
)


def _covered(cmd: Any) -> bool:
    """Whether a more specific LK check (or a weaker lock) accounts for ``cmd``."""
    if cmd.subtype in _NOT_ACCESS_EXCLUSIVE or cmd.subtype in (AT.AT_AlterColumnType, AT.AT_SetNotNull):
        return True
    if cmd.subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef) and _column_rewrite(cmd.def_):
        return True
    con = added_constraint(cmd)
    if con is None:
        return False
    if con.contype == CT.CONSTR_FOREIGN:
        return True  # SHARE ROW EXCLUSIVE; validated: LK106
    if con.contype == CT.CONSTR_CHECK and not con.skip_validation:
        return True  # LK105
    return con.contype in (CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY, CT.CONSTR_EXCLUSION) and not con.indexname  # LK108


@check(
    "LK107",
    HazardKind.LOCK,
    Severity.INFO,
    "brief ACCESS EXCLUSIVE lock on a large table",
    nodes=["AlterTableStmt", "DropStmt", "CreatePolicyStmt", "AlterPolicyStmt", "RenameStmt"],
)
def access_exclusive(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    targets: list[tuple[QualifiedName, str]] = []  # (stats key, what)
    if isinstance(node, ast.AlterTableStmt):
        if any(not _covered(c) for c in _cmds(node)):
            targets.append((qualified(node.relation), "an ACCESS EXCLUSIVE lock on"))
    elif isinstance(node, ast.DropStmt):
        if node.removeType == OT.OBJECT_INDEX and not node.concurrent and not ctx.online(stmt):
            # An index's figures are those of its table.
            targets += [
                (key, "an ACCESS EXCLUSIVE lock (no CONCURRENTLY) on the table of")
                for key in (dropped_key(o) for o in node.objects or ())
                if key is not None
            ]
        elif node.removeType in (OT.OBJECT_TRIGGER, OT.OBJECT_POLICY, OT.OBJECT_RULE):
            targets += [(qualified_child(o)[0], "an ACCESS EXCLUSIVE lock on") for o in node.objects or ()]
    elif isinstance(node, ast.CreatePolicyStmt | ast.AlterPolicyStmt):
        targets.append((qualified(node.table), "an ACCESS EXCLUSIVE lock on"))
    elif isinstance(node, ast.RenameStmt) and node.relation is not None:
        targets.append((qualified(node.relation), "an ACCESS EXCLUSIVE lock on"))
    for key, what in targets:
        if ctx.stats(key) is not None and ctx.size(key, stmt.index) == "large":
            yield (
                f"takes {what} {ctx.figures(key)}: brief, but it waits up to lock_timeout behind running queries "
                "and every query on the table queues behind it"
            )


@check(
    "LK108",
    HazardKind.LOCK,
    Severity.WARNING,
    "unique or primary key index built by ALTER TABLE on a large table",
    nodes=["AlterTableStmt"],
)
def constraint_index_build(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, cmd in _on_large(node, stmt, ctx):
        con = added_constraint(cmd)
        unique = (CT.CONSTR_UNIQUE, CT.CONSTR_PRIMARY, CT.CONSTR_EXCLUSION)
        if con is not None and con.contype in unique and not con.indexname:
            yield (
                f"adds constraint {con.conname or '?'} and builds its index on {ctx.figures(table)} under an "
                "ACCESS EXCLUSIVE lock (build a unique index CONCURRENTLY, then ADD CONSTRAINT ... USING INDEX)"
            )


@check(
    "LK109",
    HazardKind.LOCK,
    Severity.WARNING,
    "constraint validated in the transaction that added it, on a large table",
    nodes=["AlterTableStmt"],
)
def validate_in_same_transaction(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, cmd in _on_large(node, stmt, ctx, unless_online=True):
        if cmd.subtype == AT.AT_ValidateConstraint:
            added = ctx.plan.not_valid_constraints.get((table, str(cmd.name)))
            if added is not None and added < stmt.index:
                yield (
                    f"validates {cmd.name} in the same transaction as statement {added + 1} that added it: the lock "
                    f"taken there is held while {ctx.figures(table)} is scanned"
                )


@check("LK110", HazardKind.REWRITE, Severity.WARNING, "SET LOGGED rewrites a large table", nodes=["AlterTableStmt"])
def set_logged(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, cmd in _on_large(node, stmt, ctx):
        if cmd.subtype == AT.AT_SetLogged:
            yield (
                f"makes {ctx.figures(table)} LOGGED: rewrites it into the WAL under an ACCESS EXCLUSIVE lock; reads "
                "and writes wait for the whole rewrite"
            )
