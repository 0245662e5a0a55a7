"""PR1xx: statements that remove a protection: constraints, unique indexes, triggers, rules, functions and views
that guard data, NOT NULL, identity, partition and inheritance links.

No row is lost when these run, but the environment stops refusing bad data (duplicates, orphans, NULLs), stops
running the code that audits or restricts writes, or stops routing rows. Each needs a person by default. This stops
a desired-state author from quietly disarming the environment before a later, innocent-looking change.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import enums

from ..model import HazardKind, Severity
from .context import ParsedStatement, PlanContext
from .names import alter_commands, dropped_key, dropped_name, object_name, qualified_child, relname, strings
from .registry import Rule, Select, check, check_rules

AT = enums.AlterTableType
OT = enums.ObjectType


@check("PR101", HazardKind.PROTECTION, Severity.WARNING, "constraint dropped", nodes=["AlterTableStmt"])
def constraint_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for cmd in alter_commands(node, AT.AT_DropConstraint):
        yield (
            f"drops constraint {cmd.name} of {relname(node.relation)} (primary key, unique, foreign key or check): "
            "rows it would refuse are accepted until it is added again"
        )


@check("PR102", HazardKind.PROTECTION, Severity.WARNING, "unique index dropped", nodes=["DropStmt"])
def unique_index_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if node.removeType != OT.OBJECT_INDEX:
        return
    for obj in node.objects or ():
        key = dropped_key(obj)
        st = ctx.stats(key) if key is not None else None
        if st is None or st.unique_index is None:
            yield f"drops index {object_name(obj)}, which may be unique (not known): duplicates are accepted"
        elif st.unique_index:
            yield f"drops unique index {object_name(obj)}: duplicates are accepted"


def _dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext, kinds: tuple[Any, ...], kind: str) -> Iterator[str]:
    """Names of the objects of ``kinds`` that ``node`` drops and the plan does not create again."""
    if node.removeType not in kinds:
        return
    for obj in node.objects or ():
        name = dropped_name(obj)
        if ctx.plan.recreated_after(kind, name, stmt.index) is None:
            yield object_name(obj)


@check("PR103", HazardKind.PROTECTION, Severity.WARNING, "trigger dropped", nodes=["DropStmt"])
def trigger_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, name in ctx.plan.children_dropped_for_good(node, "trigger", stmt.index):
        yield f"drops trigger {name} on {table}: what it checked, audited or refused on writes stops"


@check("PR104", HazardKind.PROTECTION, Severity.WARNING, "function or procedure dropped", nodes=["DropStmt"])
def function_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    kinds = (OT.OBJECT_FUNCTION, OT.OBJECT_PROCEDURE, OT.OBJECT_ROUTINE)
    for name in _dropped(node, stmt, ctx, kinds, "function"):
        yield f"drops function {name}: callers fail, and checks that relied on it go"


@check("PR105", HazardKind.PROTECTION, Severity.WARNING, "view dropped", nodes=["DropStmt"])
def view_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for name in _dropped(node, stmt, ctx, (OT.OBJECT_VIEW,), "view"):
        yield f"drops view {name}: readers that only had access through it lose it, queries on it fail"


def _alter(*subtypes: Any) -> Select:
    return lambda node, stmt, ctx: alter_commands(node, *subtypes)


check_rules(
    HazardKind.PROTECTION,
    ["AlterTableStmt"],
    [
        Rule(
            "PR106",
            Severity.WARNING,
            "NOT NULL dropped",
            _alter(AT.AT_DropNotNull),
            lambda node, cmd, ctx: f"drops NOT NULL of {relname(node.relation)}.{cmd.name}: NULLs are accepted",
        ),
        Rule(
            "PR107",
            Severity.WARNING,
            "identity dropped",
            _alter(AT.AT_DropIdentity),
            lambda node, cmd, ctx: (
                f"drops the identity of {relname(node.relation)}.{cmd.name}: new rows no longer get values, its "
                "sequence goes"
            ),
        ),
        Rule(
            "PR108",
            Severity.WARNING,
            "partition detached",
            _alter(AT.AT_DetachPartition, AT.AT_DetachPartitionFinalize),
            lambda node, cmd, ctx: (
                f"detaches a partition of {relname(node.relation)}: its rows vanish from the parent table"
            ),
        ),
        Rule(
            "PR109",
            Severity.WARNING,
            "inheritance removed",
            _alter(AT.AT_DropInherit, AT.AT_DropOf),
            lambda node, cmd, ctx: (
                f"removes {relname(node.relation)} from its parent (NO INHERIT / NOT OF): its rows vanish from the "
                "parent"
            ),
        ),
    ],
)


@check("PR110", HazardKind.PROTECTION, Severity.WARNING, "trigger or rule disabled or dropped",
       nodes=["AlterTableStmt", "DropStmt"])  # fmt: skip
def trigger_disabled(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if hasattr(node, "removeType"):
        if node.removeType == OT.OBJECT_RULE:
            for obj in node.objects or ():
                table, name = qualified_child(obj)
                yield f"drops rule {name} on {table}: the rewriting it did on queries stops"
        return
    disabling = (AT.AT_DisableTrig, AT.AT_DisableTrigAll, AT.AT_DisableTrigUser, AT.AT_DisableRule)
    for cmd in alter_commands(node, *disabling):
        yield f"disables {cmd.name or 'every trigger'} on {relname(node.relation)}: writes skip it"


@check(
    "PR111", HazardKind.PROTECTION, Severity.WARNING, "domain constraint or NOT NULL dropped", nodes=["AlterDomainStmt"]
)
def domain_constraint_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    name = ".".join(strings(node.typeName))
    if node.subtype == "X":
        yield f"drops constraint {node.name} of domain {name}: columns of that domain accept values it refused"
    elif node.subtype == "N":
        yield f"drops NOT NULL of domain {name}: columns of that domain accept NULLs"


@check("PR112", HazardKind.PROTECTION, Severity.WARNING, "aggregate dropped", nodes=["DropStmt"])
def aggregate_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if node.removeType == OT.OBJECT_AGGREGATE:
        for obj in node.objects or ():
            yield f"drops aggregate {object_name(obj)}: queries that call it start failing"
