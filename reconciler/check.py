"""``reconciler check``: the CI entry point. One report of everything a schema change must pass.

* the desired state builds in a scratch database;
* the hazards of the plan against each named environment (or an empty database) are decided by the policy: a
  ``denied`` statement fails the check, one that needs approval is listed;
* the RLS policy tests pass;
* the generated docs are current;
* performance: the policy test queries are explained on the desired build and on a base build (``--base``, e.g. the
  main branch's desired-state folder), with the fixtures loaded; a sequential scan where there was an index scan,
  or a total cost grown beyond the factor, fails the check.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .docs import generate_docs, is_current
from .errors import ReconcilerError
from .migration import source_statements
from .model import Decision, DesiredState, Statement
from .policytests import explain_cases, run_policy_tests
from .service import Reconciler
from .sources import load_source

_INDEX_SCANS = {"Index Scan", "Index Only Scan", "Bitmap Heap Scan", "Bitmap Index Scan"}


@dataclass(frozen=True)
class CheckItem:
    name: str
    ok: bool
    summary: str
    details: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {"check": self.name, "ok": self.ok, "summary": self.summary, "details": list(self.details)}


@dataclass(frozen=True)
class CheckReport:
    items: tuple[CheckItem, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(i.ok for i in self.items)

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [i.to_json() for i in self.items]}


def run_check(
    reconciler: Reconciler, environments: Sequence[str], *, base: str | None = None, cost_factor: float = 2.0
) -> CheckReport:
    try:
        desired = reconciler.load_desired()
        reconciler.scratch.build_desired(desired)
    except ReconcilerError as exc:
        return CheckReport((CheckItem("build", False, str(exc)),))
    items = [CheckItem("build", True, f"desired revision {desired.short_revision} builds")]
    targets: list[str | None] = [*environments] or [None]
    items += [_hazards(reconciler, desired, env) for env in targets]
    tests = Path(reconciler.config.policy_tests)
    if tests.exists():
        items.append(_policies(reconciler, desired, tests))
    docs_ok = is_current(reconciler.config.docs, generate_docs(reconciler.scratch, desired))
    items.append(CheckItem("docs", docs_ok, f"{reconciler.config.docs} is {'current' if docs_ok else 'out of date'}"))
    if base is not None and tests.exists():
        items.append(_performance(reconciler, desired, base, tests, cost_factor))
    return CheckReport(tuple(items))


def _hazards(reconciler: Reconciler, desired: DesiredState, env: str | None) -> CheckItem:
    name = f"hazards ({env or 'empty database'})"
    try:
        statements: Sequence[Statement] = (
            reconciler.plan(env, desired).statements if env else source_statements(reconciler.scratch, desired)[1]
        )
    except ReconcilerError as exc:
        return CheckItem(name, False, str(exc))
    denied = [s for s in statements if s.decision is Decision.DENIED]
    waiting = [s for s in statements if s.decision is Decision.NEEDS_APPROVAL]
    details = tuple(
        f"{s.decision.value}: {' '.join(s.sql.split())[:160]} ({', '.join(s.hazard_codes)})" for s in denied + waiting
    )
    summary = f"{len(statements)} statement(s), {len(waiting)} need approval, {len(denied)} denied"
    return CheckItem(name, not denied, summary, details)


def _policies(reconciler: Reconciler, desired: DesiredState, tests: Path) -> CheckItem:
    try:
        report = run_policy_tests(reconciler.scratch, desired, tests)
    except ReconcilerError as exc:
        return CheckItem("policy tests", False, str(exc))
    details = tuple(f"FAIL {r.name}: {r.message}" for r in report.failed)
    return CheckItem(
        "policy tests", report.ok, f"{len(report.results) - len(details)} passed, {len(details)} failed", details
    )


def _performance(reconciler: Reconciler, desired: DesiredState, base: str, tests: Path, factor: float) -> CheckItem:
    try:
        before = explain_cases(reconciler.scratch, load_source(base), tests)
        after = explain_cases(reconciler.scratch, desired, tests)
    except ReconcilerError as exc:
        return CheckItem("performance", False, str(exc))
    details = tuple(
        d for case, plan in after.items() if case in before for d in plan_changes(case, before[case], plan, factor)
    )
    return CheckItem("performance", not details, f"{len(after)} query plan(s) compared with {base}", details)


def _scans(node: dict[str, Any]) -> Iterator[tuple[str, str]]:
    if "Relation Name" in node:
        yield node["Node Type"], f"{node.get('Schema', '')}.{node['Relation Name']}".lstrip(".")
    for child in node.get("Plans", []):
        yield from _scans(child)


def plan_changes(case: str, before: dict[str, Any], after: dict[str, Any], factor: float) -> list[str]:
    """What got worse from ``before`` to ``after``: index scans turned sequential, cost grown beyond ``factor``."""
    indexed = {rel for kind, rel in _scans(before) if kind in _INDEX_SCANS}
    found = [
        f"{case}: sequential scan on {rel}, was an index scan"
        for kind, rel in _scans(after)
        if kind == "Seq Scan" and rel in indexed
    ]
    old, new = float(before.get("Total Cost", 0)), float(after.get("Total Cost", 0))
    if old > 0 and new > old * factor:
        found.append(f"{case}: cost {old:.2f} -> {new:.2f} (more than {factor:g}x)")
    return found
