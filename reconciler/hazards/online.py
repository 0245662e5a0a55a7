"""Online-safe rewrites: how a statement runs on a large table without holding strong locks for long.

A rewrite never changes the plan's identity: the statement keeps migra's SQL (what approvals bind to and what a
re-diff is compared with); only the commands that execute it differ (``Statement.steps``). Every rewrite is
built from the statement's pglast parse tree and deparsed, never by editing SQL text.

On a table above the ``large_table`` threshold (not a partitioned one, where PostgreSQL cannot do these online):

* ``CREATE INDEX`` runs ``CONCURRENTLY``, outside a transaction; writes continue during the build.
* ``DROP INDEX`` runs ``CONCURRENTLY``, outside a transaction.
* ``ADD CONSTRAINT ... CHECK / FOREIGN KEY`` is added ``NOT VALID`` (brief lock) and then validated in a
  transaction of its own (``VALIDATE CONSTRAINT`` takes a lock that lets reads and writes continue).
* ``VALIDATE CONSTRAINT`` (migra writes ``NOT VALID`` + ``VALIDATE``) runs in a transaction of its own, so the
  lock taken by the ``ADD`` is released before the scan.
* ``SET NOT NULL`` is proven first by a ``CHECK (col IS NOT NULL) NOT VALID`` constraint validated on its own;
  ``SET NOT NULL`` then skips its scan and the helper constraint is dropped.

On any table, an INVALID index left by an earlier failed concurrent build under the name of an index to be
built is dropped (``DROP INDEX CONCURRENTLY``) before the build.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

from pglast import ast, enums
from pglast.stream import RawStream

from ..model import ExecStep
from .names import dropped_name, qualified, quote_ident, quote_qualified

if TYPE_CHECKING:
    from .registry import ParsedStatement, PlanContext

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType

# Relation kinds (pg_class.relkind) on which the online forms work.
_ONLINE_KINDS = ("r", "m")


def _deparse(node: Any) -> str:
    return str(RawStream()(node))


def _online(ctx: PlanContext, table: str, index: int) -> bool:
    if not ctx.online_rewrites or ctx.size(table, index) != "large":
        return False
    st = ctx.stats(table)
    return st is not None and st.kind in _ONLINE_KINDS


def _single_cmd(node: Any) -> Any | None:
    cmds: tuple[Any, ...] = tuple(node.cmds or ())
    return cmds[0] if len(cmds) == 1 else None


def rewrite(stmt: ParsedStatement, ctx: PlanContext) -> tuple[tuple[ExecStep, ...], bool]:
    """The steps that execute ``stmt`` (empty: as written), and whether they are an online form of it."""
    node = stmt.node
    if isinstance(node, ast.IndexStmt):
        return _create_index(node, stmt, ctx)
    if isinstance(node, ast.DropStmt):
        return _drop_index(node, stmt, ctx)
    if isinstance(node, ast.AlterTableStmt) and node.objtype == OT.OBJECT_TABLE:
        cmd = _single_cmd(node)
        if cmd is None or not _online(ctx, qualified(node.relation), stmt.index):
            return (), False
        steps: tuple[ExecStep, ...] = ()
        if cmd.subtype == AT.AT_AddConstraint:
            steps = _add_constraint(node, cmd)
        elif cmd.subtype == AT.AT_ValidateConstraint:
            steps = (ExecStep(stmt.sql, transactional=False),)
        elif cmd.subtype == AT.AT_SetNotNull:
            steps = _set_not_null(node, cmd)
        return steps, bool(steps)
    return (), False


def _create_index(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> tuple[tuple[ExecStep, ...], bool]:
    if node.concurrent or node.relation is None:
        return (), False
    table = qualified(node.relation)
    steps: list[ExecStep] = []
    st = ctx.stats(table)
    if node.idxname and st is not None and node.idxname in st.invalid_indexes:
        schema = table.rsplit(".", 1)[0]
        steps.append(
            ExecStep(
                f"DROP INDEX CONCURRENTLY IF EXISTS {quote_ident(schema)}.{quote_ident(node.idxname)}",
                transactional=False,
            )
        )
    if _online(ctx, table, stmt.index):
        online = copy.deepcopy(node)
        online.concurrent = True
        steps.append(ExecStep(_deparse(online), transactional=False))
        return tuple(steps), True
    if steps:
        steps.append(ExecStep(stmt.sql))
    return tuple(steps), False


def _drop_index(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> tuple[tuple[ExecStep, ...], bool]:
    if (
        node.removeType != OT.OBJECT_INDEX
        or node.concurrent
        or len(node.objects or ()) != 1
        or node.behavior == enums.DropBehavior.DROP_CASCADE
    ):
        return (), False
    name = dropped_name(node.objects[0])
    st = ctx.stats(name)  # an index's figures are those of its table
    if not ctx.online_rewrites or st is None or st.kind != "i" or ctx.size(name, stmt.index) != "large":
        return (), False
    online = copy.deepcopy(node)
    online.concurrent = True
    return (ExecStep(_deparse(online), transactional=False),), True


def _add_constraint(node: Any, cmd: Any) -> tuple[ExecStep, ...]:
    con = cmd.def_
    if (
        not isinstance(con, ast.Constraint)
        or con.contype not in (CT.CONSTR_CHECK, CT.CONSTR_FOREIGN)
        or con.skip_validation
        or not con.conname
    ):
        return ()
    added = copy.deepcopy(node)
    added.cmds[0].def_.skip_validation = True
    added.cmds[0].def_.initially_valid = False
    validate = f"ALTER TABLE {quote_qualified(qualified(node.relation))} VALIDATE CONSTRAINT {quote_ident(con.conname)}"
    return (ExecStep(_deparse(added)), ExecStep(validate, transactional=False))


HELPER_PREFIX = "reconciler_nn_proof_"


def helper_constraint(column: str) -> str:
    """The name of the temporary CHECK constraint that proves ``column`` NOT NULL (at most 63 bytes).

    It carries the reconciler's own prefix, so the DROP ... IF EXISTS that clears a failed attempt's leftover
    cannot remove a constraint of the user's.
    """
    name = f"{HELPER_PREFIX}{column}"
    while len(name.encode("utf-8")) > 63:
        column = column[:-1]
        name = f"{HELPER_PREFIX}{column}"
    return name


def _set_not_null(node: Any, cmd: Any) -> tuple[ExecStep, ...]:
    table = quote_qualified(qualified(node.relation))
    col = str(cmd.name)
    proof = quote_ident(helper_constraint(col))
    return (
        ExecStep(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {proof}"),
        ExecStep(f"ALTER TABLE {table} ADD CONSTRAINT {proof} CHECK ({quote_ident(col)} IS NOT NULL) NOT VALID"),
        ExecStep(f"ALTER TABLE {table} VALIDATE CONSTRAINT {proof}", transactional=False),
        ExecStep(f"ALTER TABLE {table} ALTER COLUMN {quote_ident(col)} SET NOT NULL"),
        ExecStep(f"ALTER TABLE {table} DROP CONSTRAINT {proof}"),
    )
