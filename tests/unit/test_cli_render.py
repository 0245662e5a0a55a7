"""Text renderings escape terminal control characters from SQL, the store and the environment; JSON stays JSON."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from reconciler.cli_render import Outcome, escape_controls, one_line, render, render_audit, render_plan
from reconciler.model import Decision, Hazard, HazardKind, Plan, Severity, Statement
from reconciler.store import AuditRecord

CURSOR_UP_ERASE_LINE = "\x1b[1A\x1b[2K"


def _plan(second_sql: str) -> Plan:
    drop = Statement(
        sql='alter table "public"."users" drop column "legacy_score"',
        hazards=(Hazard("DS103", HazardKind.DESTRUCTIVE, Severity.DANGER, "drops column legacy_score"),),
        decision=Decision.NEEDS_APPROVAL,
    )
    return Plan(environment="dev", desired_revision="a" * 64, statements=(drop, Statement(sql=second_sql)))


def test_sql_that_would_erase_the_hazard_line_above_is_shown_escaped() -> None:
    text = render_plan(_plan(f"create table t (id int){CURSOR_UP_ERASE_LINE}"))
    assert "\x1b" not in text
    lines = text.splitlines()
    second = next(i for i, line in enumerate(lines) if line.lstrip().startswith("2."))
    assert lines[second] == r"  2. [safe] [auto] create table t (id int)\x1b[1A\x1b[2K;"
    assert lines[second - 1] == "       DS103 DESTRUCTIVE danger: drops column legacy_score"
    assert lines[second - 2].startswith("  1. [DESTRUCTIVE] [needs_approval] alter table")


def test_escaping_keeps_newlines_and_tabs_and_catches_c1_and_del() -> None:
    assert escape_controls("a\n\tb") == "a\n\tb"
    assert escape_controls("\x9b2J\x7f\x07\r") == r"\x9b2J\x7f\x07\x0d"
    assert escape_controls("plain café ✓") == "plain café ✓"
    assert one_line("first\nsecond\x1b]0;title\x07") == r"first\x0asecond\x1b]0;title\x07"


def test_audit_values_from_the_store_are_escaped() -> None:
    record = AuditRecord(
        id=7,
        at=datetime(2024, 5, 1, 12, 0, tzinfo=UTC),
        environment="dev",
        event="plan_rejected",
        plan_id=3,
        actor=f"mallory{CURSOR_UP_ERASE_LINE}",
        payload={"reason": "\x1b[31mred"},
        prev_hash="0" * 64,
        hash="1" * 64,
    )
    text = render_audit([record])
    assert "\x1b" not in text
    assert r"by mallory\x1b[1A\x1b[2K" in text and r"reason: \x1b[31mred" in text


def test_json_rendering_is_the_data_itself_with_controls_escaped_by_json() -> None:
    plan = _plan(f"select 1{CURSOR_UP_ERASE_LINE}")
    outcome = Outcome(plan, lambda p: {"sqls": list(p.sqls)}, render_plan)
    out = render(outcome, "json")
    assert out is not None and "\x1b" not in out
    assert json.loads(out) == {"sqls": [plan.statements[0].sql, f"select 1{CURSOR_UP_ERASE_LINE}"]}
    assert render(outcome, "text") == render_plan(plan)
    assert render(Outcome(None, code=3), "text") is None and render(Outcome(None, code=3), "json") is None
