"""Text rendering of plans, apply results and plan records for people."""

from __future__ import annotations

from collections.abc import Sequence

from .model import Plan
from .service import ApplyResult
from .store import PlanRecord


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
        for h in s.hazards:
            lines.append(f"       {h.code} {h.kind.value} {h.severity.value}: {h.message}")
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
        if p.reason:
            lines.append(f"  reason: {p.reason}")
        if p.error:
            lines.append(f"  error: {p.error}")
        for s in p.statements:
            codes = ",".join(s.get("hazards", []))
            lines.append(
                f"  - {'DESTRUCTIVE' if s.get('destructive') else 'safe'}{' ' + codes if codes else ''}: {s['sql']};"
            )
    return "\n".join(lines)
