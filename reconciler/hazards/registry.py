"""The hazard registry: each check is a small function with a stable code, registered exactly once.

A check receives one parsed statement and the plan around it (:class:`~.context.PlanContext`) and yields messages;
each message becomes a :class:`~reconciler.model.Hazard` carrying the check's code, kind and severity. Codes are a
family prefix plus three digits and are never reused; registering a code twice is an error at import time.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from ..model import HazardKind, Severity
from .context import ParsedStatement, PlanContext, human_bytes

__all__ = [
    "REGISTRY",
    "Check",
    "CheckFunc",
    "DuplicateCheckError",
    "Rule",
    "check",
    "check_rules",
    "human_bytes",  # where it was imported from before it moved to .context
    "never_unattended",
    "never_unattended_selector",
]

_CODE = re.compile(r"^[A-Z]{2}\d{3}$")


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


Select = Callable[[Any, ParsedStatement, PlanContext], Iterable[Any]]


@dataclass(frozen=True)
class Rule:
    """A check that is one row of a table: each part of the statement that ``select`` picks is told by ``say``
    (given the statement's node, the part and the plan)."""

    code: str
    severity: Severity
    summary: str
    select: Select
    say: Callable[[Any, Any, PlanContext], str]

    def run(self, node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterable[str]:
        return (self.say(node, part, ctx) for part in self.select(node, stmt, ctx))


def check_rules(kind: HazardKind, nodes: Iterable[str], rules: Iterable[Rule]) -> None:
    """Register each rule of a table as a check of ``kind`` for statements whose root is one of ``nodes``."""
    roots = tuple(nodes)
    for rule in rules:
        check(rule.code, kind, rule.severity, rule.summary, nodes=roots)(rule.run)


# No configuration may run these unattended: data loss, statements that nobody could parse or classify.
NEVER_UNATTENDED_KINDS = frozenset({HazardKind.DESTRUCTIVE, HazardKind.UNPARSEABLE, HazardKind.UNCLASSIFIED})
# The AUTHORIZATION codes a policy may relax: they tighten security (RLS enabled or forced, privileges revoked).
# Every other AUTHORIZATION code is a downgrade or may be one, and always waits for a person.
RELAXABLE_AUTHORIZATION = frozenset({"AZ101", "AZ103", "AZ109"})


def never_unattended(kind: HazardKind, code: str) -> bool:
    """Whether a hazard needs an approval whatever the configuration says."""
    if kind in NEVER_UNATTENDED_KINDS:
        return True
    return kind is HazardKind.AUTHORIZATION and code not in RELAXABLE_AUTHORIZATION


def never_unattended_selector(selector: str) -> bool:
    """Whether ``selector`` (a kind or a code, as in ``policy.auto_apply``) names hazards that can never run
    unattended. The kind AUTHORIZATION may be named: it then relaxes only the codes that tighten security."""
    if selector in NEVER_UNATTENDED_KINDS:
        return True
    chk = REGISTRY.get(selector)
    return chk is not None and never_unattended(chk.kind, chk.code)
