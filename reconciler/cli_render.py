"""How the command line shows results: one seam (:func:`render`) turns a command's outcome into text or JSON.

Text is for people and goes to a terminal, so every text rendering escapes terminal control characters (ESC,
CSI and the other C0 and C1 controls, DEL; newline and tab stay) in what it shows: SQL, names, messages and
reasons come from desired-state files, environments and the store, none of which may move a cursor or rewrite
a line on the operator's screen. JSON escapes them by itself.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Generic, Literal, Protocol, TypeVar

from .check import CheckReport
from .docs import DocsOutcome, cell
from .hazards.registry import human_bytes
from .migration import MigrationFile
from .model import Plan, PlanStatus, Statement, statement_phases, transaction_units
from .policytests import PolicyReport
from .store import AuditRecord, PlanRecord

T = TypeVar("T")
Format = Literal["text", "json", "markdown"]  # markdown: a command's text rendering in Markdown (check)

# C0 controls except tab (\x09) and newline (\x0a), DEL, and C1 controls (CSI is \x9b).
_CONTROLS = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")
# The same plus newline: for what must stay on one line.
_CONTROLS_AND_NEWLINE = re.compile("[\x00-\x08\x0a-\x1f\x7f-\x9f]")


def _escaped(match: re.Match[str]) -> str:
    return f"\\x{ord(match.group()):02x}"


def escape_controls(text: str) -> str:
    """``text`` with each terminal control character shown as ``\\xNN``; newlines and tabs stay."""
    return _CONTROLS.sub(_escaped, text)


def one_line(text: str) -> str:
    """``text`` on one line: like :func:`escape_controls`, and newlines are shown as ``\\x0a`` too."""
    return _CONTROLS_AND_NEWLINE.sub(_escaped, text)


def _text(lines: Sequence[str]) -> str:
    """The one exit of every text rendering: join the lines and escape what came from outside."""
    return escape_controls("\n".join(lines))


@dataclass(frozen=True)
class Outcome(Generic[T]):
    """What a command returns: the library's answer, how to show it as JSON data and as text, and the exit code.

    A command that prints for itself (``demo``, ``run``) has neither rendering.
    """

    value: T
    to_json: Callable[[T], object] | None = None
    to_text: Callable[[T], str] | None = None
    code: int = 0


def render(outcome: Outcome[Any], fmt: Format) -> str | None:
    """The outcome as the user asked for it (None: nothing to print)."""
    if fmt == "json":
        return None if outcome.to_json is None else json.dumps(outcome.to_json(outcome.value), indent=2, default=str)
    return None if outcome.to_text is None else outcome.to_text(outcome.value)


class _Waited(Protocol):
    @property
    def waited(self) -> timedelta: ...
    @property
    def backoff(self) -> timedelta: ...


class ApplyFacts(Protocol):
    """What :func:`render_apply` shows of an apply's result."""

    @property
    def environment(self) -> str: ...
    @property
    def desired_revision(self) -> str: ...
    @property
    def messages(self) -> Sequence[str]: ...
    @property
    def applied(self) -> Sequence[str]: ...
    @property
    def lock_waits(self) -> Sequence[_Waited]: ...
    @property
    def queued_plan_id(self) -> int | None: ...
    @property
    def in_sync(self) -> bool: ...


class Verdict(Protocol):
    """What :func:`render_verification` shows of an audit chain check."""

    @property
    def ok(self) -> bool: ...
    @property
    def message(self) -> str: ...


def _units(statements: Sequence[Statement]) -> str:
    """``1: statements 1-3; 2: statement 4 ...``: which statements each unit runs (plan JSON: ``units``)."""
    members: dict[int, list[int]] = {}
    for i, units in enumerate(transaction_units(statements), 1):
        for u in units:
            members.setdefault(u, []).append(i)
    return "; ".join(
        f"{u}: statement{'s' if len(m) > 1 else ''} {m[0]}{'-' + str(m[-1]) if len(m) > 1 else ''}"
        for u, m in members.items()
    )


def render_plan(plan: Plan) -> str:
    if plan.in_sync:
        return _text([f"environment {plan.environment}: in sync with desired revision {plan.desired_revision[:12]}"])
    lines = [
        f"environment {plan.environment}: {len(plan.statements)} statement(s) to reach desired revision "
        f"{plan.desired_revision[:12]}",
        "",
    ]
    lines.insert(1, f"units, in plan order (each one transaction, or one step alone): {_units(plan.statements)}")
    after = [str(i) for i, p in enumerate(statement_phases(plan.statements), 1) if p == "after"]
    if after:
        lines.insert(2, f"non-transactional phase, after every transactional unit: statement(s) {', '.join(after)}")
    if not plan.statements:
        lines[0] = f"environment {plan.environment}: not in sync with desired revision {plan.desired_revision[:12]}"
    for i, s in enumerate(plan.statements, 1):
        mark = "DESTRUCTIVE" if s.destructive else "safe"
        lines.append(f"{i:3}. [{mark}] [{s.decision.value}] {s.sql};")
        for name, st in s.tables.items():
            rows = "rows unknown (never analyzed)" if st.rows is None else f"~{st.rows:,} rows"
            lines.append(f"       table {name}: {rows}, {human_bytes(st.bytes)}")
        for h in s.hazards:
            lines.append(f"       {h.code} {h.kind.value} {h.severity.value}: {h.message}")
        if s.rewritten:
            lines.append("       runs as:")
            for e in s.steps:
                where = "in the transaction" if e.transactional else "alone, outside a transaction"
                lines.append(f"         {e.sql}; ({where})")
    lines += _drift_lines(plan)
    return _text(lines)


def _drift_lines(plan: Plan) -> list[str]:
    """The differences the plan leaves (unmanaged drift), one per object."""
    if not plan.unmanaged_drift:
        return []
    lines = ["", f"unmanaged drift: {len(plan.unmanaged_drift)} difference(s) the plan does not resolve"]
    lines += [f"  - {d.kind} {d.object}: {d.detail}" for d in plan.unmanaged_drift]
    return lines


def render_apply(r: ApplyFacts) -> str:
    lines = [f"environment {r.environment}: desired revision {r.desired_revision[:12]}"]
    for m in r.messages:
        lines.append(f"  note: {m}")
    if r.applied:
        lines.append(f"  applied {len(r.applied)} statement(s):")
        lines += [f"    {sql};" for sql in r.applied]
    else:
        lines.append("  applied nothing")
    if r.lock_waits:
        waited = sum(w.waited.total_seconds() + w.backoff.total_seconds() for w in r.lock_waits)
        lines.append(
            f"  {len(r.lock_waits)} attempt(s) gave up waiting for a lock after lock_timeout and were retried "
            f"({waited:.1f}s waiting and backing off)"
        )
    if r.queued_plan_id is not None:
        lines.append(
            f"  queued plan {r.queued_plan_id} awaits approval: reconciler approve {r.queued_plan_id} --by NAME"
        )
    lines.append("  in sync" if r.in_sync else "  not in sync yet")
    return _text(lines)


def _stored_statement_line(s: Statement) -> str:
    """One statement of a stored plan."""
    codes = ",".join(s.hazard_codes)
    return f"  - {'DESTRUCTIVE' if s.destructive else 'safe'}{' ' + codes if codes else ''}: {s.sql};"


def _plan_record_lines(p: PlanRecord) -> list[str]:
    who = f" by {p.decided_by}" if p.decided_by else ""
    lines = [
        f"plan {p.id}  {p.environment}  {p.status.value}{who}  revision {p.desired_revision[:12]}  "
        f"created {p.created_at:%Y-%m-%d %H:%M:%S}Z"
    ]
    if p.status is PlanStatus.PENDING and p.approvers:
        lines.append(f"  approved so far by: {', '.join(p.approvers)}")
    if p.reason:
        lines.append(f"  reason: {p.reason}")
    if p.error:
        lines.append(f"  error: {p.error}" + (" (resumable: the next apply resumes it)" if p.resumable else ""))
    if p.completed_steps and p.status is not PlanStatus.APPLIED:
        lines.append(f"  completed statements: {', '.join(str(i + 1) for i in p.completed_steps)}")
    lines += [_stored_statement_line(s) for s in p.statements]
    return lines


def render_plans(records: Sequence[PlanRecord]) -> str:
    if not records:
        return "no plans"
    return _text([line for p in records for line in _plan_record_lines(p)])


def render_approval(p: PlanRecord, by: str, approvals_required: int) -> str:
    """What ``approve`` says: the approval counted so far, or the plan approved and what runs it."""
    if p.status is PlanStatus.PENDING:
        return _text(
            [
                f"approval of plan {p.id} by {by} recorded ({len(p.approvers)} of {approvals_required}); "
                "it needs another approval from someone else"
            ]
        )
    return _text(
        [
            f"plan {p.id} approved by {p.decided_by}; the next `reconciler apply {p.environment}` runs it "
            "if a fresh diff still yields exactly these statements"
        ]
    )


def render_rejection(p: PlanRecord) -> str:
    return _text([f"plan {p.id} rejected by {p.decided_by}: {p.reason}"])


def render_verification(check: Verdict) -> str:
    return _text([f"audit trail {'intact' if check.ok else 'BROKEN'}: {check.message}"])


def _short(value: object, width: int = 100) -> str:
    text = " ".join(str(value).split())
    return text if len(text) <= width else text[: width - 3] + "..."


def render_audit(records: Sequence[AuditRecord]) -> str:
    if not records:
        return "no audit records"
    lines = []
    for r in records:
        head = f"#{r.id}  {r.at:%Y-%m-%d %H:%M:%S}Z  {r.environment or '-'}  {r.event}"
        if r.plan_id is not None:
            head += f"  plan {r.plan_id}"
        if r.actor:
            head += f"  by {r.actor}"
        lines.append(head)
        for k, v in r.payload.items():
            if v not in (None, "", [], {}):
                lines.append(f"    {k}: {_short(v)}")
    return _text(lines)


# -- the schema workflow ----------------------------------------------------------------------------------------
def render_policy_report(report: PolicyReport) -> str:
    lines = [f"policy tests on desired revision {report.revision[:12]}:"]
    shown = ""
    for r in report.results:
        if r.file != shown:
            shown = r.file
            lines.append(f"{r.file}:")
        lines.append(f"  {'PASS' if r.passed else 'FAIL'} {r.name}: {r.message}")
    failed = len(report.failed)
    lines.append(f"{len(report.results) - failed} passed, {failed} failed")
    return _text(lines)


def render_docs(d: DocsOutcome) -> str:
    if not d.current:
        return _text([f"{d.path} is out of date: run `reconciler docs` and commit it"])
    return _text([f"wrote {d.path}" if d.written else f"{d.path} is current"])


def render_migration(m: MigrationFile) -> str:
    concurrent = f", {m.concurrent_steps} concurrent step(s) outside a transaction" if m.concurrent_steps else ""
    return _text([f"wrote {m.path}: {m.statements} statement(s) from {m.source}{concurrent}"])


def render_check(report: CheckReport) -> str:
    lines = []
    for item in report.items:
        lines.append(f"{'ok  ' if item.ok else 'FAIL'} {item.name}: {item.summary}")
        lines += [f"       {d}" for d in item.details]
    lines.append("check passed" if report.ok else "check failed")
    return _text(lines)


def render_check_markdown(report: CheckReport) -> str:
    """A summary for a pull-request comment (table cells escaped like the schema docs)."""
    lines = [
        f"### Schema check: {'passed' if report.ok else 'failed'}",
        "",
        "| check | result | summary |",
        "|---|---|---|",
    ]
    lines += [f"| {cell(i.name)} | {'✅' if i.ok else '❌'} | {cell(i.summary)} |" for i in report.items]
    details = [f"- **{cell(i.name)}**: {cell(d)}" for i in report.items for d in i.details]
    return _text(lines + (["", *details] if details else []))
