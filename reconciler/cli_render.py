"""Text rendering of plans, apply results and plan records for people."""

from __future__ import annotations

from collections.abc import Sequence

from .hazards.registry import human_bytes
from .model import Plan, PlanStatus
from .service import ApplyResult
from .store import AuditRecord, PlanRecord


def render_plan(plan: Plan) -> str:
    if plan.in_sync:
        return f"environment {plan.environment}: in sync with desired revision {plan.desired_revision[:12]}"
    lines = [
        f"environment {plan.environment}: {len(plan.statements)} statement(s) to reach desired revision "
        f"{plan.desired_revision[:12]}",
        "",
    ]
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
    return "\n".join(lines)


def render_apply(r: ApplyResult) -> str:
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
    return "\n".join(lines)


def render_plans(records: Sequence[PlanRecord]) -> str:
    if not records:
        return "no plans"
    lines = []
    for p in records:
        who = f" by {p.decided_by}" if p.decided_by else ""
        lines.append(
            f"plan {p.id}  {p.environment}  {p.status.value}{who}  revision {p.desired_revision[:12]}  "
            f"created {p.created_at:%Y-%m-%d %H:%M:%S}Z"
        )
        if p.status is PlanStatus.PENDING and p.approvers:
            lines.append(f"  approved so far by: {', '.join(p.approvers)}")
        if p.reason:
            lines.append(f"  reason: {p.reason}")
        if p.error:
            lines.append(f"  error: {p.error}" + (" (resumable: the next apply resumes it)" if p.resumable else ""))
        if p.completed_steps and p.status is not PlanStatus.APPLIED:
            lines.append(f"  completed statements: {', '.join(str(i + 1) for i in p.completed_steps)}")
        for s in p.statements:
            codes = ",".join(s.hazard_codes)
            lines.append(f"  - {'DESTRUCTIVE' if s.destructive else 'safe'}{' ' + codes if codes else ''}: {s.sql};")
    return "\n".join(lines)


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
    return "\n".join(lines)
