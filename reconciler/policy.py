"""Policy: decide, per environment, which statements may run unattended, which wait for approval, which never run.

For each hazard of a statement, the first rule that names it decides, most specific first:

1. its code in ``policy.deny`` / ``policy.require_approval`` / ``policy.auto_apply`` (in that order);
2. its kind in ``policy.deny`` / ``policy.require_approval`` / ``policy.auto_apply`` (in that order);
3. the defaults: DESTRUCTIVE, DATA_DEPENDENT, UNPARSEABLE, UNCLASSIFIED, CODE, PROTECTION and AUTHORIZATION
   need approval everywhere; in an environment marked ``production: true`` so do LOCK and REWRITE (which the checks
   only report on tables above ``large_table``); every other kind runs unattended.

Default deny: DESTRUCTIVE, UNPARSEABLE and UNCLASSIFIED hazards, and every AUTHORIZATION code except those that
tighten security (RLS enabled or forced, privileges revoked), never run unattended, whatever the configuration says
(``auto_apply`` naming one is a configuration error, and this module asks for approval should one slip through).

A statement's decision is the strictest of its hazards' (``denied`` > ``needs_approval`` > ``auto``); a statement
without hazards is ``auto``. ``denied`` means never, even with approval: a plan holding a denied statement can be
queued (so that people see it) but not approved, and an approved plan that now holds one is not run.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .config import EnvironmentConfig
from .hazards.registry import NEVER_UNATTENDED_KINDS, never_unattended
from .model import Decision, Hazard, HazardKind, Statement

# Without configuration, these never run unattended anywhere.
NEEDS_APPROVAL_BY_DEFAULT = frozenset(
    {
        HazardKind.DESTRUCTIVE,
        HazardKind.DATA_DEPENDENT,
        HazardKind.UNPARSEABLE,
        HazardKind.UNCLASSIFIED,
        HazardKind.CODE,
        HazardKind.PROTECTION,
        HazardKind.AUTHORIZATION,
    }
)
# ... nor these security downgrades: row-level security disabled (AZ102) or no longer forced (AZ104), and a
# policy dropped without being recreated (AZ107).
NEEDS_APPROVAL_BY_DEFAULT_CODES = frozenset({"AZ102", "AZ104", "AZ107"})
# ... and in an environment marked `production: true`, these neither (lock hazards on large tables).
NEEDS_APPROVAL_IN_PRODUCTION = frozenset({HazardKind.LOCK, HazardKind.REWRITE})

_RANK = {Decision.AUTO: 0, Decision.NEEDS_APPROVAL: 1, Decision.DENIED: 2}


# Whatever the configuration says, these never run without an approval bound to the plan.
NEVER_UNATTENDED = NEVER_UNATTENDED_KINDS


def decide_hazard(h: Hazard, env: EnvironmentConfig) -> Decision:
    """The decision for one hazard in environment ``env``."""
    d = _configured(h, env)
    if d is Decision.AUTO and never_unattended(h.kind, h.code):
        return Decision.NEEDS_APPROVAL
    return d


def _configured(h: Hazard, env: EnvironmentConfig) -> Decision:
    p = env.policy
    for key in (h.code, h.kind.value):
        if key in p.deny:
            return Decision.DENIED
        if key in p.require_approval:
            return Decision.NEEDS_APPROVAL
        if key in p.auto_apply:
            return Decision.AUTO
    if h.kind in NEEDS_APPROVAL_BY_DEFAULT or h.code in NEEDS_APPROVAL_BY_DEFAULT_CODES:
        return Decision.NEEDS_APPROVAL
    if env.production and h.kind in NEEDS_APPROVAL_IN_PRODUCTION:
        return Decision.NEEDS_APPROVAL
    return Decision.AUTO


def stricter(a: Decision, b: Decision) -> Decision:
    """The stricter of two decisions (``denied`` > ``needs_approval`` > ``auto``)."""
    return a if _RANK[a] >= _RANK[b] else b


def decide(hazards: Iterable[Hazard], env: EnvironmentConfig) -> Decision:
    """The decision for one statement with ``hazards`` in environment ``env``: the strictest of its hazards."""
    out = Decision.AUTO
    for h in hazards:
        d = decide_hazard(h, env)
        if _RANK[d] > _RANK[out]:
            out = d
    return out


def denied(statements: Iterable[Statement]) -> list[Statement]:
    """The statements that policy forbids even with approval."""
    return [s for s in statements if s.decision is Decision.DENIED]


def denial_reason(statements: Iterable[Statement], env: EnvironmentConfig) -> str | None:
    """Why a plan may not be approved or run: its denied statements and the codes that deny them; None if none."""
    parts: list[str] = []
    for s in denied(statements):
        codes = [h.code for h in s.hazards if decide_hazard(h, env) is Decision.DENIED]
        parts.append(f"{s.sql} ({', '.join(codes)})")
    if not parts:
        return None
    return "the environment's policy denies, even with approval: " + "; ".join(parts)


def denied_in_record(statements: Iterable[Mapping[str, Any]]) -> list[str]:
    """The SQL of the statements that a stored plan (its JSON statements) marks ``denied``."""
    return [str(s.get("sql")) for s in statements if s.get("decision") == Decision.DENIED.value]
