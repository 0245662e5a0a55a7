"""Who calls a function, transitively: the call graph of an environment's functions, read from their bodies.

AZ113 asks what a changed function guards: a policy, a trigger or a SECURITY DEFINER function that uses it, also
through other functions (``policy -> auth.is_admin() -> auth.role_of()``), an operator or a cast. A desired-state
author who changes the innermost function changes who may see which rows as surely as by changing the outer one.

Bodies are read with pglast: SQL bodies as SQL, PL/pgSQL bodies with ``parse_plpgsql`` and each embedded
expression as SQL. A body that cannot be read that way (another language, dynamic ``EXECUTE``, a parse error) is
taken to call every function, operator and cast whose name it mentions: the conservative side.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import pglast
from pglast import ast, parser
from pglast.visitors import Visitor

from ..model import QualifiedName

__all__ = ["BodyRefs", "CallGraph", "body_refs"]


@dataclass(frozen=True)
class BodyRefs:
    """What a body refers to: functions ((schema or None, name)), operator names and cast target type names.
    ``opaque``: the body could not be read, so any name it mentions counts."""

    functions: frozenset[tuple[str | None, str]] = frozenset()
    operators: frozenset[str] = frozenset()
    casts: frozenset[str] = frozenset()
    opaque: str | None = None  # the body's lower-case text when it could not be parsed


class _Refs(Visitor):
    def __init__(self) -> None:
        super().__init__()
        self.functions: set[tuple[str | None, str]] = set()
        self.operators: set[str] = set()
        self.casts: set[str] = set()

    def visit_FuncCall(self, ancestors: Any, node: Any) -> None:
        parts = [str(n.sval) for n in node.funcname or () if isinstance(n, ast.String)]
        if parts:
            self.functions.add((parts[-2] if len(parts) > 1 else None, parts[-1]))

    def visit_A_Expr(self, ancestors: Any, node: Any) -> None:
        self.operators.update(str(n.sval) for n in node.name or () if isinstance(n, ast.String))

    def visit_TypeCast(self, ancestors: Any, node: Any) -> None:
        names = [str(n.sval) for n in getattr(node.typeName, "names", None) or () if isinstance(n, ast.String)]
        if names:
            self.casts.add(names[-1])


def _plpgsql_queries(tree: Any) -> Iterator[str]:
    """The SQL of every expression and statement of a parsed PL/pgSQL body."""
    if isinstance(tree, dict):
        for key, value in tree.items():
            if key == "PLpgSQL_expr" and isinstance(value, dict):
                query = str(value.get("query", ""))
                yield query if value.get("parseMode", 0) == 0 else f"SELECT {query}"
            else:
                yield from _plpgsql_queries(value)
    elif isinstance(tree, list):
        for item in tree:
            yield from _plpgsql_queries(item)


def _dynamic(tree: Any) -> bool:
    """Whether a parsed PL/pgSQL body runs SQL built at run time (``EXECUTE``, ``FOR ... IN EXECUTE``)."""
    if isinstance(tree, dict):
        return any(k in ("PLpgSQL_stmt_dynexecute", "PLpgSQL_stmt_dynfors") or _dynamic(v) for k, v in tree.items())
    return isinstance(tree, list) and any(_dynamic(item) for item in tree)


def _dollar_quoted(body: str) -> str:
    tag = "body"
    while f"${tag}$" in body:
        tag += "_"
    return f"${tag}${body}${tag}$"


def _parse_plpgsql(body: str) -> Any | None:
    """The parse tree of a PL/pgSQL body (None if it does not parse); its checks of RETURN depend on the result
    type, so each kind is tried."""
    for result in ("int", "void", "setof int"):
        try:
            return pglast.parse_plpgsql(
                f"create function pg_temp.f() returns {result} language plpgsql as {_dollar_quoted(body)}"
            )
        except parser.ParseError:
            continue
    return None


def _statements(language: str, body: str) -> list[str] | None:
    """The SQL a body runs, or None when it cannot be read (another language, dynamic SQL, no parse)."""
    if language == "sql":
        return [body]
    tree = _parse_plpgsql(body) if language == "plpgsql" else None
    return None if tree is None or _dynamic(tree) else list(_plpgsql_queries(tree))


def body_refs(language: str, body: str) -> BodyRefs:
    """What a function body of ``language`` calls (see the module's notes)."""
    refs = _Refs()
    sqls = _statements(language, body)
    try:
        for sql in sqls or ():
            for raw in parser.parse_sql(sql):
                if raw.stmt is not None:
                    refs(raw.stmt)
    except parser.ParseError:
        sqls = None
    if sqls is None:
        return BodyRefs(opaque=body.lower())
    return BodyRefs(frozenset(refs.functions), frozenset(refs.operators), frozenset(refs.casts))


@dataclass
class CallGraph:
    """An environment's functions (oid -> name, body refs), its user operators and casts (name -> function oids)."""

    names: dict[int, QualifiedName] = field(default_factory=dict)
    bodies: dict[int, BodyRefs] = field(default_factory=dict)
    operators: dict[str, set[int]] = field(default_factory=dict)
    casts: dict[str, set[int]] = field(default_factory=dict)

    def _callees(self, refs: BodyRefs) -> set[int]:
        if refs.opaque is not None:
            text = refs.opaque
            out = {oid for oid, n in self.names.items() if n.name.lower() in text}
            out |= {f for op, fs in self.operators.items() if op in text for f in fs}
            return out | {f for t, fs in self.casts.items() if t.lower() in text for f in fs}
        out = {
            oid
            for oid, n in self.names.items()
            for schema, name in refs.functions
            if n.name == name and schema in (None, n.schema)
        }
        out |= {f for op in refs.operators for f in self.operators.get(op, ())}
        return out | {f for t in refs.casts for f in self.casts.get(t, ())}

    def callers(self, targets: Iterable[int]) -> dict[int, int]:
        """Every function that reaches one of ``targets`` through calls, operators or casts, mapped to the
        function it calls on the way (the targets map to themselves)."""
        calls = {oid: self._callees(refs) for oid, refs in self.bodies.items()}
        via: dict[int, int] = {t: t for t in targets}
        frontier = set(via)
        while frontier:
            frontier = {g for g, callees in calls.items() if g not in via and callees & frontier}
            for g in frontier:
                via[g] = next(iter(calls[g] & set(via)))
        return via

    def oids_of(self, name: QualifiedName) -> set[int]:
        return {oid for oid, n in self.names.items() if n == name}

    def path(self, via: Mapping[int, int], oid: int) -> list[QualifiedName]:
        """The functions from ``oid`` down to the target it reaches."""
        out = [self.names[oid]]
        while via.get(oid, oid) != oid:
            oid = via[oid]
            out.append(self.names[oid])
        return out
