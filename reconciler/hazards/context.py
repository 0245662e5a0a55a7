"""The plain values the hazard engine passes around: parsed statements, the plan around them, table figures.

The :class:`PlanContext` is what a check may look at besides its own statement: the other statements (already
parsed, with plan-wide lookups in :class:`~.plan.PlanIndex`), the figures of the environment's tables, and which
statements the online pass runs in an online-safe form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal, Protocol

from ..model import QualifiedName, TableStats
from .plan import PlanIndex

__all__ = [
    "KNOWN_BUILTINS",
    "LargeTable",
    "ParsedStatement",
    "PlanContext",
    "Size",
    "StepTimeouts",
    "human_bytes",
]

Size = Literal["empty", "small", "large", "unknown"]

# Functions of pg_catalog that defaults and checks commonly call; without a catalog lookup, an unqualified call of any
# other function counts as user code.
KNOWN_BUILTINS = frozenset(
    {
        "now", "current_timestamp", "statement_timestamp", "transaction_timestamp", "clock_timestamp",
        "current_date", "localtimestamp", "timezone", "date_trunc", "lower", "upper", "length", "char_length",
        "btrim", "trim", "substring", "coalesce", "nullif", "concat", "abs", "round", "floor", "ceil", "to_jsonb",
        "jsonb_build_object", "json_build_object", "jsonb_build_array", "array_fill", "array_length",
        "cardinality", "make_interval", "make_date", "to_timestamp", "to_char", "md5", "int4range", "int8range",
        "tstzrange", "daterange", "numrange", "nextval", "gen_random_uuid", "random",
        "greatest", "least", "regexp_replace", "position", "starts_with", "left", "right", "replace",
    }
)  # fmt: skip


@dataclass(frozen=True)
class LargeTable:
    """When a table counts as large: more than ``bytes`` in total, or more than ``rows`` estimated rows."""

    bytes: int = 100 * 1024 * 1024
    rows: int = 1_000_000


class _HasTimeouts(Protocol):
    @property
    def statement_timeout(self) -> timedelta: ...
    @property
    def concurrent_statement_timeout(self) -> timedelta: ...
    @property
    def lock_timeout(self) -> timedelta: ...


@dataclass(frozen=True)
class StepTimeouts:
    """The timeouts an environment's steps run with: ``statement`` for every command, ``concurrent_statement`` for
    a concurrent index build, drop or reindex (it gets the larger of the two), ``lock`` for all of them."""

    statement: timedelta
    concurrent_statement: timedelta
    lock: timedelta

    @classmethod
    def for_env(cls, env: _HasTimeouts) -> StepTimeouts:
        """The timeouts of an environment's configuration."""
        return cls(env.statement_timeout, env.concurrent_statement_timeout, env.lock_timeout)

    def statement_for(self, *, concurrent: bool) -> timedelta:
        return max(self.statement, self.concurrent_statement) if concurrent else self.statement


@dataclass(frozen=True)
class ParsedStatement:
    """One statement of a plan: its SQL, position, and pglast parse tree (None if it did not parse)."""

    index: int
    sql: str
    node: Any | None
    parse_error: str | None = None


def human_bytes(n: int) -> str:
    """``pg_size_pretty``-style sizes: bytes, kB, MB, GB, TB (powers of 1024)."""
    if n < 10 * 1024:
        return f"{n} bytes"
    value = n / 1024
    for unit in ("kB", "MB", "GB"):
        if value < 10 * 1024:
            return f"{round(value)} {unit}"
        value /= 1024
    return f"{round(value)} TB"


@dataclass(frozen=True)
class PlanContext:
    """What a check may look at besides its own statement.

    ``table_stats`` maps (schema, name) to the environment's figures. A table that is not in it and is not
    created by an earlier statement of the plan has unknown size: checks then assume the worst. ``online_indexes``
    are the positions of the statements that the online pass runs in an online-safe form.
    """

    statements: tuple[ParsedStatement, ...] = ()
    table_stats: Mapping[QualifiedName, TableStats] = field(default_factory=dict)
    large: LargeTable = field(default_factory=LargeTable)
    online_rewrites: bool = True
    plan: PlanIndex = field(default_factory=PlanIndex)
    online_indexes: frozenset[int] = frozenset()
    # Names of the functions in pg_catalog (unqualified calls of these are built-in); None: only the well-known
    # ones in :data:`KNOWN_BUILTINS` count.
    builtin_functions: frozenset[str] | None = None
    # (schema, function) -> what in the environment uses it: policies and triggers (read from pg_depend).
    function_users: Mapping[QualifiedName, tuple[str, ...]] = field(default_factory=dict)
    production: bool = False  # the environment is marked production: index builds on tables with rows go online

    @classmethod
    def build(
        cls,
        statements: Sequence[ParsedStatement],
        table_stats: Mapping[QualifiedName, TableStats],
        large: LargeTable,
        *,
        online_rewrites: bool = True,
    ) -> PlanContext:
        """The context of a plan, with its plan-wide lookups built once."""
        plan = PlanIndex.build((s.index, s.node) for s in statements)
        return cls(tuple(statements), table_stats, large, online_rewrites, plan)

    def online(self, stmt: ParsedStatement) -> bool:
        """Whether ``stmt`` runs in an online-safe form (CONCURRENTLY, NOT VALID + VALIDATE ...)."""
        return stmt.index in self.online_indexes

    def stats(self, table: QualifiedName) -> TableStats | None:
        return self.table_stats.get(table)

    def size(self, table: QualifiedName, before: int) -> Size:
        """How big ``table`` is when statement ``before`` runs."""
        if self.plan.created_before(table, before):
            return "empty"
        st = self.table_stats.get(table)
        if st is None:
            return "unknown"
        if st.empty:
            return "empty"
        if st.bytes > self.large.bytes or (st.rows is not None and st.rows > self.large.rows):
            return "large"
        return "small"

    def has_rows(self, table: QualifiedName, before: int) -> bool:
        """Whether ``table`` may hold rows when statement ``before`` runs (unknown counts as yes)."""
        return self.size(table, before) != "empty"

    def is_large(self, table: QualifiedName, before: int) -> bool:
        """Whether ``table`` is above the large-table threshold (unknown counts as yes)."""
        return self.size(table, before) in ("large", "unknown")

    def figures(self, table: QualifiedName) -> str:
        """``public.t: ~1200 rows, 96 kB`` or ``public.t: size unknown``."""
        st = self.table_stats.get(table)
        if st is None:
            return f"{table}: size unknown"
        rows = "rows unknown (never analyzed)" if st.rows is None else f"~{st.rows:,} rows"
        return f"{table}: {rows}, {human_bytes(st.bytes)}"
