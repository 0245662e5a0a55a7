"""Online-safe rewrites: how a statement runs on a large table without holding strong locks for long.

A rewrite never changes the plan's identity: the statement keeps migra's SQL (what approvals bind to and what a
re-diff is compared with); only the commands that execute it differ (``Statement.steps``). Every rewrite is
built from the statement's pglast parse tree and deparsed, never by editing SQL text.

On a table above the ``large_table`` threshold (not a partitioned one, where PostgreSQL cannot do these online):

* ``CREATE INDEX`` runs ``CONCURRENTLY``, outside a transaction; writes continue during the build.
* ``DROP INDEX`` runs ``CONCURRENTLY``, outside a transaction.

In an environment marked ``production``, ``CREATE INDEX`` on an existing table that holds rows runs
``CONCURRENTLY`` whatever its size. A statement between a drop and the re-create of the same object (a policy, a
trigger, a view, a grant ...) never gets an online form: it stays in their transaction.
* ``ADD CONSTRAINT ... CHECK / FOREIGN KEY`` is added ``NOT VALID`` (brief lock) and then validated in a
  transaction of its own (``VALIDATE CONSTRAINT`` takes a lock that lets reads and writes continue).
* ``VALIDATE CONSTRAINT`` (migra writes ``NOT VALID`` + ``VALIDATE``) runs in a transaction of its own, so the
  lock taken by the ``ADD`` is released before the scan.
* ``SET NOT NULL`` is proven first by a ``CHECK (col IS NOT NULL) NOT VALID`` constraint validated on its own;
  ``SET NOT NULL`` then skips its scan and the helper constraint is dropped.

``ALTER TYPE ... ADD VALUE`` runs alone, committed: a new label cannot be used in the transaction that adds it.

On any table, an INVALID index left by an earlier failed concurrent build under the name of an index to be
built is dropped (``DROP INDEX CONCURRENTLY``) before the build.

Every statement gets its steps here, rewritten or not, each with explicit timeouts (:class:`~.context.StepTimeouts`):
a concurrent index build, drop or reindex runs alone with the larger statement timeout, and names the index a
failed build leaves behind; the executor runs the steps as given.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Any

from pglast import ast, enums
from pglast.stream import RawStream

from ..model import ExecStep, QualifiedName
from .context import ParsedStatement, PlanContext, StepTimeouts
from .names import dropped_key, qualified, quote_ident, quote_qualified

AT = enums.AlterTableType
CT = enums.ConstrType
OT = enums.ObjectType

# Relation kinds (pg_class.relkind) on which the online forms work.
_ONLINE_KINDS = ("r", "m")


@dataclass(frozen=True)
class Execution:
    """The steps that execute one statement, and whether they are an online-safe form of it."""

    steps: tuple[ExecStep, ...]
    online: bool = False


@dataclass(frozen=True)
class _StepBuilder:
    """Builds the steps of one environment: every step carries the timeouts it runs with."""

    timeouts: StepTimeouts

    def run(self, sql: str, *, transactional: bool = True) -> ExecStep:
        return ExecStep(sql, transactional, self.timeouts.statement, self.timeouts.lock)

    def concurrently(self, sql: str, index: str | None = None) -> ExecStep:
        """A concurrent index build (``index`` names it), drop or reindex: alone, with the longer timeout."""
        return ExecStep(sql, False, self.timeouts.statement_for(concurrent=True), self.timeouts.lock, index)


def online_pass(ctx: PlanContext, timeouts: StepTimeouts) -> dict[int, Execution]:
    """The steps of every statement of the plan, by position."""
    make = _StepBuilder(timeouts)
    return {s.index: _execution(s, ctx, make) for s in ctx.statements}


def inside_pair(ctx: PlanContext, index: int) -> bool:
    """Whether statement ``index`` runs between a drop and the re-create of the same object (see
    :meth:`~.plan.PlanIndex.pairs`): it must then stay in their transaction, so it gets no online form."""
    return any(drop < index < again for drop, again in ctx.plan.pairs())


def _execution(stmt: ParsedStatement, ctx: PlanContext, make: _StepBuilder) -> Execution:
    """The steps that execute ``stmt``: an online-safe form where one applies, else the statement as written.

    A statement between a drop and the re-create of the same object gets no online form: a step outside the
    transaction there would commit the drop, and a failure after it would leave the object missing."""
    node = stmt.node
    found: Execution | None = None
    if inside_pair(ctx, stmt.index):
        pass
    elif isinstance(node, ast.IndexStmt):
        found = _create_index(node, stmt, ctx, make)
    elif isinstance(node, ast.DropStmt):
        found = _drop_index(node, stmt, ctx, make)
    elif isinstance(node, ast.AlterTableStmt) and node.objtype == OT.OBJECT_TABLE:
        found = _alter_table(node, stmt, ctx, make)
    return found or Execution((_as_written(stmt, make),))


def _as_written(stmt: ParsedStatement, make: _StepBuilder) -> ExecStep:
    """The step that runs ``stmt`` as written: alone if it is a concurrent index build, drop or reindex."""
    node = stmt.node
    if isinstance(node, ast.IndexStmt | ast.DropStmt) and node.concurrent:
        return make.concurrently(stmt.sql, _index_name(node) if isinstance(node, ast.IndexStmt) else None)
    if isinstance(node, ast.ReindexStmt) and any(
        getattr(p, "defname", None) == "concurrently" for p in node.params or ()
    ):
        return make.concurrently(stmt.sql)
    if isinstance(node, ast.AlterEnumStmt) and node.newVal and not node.oldVal:
        # ADD VALUE: a new label cannot be used before it commits, so it commits alone, before what uses it
        return make.run(stmt.sql, transactional=False)
    return make.run(stmt.sql)


def _index_name(node: Any) -> str | None:
    """The quoted name of the index ``node`` builds, qualified when its table is (None: PostgreSQL names it)."""
    if not node.idxname:
        return None
    schema = node.relation.schemaname if node.relation is not None else None
    return f"{quote_ident(schema)}.{quote_ident(node.idxname)}" if schema else quote_ident(node.idxname)


def _deparse(node: Any) -> str:
    return str(RawStream()(node))


def _online(ctx: PlanContext, table: QualifiedName, index: int) -> bool:
    if not ctx.online_rewrites or ctx.size(table, index) != "large":
        return False
    st = ctx.stats(table)
    return st is not None and st.kind in _ONLINE_KINDS


def _production_index(ctx: PlanContext, table: QualifiedName, index: int) -> bool:
    """In an environment marked ``production``, an index on an existing table that holds rows is built
    CONCURRENTLY whatever its size."""
    if not (ctx.production and ctx.online_rewrites) or ctx.size(table, index) not in ("small", "large"):
        return False
    st = ctx.stats(table)
    return st is not None and st.kind in _ONLINE_KINDS


def _single_cmd(node: Any) -> Any | None:
    cmds: tuple[Any, ...] = tuple(node.cmds or ())
    return cmds[0] if len(cmds) == 1 else None


def _alter_table(node: Any, stmt: ParsedStatement, ctx: PlanContext, make: _StepBuilder) -> Execution | None:
    cmd = _single_cmd(node)
    if cmd is None or not _online(ctx, qualified(node.relation), stmt.index):
        return None
    steps: tuple[ExecStep, ...] = ()
    if cmd.subtype == AT.AT_AddConstraint:
        steps = _add_constraint(node, cmd, make)
    elif cmd.subtype == AT.AT_ValidateConstraint:
        steps = (make.run(stmt.sql, transactional=False),)
    elif cmd.subtype == AT.AT_SetNotNull:
        steps = _set_not_null(node, cmd, make)
    return Execution(steps, online=True) if steps else None


def _create_index(node: Any, stmt: ParsedStatement, ctx: PlanContext, make: _StepBuilder) -> Execution | None:
    if node.concurrent or node.relation is None:
        return None
    table = qualified(node.relation)
    steps: list[ExecStep] = []
    st = ctx.stats(table)
    if node.idxname and st is not None and node.idxname in st.invalid_indexes:
        leftover = f"{quote_ident(table.schema)}.{quote_ident(node.idxname)}"
        steps.append(make.concurrently(f"DROP INDEX CONCURRENTLY IF EXISTS {leftover}"))
    if _online(ctx, table, stmt.index) or _production_index(ctx, table, stmt.index):
        online = copy.deepcopy(node)
        online.concurrent = True
        steps.append(make.concurrently(_deparse(online), _index_name(online)))
        return Execution(tuple(steps), online=True)
    if steps:
        return Execution((*steps, make.run(stmt.sql)))
    return None


def _drop_index(node: Any, stmt: ParsedStatement, ctx: PlanContext, make: _StepBuilder) -> Execution | None:
    if (
        node.removeType != OT.OBJECT_INDEX
        or node.concurrent
        or len(node.objects or ()) != 1
        or node.behavior == enums.DropBehavior.DROP_CASCADE
    ):
        return None
    name = dropped_key(node.objects[0])
    st = ctx.stats(name) if name is not None else None  # an index's figures are those of its table
    if name is None or not ctx.online_rewrites or st is None or st.kind != "i" or ctx.size(name, stmt.index) != "large":
        return None
    online = copy.deepcopy(node)
    online.concurrent = True
    return Execution((make.concurrently(_deparse(online)),), online=True)


def _add_constraint(node: Any, cmd: Any, make: _StepBuilder) -> tuple[ExecStep, ...]:
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
    return (make.run(_deparse(added)), make.run(validate, transactional=False))


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


def _set_not_null(node: Any, cmd: Any, make: _StepBuilder) -> tuple[ExecStep, ...]:
    table = quote_qualified(qualified(node.relation))
    col = str(cmd.name)
    proof = quote_ident(helper_constraint(col))
    return (
        make.run(f"ALTER TABLE {table} DROP CONSTRAINT IF EXISTS {proof}"),
        make.run(f"ALTER TABLE {table} ADD CONSTRAINT {proof} CHECK ({quote_ident(col)} IS NOT NULL) NOT VALID"),
        make.run(f"ALTER TABLE {table} VALIDATE CONSTRAINT {proof}", transactional=False),
        make.run(f"ALTER TABLE {table} ALTER COLUMN {quote_ident(col)} SET NOT NULL"),
        make.run(f"ALTER TABLE {table} DROP CONSTRAINT {proof}"),
    )
