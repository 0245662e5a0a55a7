"""CX1xx: statements that execute code on the environment, or change code that runs there later.

A function body, a trigger, a materialized view's query or a default that calls a user function runs with the
privileges of whoever triggers it, on the environment's real rows; vetting on a schema-only clone does not see what
it does to data (a function may even check ``current_database()``). So each of them needs a person by default. This
stops a desired-state author from running code on an environment unattended.

A function is *built-in* when it lives in ``pg_catalog``: a call qualified with ``pg_catalog``, or an unqualified
call of a name that the environment's ``pg_catalog`` holds (read with the table figures; without that lookup, only
:data:`~.context.KNOWN_BUILTINS`). A call qualified with any other schema, and an operator qualified with one, is
user code.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, enums
from pglast.visitors import Visitor

from ..model import HazardKind, Severity
from .context import KNOWN_BUILTINS, ParsedStatement, PlanContext
from .names import qualified, qualified_name, relname, strings
from .registry import check

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType


class _UserCalls(Visitor):
    def __init__(self, builtins: frozenset[str]) -> None:
        super().__init__()
        self.builtins = builtins
        self.found: list[str] = []

    def visit_FuncCall(self, ancestors: Any, node: Any) -> None:
        parts = strings(node.funcname)
        if len(parts) >= 2 and parts[-2] != "pg_catalog":
            self.found.append(".".join(parts[-2:]))
        elif len(parts) == 1 and parts[0] not in self.builtins:
            self.found.append(parts[0])

    def visit_A_Expr(self, ancestors: Any, node: Any) -> None:
        parts = strings(node.name)
        if len(parts) >= 2 and parts[-2] != "pg_catalog":
            self.found.append("OPERATOR(" + ".".join(parts[-2:]) + ")")


def user_calls(expr: Any, ctx: PlanContext) -> list[str]:
    """The non-built-in functions and operators that ``expr`` calls, in order, no repeats."""
    if expr is None:
        return []
    v = _UserCalls(ctx.builtin_functions if ctx.builtin_functions is not None else KNOWN_BUILTINS)
    v(expr)
    return list(dict.fromkeys(v.found))


def _language(node: Any) -> str:
    for opt in node.options or ():
        if isinstance(opt, ast.DefElem) and opt.defname == "language":
            return str(getattr(opt.arg, "sval", "?"))
    return "sql"


@check("CX101", HazardKind.CODE, Severity.WARNING, "function or procedure created or changed",
       nodes=["CreateFunctionStmt", "AlterFunctionStmt"])  # fmt: skip
def function_changed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if isinstance(node, ast.CreateFunctionStmt):
        what = "procedure" if node.is_procedure else "function"
        yield (
            f"creates or replaces {what} {qualified_name(node.funcname)} (language {_language(node)}): its body runs "
            "on the environment whenever it is called, by queries, defaults, triggers and policies"
        )
    else:
        yield f"changes the properties of function {qualified_name(node.func.objname)}: how and as whom its body runs"


_ENABLE_TRIGGER = (AT.AT_EnableTrig, AT.AT_EnableAlwaysTrig, AT.AT_EnableReplicaTrig, AT.AT_EnableTrigAll,
                   AT.AT_EnableTrigUser)  # fmt: skip


@check("CX102", HazardKind.CODE, Severity.WARNING, "trigger created or enabled",
       nodes=["CreateTrigStmt", "AlterTableStmt"])  # fmt: skip
def trigger_changed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if isinstance(node, ast.CreateTrigStmt):
        yield (
            f"creates trigger {node.trigname} on {relname(node.relation)}: function "
            f"{qualified_name(node.funcname)} runs on writes to the table and may change or discard them"
        )
        return
    for cmd in node.cmds or ():
        if cmd.subtype in _ENABLE_TRIGGER:
            yield f"enables trigger {cmd.name or 'ALL'} on {relname(node.relation)}: its function runs on writes"


@check("CX103", HazardKind.CODE, Severity.WARNING, "query run to fill a materialized view or table",
       nodes=["CreateTableAsStmt", "RefreshMatViewStmt"])  # fmt: skip
def query_run(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if isinstance(node, ast.RefreshMatViewStmt):
        yield f"refreshes materialized view {relname(node.relation)}: runs its query, and every function it calls, now"
        return
    into: Any = node.into
    if node.objtype == OT.OBJECT_MATVIEW and into.skipData:
        return
    what = "materialized view" if node.objtype == OT.OBJECT_MATVIEW else "table"
    yield f"builds {what} {relname(into.rel)} WITH DATA: runs its query, and every function it calls, now"


def _column_exprs(col: Any) -> Iterator[tuple[str, Any]]:
    for con in col.constraints or ():
        if con.contype == CT.CONSTR_DEFAULT:
            yield f"the default of column {col.colname}", con.raw_expr
        elif con.contype == CT.CONSTR_GENERATED:
            yield f"generated column {col.colname}", con.raw_expr
        elif con.contype == CT.CONSTR_CHECK:
            yield f"a CHECK of column {col.colname}", con.raw_expr


def _cmd_exprs(cmd: Any) -> Iterator[tuple[str, Any]]:
    if cmd.subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
        yield from _column_exprs(cmd.def_)
    elif cmd.subtype in (AT.AT_ColumnDefault, AT.AT_SetExpression):
        yield f"the new default or expression of column {cmd.name}", cmd.def_
    elif cmd.subtype == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        if cmd.def_.contype == CT.CONSTR_CHECK:
            yield f"CHECK constraint {cmd.def_.conname or '?'}", cmd.def_.raw_expr
    elif cmd.subtype == AT.AT_AlterColumnType and isinstance(cmd.def_, ast.ColumnDef):
        yield f"the USING expression of column {cmd.name}", cmd.def_.raw_default


def _index_exprs(node: Any) -> Iterator[tuple[str, Any]]:
    for elem in node.indexParams or ():
        if getattr(elem, "expr", None) is not None:
            yield f"an expression of index {node.idxname or '?'}", elem.expr
    if node.whereClause is not None:
        yield f"the predicate of index {node.idxname or '?'}", node.whereClause


@check("CX104", HazardKind.CODE, Severity.WARNING,
       "default, generated column, expression index or CHECK calls a user function on a table with rows",
       nodes=["AlterTableStmt", "IndexStmt"])  # fmt: skip
def user_function_on_rows(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if node.relation is None:
        return
    table = qualified(node.relation)
    exprs = (
        _index_exprs(node) if isinstance(node, ast.IndexStmt) else (e for c in node.cmds or () for e in _cmd_exprs(c))
    )
    for what, expr in exprs:
        calls = user_calls(expr, ctx)
        if calls and ctx.has_rows(table, stmt.index):
            yield (
                f"{what} calls {', '.join(calls)} on {ctx.figures(table)}: user code runs for the existing rows "
                "(and on later writes) with the reconciler's privileges"
            )


@check("CX105", HazardKind.CODE, Severity.WARNING, "aggregate created or replaced", nodes=["DefineStmt"])
def aggregate_changed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if node.kind == enums.ObjectType.OBJECT_AGGREGATE:
        yield (
            f"{'replaces' if node.replace else 'creates'} aggregate {qualified_name(node.defnames)}: its state "
            "functions run on the environment whenever a query calls it"
        )
