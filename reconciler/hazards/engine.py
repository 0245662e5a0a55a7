"""The hazard engine: parse every statement with pglast, run the online pass, then the registered checks.

Importing this module registers every check family (see the package's docstring).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums, parser
from pglast.visitors import Visitor

from ..model import ExecStep, Hazard, HazardKind, QualifiedName, Severity, TableStats
from . import (  # noqa: F401 - registers the checks
    authz,
    code,
    data,
    destructive,
    extensions,
    locks,
    protection,
    recreate,
    renames,
)
from .context import LargeTable, ParsedStatement, PlanContext, StepTimeouts
from .names import UNKNOWN, dropped_key, qualified, qualified_child, qualified_name, strings
from .online import online_pass
from .plan import PlanIndex
from .registry import REGISTRY, Check, check
from .shapes import unclassified

OT = enums.ObjectType


@check("UP001", HazardKind.UNPARSEABLE, Severity.DANGER, "statement could not be parsed", nodes=())
def _unparseable(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield "statement could not be parsed; treated as needing approval"  # raised by examine(), never by a node


@check("UC101", HazardKind.UNCLASSIFIED, Severity.DANGER, "statement type not classified", nodes=())
def _unclassified(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for shape in unclassified(node):  # raised by hazards_of() for every node type, never through ``nodes``
        yield f"no check understands {shape}: it never runs unattended"


UNPARSEABLE = Hazard(
    code="UP001",
    kind=HazardKind.UNPARSEABLE,
    severity=Severity.DANGER,
    message="statement could not be parsed; treated as needing approval",
)


@dataclass(frozen=True)
class Examined:
    """What the engine found for one statement: hazards, figures of the tables it touches, the steps that run it.

    ``steps`` is never empty: the statement as written, or its online-safe form, each step with its timeouts.
    ``tables`` is keyed by the text of each table's :class:`~reconciler.model.QualifiedName` (what plans store).
    """

    sql: str
    hazards: tuple[Hazard, ...]
    tables: Mapping[str, TableStats] = field(default_factory=dict)
    steps: tuple[ExecStep, ...] = ()


def known_codes() -> dict[str, Check]:
    """Every registered hazard code and its check, in code order."""
    return dict(sorted(REGISTRY.items()))


def parse_plan(sqls: Sequence[str]) -> tuple[ParsedStatement, ...]:
    out: list[ParsedStatement] = []
    for i, sql in enumerate(sqls):
        try:
            raw = parser.parse_sql(sql)
            node = raw[0].stmt if len(raw) == 1 else None
            err = None if len(raw) == 1 else f"expected one statement, found {len(raw)}"
        except parser.ParseError as exc:
            node, err = None, str(exc)
        out.append(ParsedStatement(index=i, sql=sql, node=node, parse_error=err))
    return tuple(out)


_CHILD_DROPS = (OT.OBJECT_TRIGGER, OT.OBJECT_POLICY, OT.OBJECT_RULE)
_RELATION_DROPS = (
    OT.OBJECT_TABLE,
    OT.OBJECT_VIEW,
    OT.OBJECT_MATVIEW,
    OT.OBJECT_INDEX,
    OT.OBJECT_SEQUENCE,
    OT.OBJECT_FOREIGN_TABLE,
)


class _Targets(Visitor):
    """The relations a statement touches: RangeVars anywhere, plus the names that drops and triggers carry."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[QualifiedName] = []

    def visit_RangeVar(self, ancestors: Any, node: Any) -> None:
        self.names.append(qualified(node))


def statement_relations(stmt: ParsedStatement) -> list[QualifiedName]:
    """(schema, name) of every relation (or index) ``stmt`` refers to, in order of appearance, no repeats."""
    node = stmt.node
    if node is None:
        return []
    v = _Targets()
    v(node)
    names = v.names
    if isinstance(node, ast.DropStmt):
        for obj in node.objects or ():
            if node.removeType in _CHILD_DROPS:
                names.append(qualified_child(obj)[0])
            elif node.removeType in _RELATION_DROPS and (key := dropped_key(obj)) is not None:
                names.append(key)
    return list(dict.fromkeys(n for n in names if n != UNKNOWN))


def recreate_pairs(sqls: Sequence[str]) -> list[tuple[int, int]]:
    """(drop, re-create) positions of the objects a plan drops and creates again; each pair runs in one
    transaction and under one decision."""
    parsed = parse_plan(sqls)
    return PlanIndex.build((s.index, s.node) for s in parsed).pairs()


def changed_functions(parsed: Iterable[ParsedStatement]) -> list[QualifiedName]:
    """(schema, name) of every function or procedure the plan creates or replaces: what to look up users of."""
    out: dict[QualifiedName, None] = {}
    for stmt in parsed:
        if isinstance(stmt.node, ast.CreateFunctionStmt) and strings(stmt.node.funcname):
            out[qualified_name(stmt.node.funcname)] = None
    return list(out)


def affected_relations(parsed: Iterable[ParsedStatement]) -> list[QualifiedName]:
    """Every relation a plan refers to: what to read figures for, with one catalog query."""
    out: dict[QualifiedName, None] = {}
    for stmt in parsed:
        out.update(dict.fromkeys(statement_relations(stmt)))
    return list(out)


def hazards_of(stmt: ParsedStatement, ctx: PlanContext) -> tuple[Hazard, ...]:
    """The hazards the registered checks find on one statement (UP001 when it did not parse; UC101 for each of
    its shapes that no check understands and the allow-list does not hold: default deny)."""
    if stmt.node is None:
        return (UNPARSEABLE,)
    name = type(stmt.node).__name__
    found: list[Hazard] = []
    for chk in REGISTRY.values():
        if name in chk.nodes or chk.code == "UC101":
            found.extend(Hazard(chk.code, chk.kind, chk.severity, msg) for msg in chk.func(stmt.node, stmt, ctx))
    return tuple(found)


def examine(
    sqls: Sequence[str],
    table_stats: Mapping[QualifiedName, TableStats] | None = None,
    *,
    timeouts: StepTimeouts,
    large: LargeTable | None = None,
    online_rewrites: bool = True,
    production: bool = False,
    builtin_functions: frozenset[str] | None = None,
    function_users: Mapping[QualifiedName, tuple[str, ...]] | None = None,
) -> list[Examined]:
    """Hazards, figures and steps of each statement of a plan, in plan order.

    ``production`` builds indexes on tables with rows CONCURRENTLY; ``builtin_functions`` (the names in the
    environment's ``pg_catalog``) and ``function_users`` (policies and triggers using each function) come from the
    environment's catalog. Every statement gets its steps, each carrying explicit ``timeouts`` (a concurrent index build, drop or
    reindex the larger of ``statement`` and ``concurrent_statement``); the executor runs them as given.
    """
    parsed = parse_plan(sqls)
    stats = dict(table_stats or {})
    ctx = dataclasses.replace(
        PlanContext.build(parsed, stats, large or LargeTable(), online_rewrites=online_rewrites),
        production=production,
        builtin_functions=builtin_functions,
        function_users=dict(function_users or {}),
    )
    executions = online_pass(ctx, timeouts)
    ctx = dataclasses.replace(ctx, online_indexes=frozenset(i for i, e in executions.items() if e.online))
    return [
        Examined(
            stmt.sql,
            hazards_of(stmt, ctx),
            {str(t): stats[t] for t in statement_relations(stmt) if t in stats},
            executions[stmt.index].steps,
        )
        for stmt in parsed
    ]
