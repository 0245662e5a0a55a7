"""The hazard engine: parse every statement with pglast and run the registered checks on it.

Importing this package registers every check family. Public surface: :func:`analyze`, :data:`REGISTRY`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from pglast import parser

from ..model import Hazard, HazardKind, Severity
from . import destructive  # noqa: F401 - registers the DS1xx checks
from .registry import REGISTRY, Check, ParsedStatement, PlanContext, TableStats

__all__ = ["REGISTRY", "Check", "ParsedStatement", "PlanContext", "TableStats", "analyze", "parse_plan"]

UNPARSEABLE = Hazard(
    code="UP001",
    kind=HazardKind.UNPARSEABLE,
    severity=Severity.DANGER,
    message="statement could not be parsed; treated as needing approval",
)


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


def analyze(sqls: Sequence[str], table_stats: Mapping[str, TableStats] | None = None) -> list[tuple[Hazard, ...]]:
    """The hazards of each statement of a plan, in plan order."""
    parsed = parse_plan(sqls)
    ctx = PlanContext(statements=parsed, table_stats=dict(table_stats or {}))
    result: list[tuple[Hazard, ...]] = []
    for stmt in parsed:
        if stmt.node is None:
            result.append((UNPARSEABLE,))
            continue
        name = type(stmt.node).__name__
        found: list[Hazard] = []
        for chk in REGISTRY.values():
            if name in chk.nodes:
                found.extend(Hazard(chk.code, chk.kind, chk.severity, msg) for msg in chk.func(stmt.node, stmt, ctx))
        result.append(tuple(found))
    return result
