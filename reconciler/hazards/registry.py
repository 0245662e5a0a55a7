"""The hazard registry: each check is a small function with a stable code, registered exactly once.

A check receives one parsed statement and the plan around it and yields messages; each message becomes a
:class:`~reconciler.model.Hazard` carrying the check's code, kind and severity. Codes are a family prefix
plus three digits and are never reused; registering a code twice is an error at import time.

The :class:`PlanContext` is what a check may look at besides its own statement: the other statements (already
parsed, with plan-wide lookups in :mod:`.plan`) and the figures of the environment's tables.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Literal

from ..model import ExecStep, HazardKind, Severity, TableStats

if TYPE_CHECKING:
    from .plan import PlanIndex

__all__ = [
    "REGISTRY",
    "Check",
    "DuplicateCheckError",
    "LargeTable",
    "ParsedStatement",
    "PlanContext",
    "Size",
    "TableStats",
    "check",
    "human_bytes",
]

_CODE = re.compile(r"^[A-Z]{2}\d{3}$")

Size = Literal["empty", "small", "large", "unknown"]


@dataclass(frozen=True)
class LargeTable:
    """When a table counts as large: more than ``bytes`` in total, or more than ``rows`` estimated rows."""

    bytes: int = 100 * 1024 * 1024
    rows: int = 1_000_000


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

    ``table_stats`` maps ``schema.name`` to the environment's figures. A table that is not in it and is not
    created by an earlier statement of the plan has unknown size: checks then assume the worst.
    """

    statements: tuple[ParsedStatement, ...] = ()
    table_stats: Mapping[str, TableStats] = field(default_factory=dict)
    large: LargeTable = field(default_factory=LargeTable)
    online_rewrites: bool = True

    @cached_property
    def plan(self) -> PlanIndex:
        from .plan import PlanIndex

        return PlanIndex.build(self.statements)

    @cached_property
    def _rewrites(self) -> dict[int, tuple[tuple[ExecStep, ...], bool]]:
        from .online import rewrite

        return {s.index: rewrite(s, self) for s in self.statements if s.node is not None}

    def steps(self, stmt: ParsedStatement) -> tuple[ExecStep, ...]:
        """The commands that execute ``stmt`` instead of its SQL (empty: it runs as migra wrote it)."""
        return self._rewrites.get(stmt.index, ((), False))[0]

    def online(self, stmt: ParsedStatement) -> bool:
        """Whether ``stmt`` runs in an online-safe form (CONCURRENTLY, NOT VALID + VALIDATE ...)."""
        return self._rewrites.get(stmt.index, ((), False))[1]

    def stats(self, table: str) -> TableStats | None:
        return self.table_stats.get(table)

    def size(self, table: str, before: int) -> Size:
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

    def has_rows(self, table: str, before: int) -> bool:
        """Whether ``table`` may hold rows when statement ``before`` runs (unknown counts as yes)."""
        return self.size(table, before) != "empty"

    def is_large(self, table: str, before: int) -> bool:
        """Whether ``table`` is above the large-table threshold (unknown counts as yes)."""
        return self.size(table, before) in ("large", "unknown")

    def figures(self, table: str) -> str:
        """``public.t: ~1200 rows, 96 kB`` or ``public.t: size unknown``."""
        st = self.table_stats.get(table)
        if st is None:
            return f"{table}: size unknown"
        rows = "rows unknown (never analyzed)" if st.rows is None else f"~{st.rows:,} rows"
        return f"{table}: {rows}, {human_bytes(st.bytes)}"


CheckFunc = Callable[[Any, ParsedStatement, PlanContext], Iterable[str]]


@dataclass(frozen=True)
class Check:
    code: str
    kind: HazardKind
    severity: Severity
    summary: str
    nodes: tuple[str, ...]
    func: CheckFunc


REGISTRY: dict[str, Check] = {}


class DuplicateCheckError(RuntimeError):
    pass


def check(
    code: str, kind: HazardKind, severity: Severity, summary: str, *, nodes: Iterable[str]
) -> Callable[[CheckFunc], CheckFunc]:
    """Register a check for statements whose parse-tree root is one of ``nodes`` (pglast class names)."""
    if not _CODE.match(code):
        raise ValueError(f"hazard code {code!r} must be two capital letters and three digits")

    def register(func: CheckFunc) -> CheckFunc:
        if code in REGISTRY:
            raise DuplicateCheckError(f"hazard code {code} registered twice ({REGISTRY[code].func.__qualname__})")
        REGISTRY[code] = Check(code, kind, severity, summary, tuple(nodes), func)
        return func

    return register
