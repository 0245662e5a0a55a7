"""The hazard registry: each check is a small function with a stable code, registered exactly once.

A check receives one parsed statement and the plan around it and yields messages; each message becomes a
:class:`~reconciler.model.Hazard` carrying the check's code, kind and severity. Codes are a family prefix
plus three digits and are never reused; registering a code twice is an error at import time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..model import HazardKind, Severity

_CODE = re.compile(r"^[A-Z]{2}\d{3}$")


@dataclass(frozen=True)
class TableStats:
    """Size figures of one table, read from the environment's catalog."""

    rows: int
    bytes: int


@dataclass(frozen=True)
class ParsedStatement:
    """One statement of a plan: its SQL, position, and pglast parse tree (None if it did not parse)."""

    index: int
    sql: str
    node: Any | None
    parse_error: str | None = None


@dataclass(frozen=True)
class PlanContext:
    """What a check may look at besides its own statement."""

    statements: tuple[ParsedStatement, ...] = ()
    table_stats: Mapping[str, TableStats] = field(default_factory=dict)


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
