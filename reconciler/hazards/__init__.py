"""The hazard engine: parse every statement with pglast and run the registered checks on it.

Importing this package registers every check family:

=========  =================  ===========================================================================
family     module             what
=========  =================  ===========================================================================
DS1xx      destructive        data lost: drops, truncation, narrowing or lossy type changes
LK1xx      locks              strong locks held long, or table rewrites, on large tables
MF1xx      data               statements that fail depending on the rows in the table
AZ1xx      authz              row-level security, policies, privileges, ownership
RC1xx      recreate           objects dropped and recreated (no data lost; dependants named)
EX1xx      extensions         extensions installed, updated, moved
RN1xx      renames            a drop plus an add that look like a rename
CX1xx      code               code executed or changed: functions, triggers, queries, user functions on rows
PR1xx      protection         protections removed: constraints, unique indexes, triggers, NOT NULL ...
UP001      engine             a statement that does not parse
UC101      engine, shapes     a statement shape no check judges and the allow-list does not hold (default deny)
=========  =================  ===========================================================================

Modules, each importing only those above it: ``names`` and ``types`` (pglast helpers), ``plan`` (plan-wide
lookups), ``context`` (parsed statements, the plan context, table sizes, step timeouts), ``registry`` (checks and
their codes), ``online`` (the steps that run each statement, online-safe forms included), the check families,
and ``engine`` (:func:`examine`: parse, online pass, checks).

Public surface: :func:`examine` (hazards, figures and steps per statement), :func:`affected_relations` (what to
read figures for), :func:`parse_plan`, :func:`known_codes`, :data:`REGISTRY`, :class:`StepTimeouts`.
"""

from __future__ import annotations

from ..model import TableStats
from .context import LargeTable, ParsedStatement, PlanContext, StepTimeouts
from .engine import (
    Examined,
    affected_relations,
    changed_functions,
    examine,
    known_codes,
    parse_plan,
    recreate_pairs,
)
from .registry import REGISTRY, Check

__all__ = [
    "REGISTRY",
    "Check",
    "Examined",
    "LargeTable",
    "ParsedStatement",
    "PlanContext",
    "StepTimeouts",
    "TableStats",
    "affected_relations",
    "changed_functions",
    "examine",
    "known_codes",
    "parse_plan",
    "recreate_pairs",
]
