"""Approvals bind to environment, desired revision, schema fingerprint and statements; the audit trail is chained."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from conftest import cli, cli_json, run_sql

CURRENT = """
create table users (id int primary key, name text not null, legacy_score int);
insert into users values (1, 'ann', 10), (2, 'bob', 20);
"""
DESIRED = "create table users (id int primary key, name text not null, email text);\n"


@pytest.fixture()
def env(make_db: Callable[..., str], project: Callable[..., Path]) -> tuple[str, Path]:
    dsn = make_db(CURRENT)
    return dsn, project({"010_users.sql": DESIRED}, {"dev": {"dsn": dsn}})


def legacy_rows(dsn: str) -> list[tuple[Any, ...]]:
    return run_sql(dsn, "select id, legacy_score from users order by id")


def test_approval_refused_after_a_hand_change_that_migra_does_not_see(
    env: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, cfg = env
    c = str(cfg)
    queued = cli_json(capsys, "-c", c, "apply", "dev")["queued_plan_id"]
    before = cli_json(capsys, "-c", c, "plans")[0]
    # Someone changes the environment by hand in a way the diff does not show: the statements stay the same, the
    # schema fingerprint does not.
    run_sql(dsn, "create statistics hand_stats on id, name from users")
    assert cli_json(capsys, "-c", c, "plan", "dev")["statements_hash"] == before["statements_hash"]

    code, _, err = cli(capsys, "-c", c, "approve", str(queued), "--by", "alice")
    assert code == 1 and "refused, the plan is stale" in err and "schema changed" in err
    plans = cli_json(capsys, "-c", c, "plans")
    assert [(p["status"], p["decided_by"]) for p in plans] == [("stale", None)]
    assert "fingerprint" in plans[0]["reason"]

    # The next apply computes a new plan: the same statements, bound to the schema as it is now.
    again = cli_json(capsys, "-c", c, "apply", "dev")
    assert again["applied"] == [] and again["queued_plan_id"] not in (None, queued)
    new = cli_json(capsys, "-c", c, "plans", "--status", "pending")[0]
    assert new["statements_hash"] == before["statements_hash"] and new["fingerprint"] != before["fingerprint"]
    assert legacy_rows(dsn) == [(1, 10), (2, 20)]


def test_approved_plan_goes_stale_on_a_fingerprint_change_and_is_replanned(
    env: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, cfg = env
    c = str(cfg)
    queued = cli_json(capsys, "-c", c, "apply", "dev")["queued_plan_id"]
    assert cli(capsys, "-c", c, "approve", str(queued), "--by", "alice")[0] == 0
    run_sql(dsn, "create index users_name_hand on users (name); drop index users_name_hand; analyze users")
    # An index created and dropped again leaves the schema as it was: the approval still holds ...
    run_sql(dsn, "create statistics hand_stats on id, name from users")
    # ... but a statistics object created by hand (which no plan statement resolves) changes the schema.
    after = cli_json(capsys, "-c", c, "apply", "dev")
    assert after["stale_plan_id"] == queued and after["applied"] == []
    assert any("stale" in m and "fingerprint" in m for m in after["messages"])
    assert after["queued_plan_id"] not in (None, queued)
    assert legacy_rows(dsn) == [(1, 10), (2, 20)]
    stale = [r for r in cli_json(capsys, "-c", c, "audit", "--env", "dev") if r["event"] == "plan_stale"]
    assert [(r["plan_id"], "schema changed" in r["payload"]["reason"]) for r in stale] == [(queued, True)]


def write_tokens(folder: Path, *names: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """A token file per name (0600); the ``server.tokens`` entries and each name's token file path."""
    entries, files = [], {}
    for name in names:
        path = folder / f"{name}.token"
        path.write_text(f"{name}-token-{'x' * 24}\n")
        path.chmod(0o600)
        entries.append({"identity": name, "token_file": str(path), "environments": ["*"]})
        files[name] = str(path)
    return entries, files


def test_two_different_approvers_from_the_list(
    make_db: Callable[..., str], project: Callable[..., Path], capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    dsn = make_db(CURRENT)
    tokens, token = write_tokens(tmp_path, "alice", "bob", "mallory")
    cfg = str(
        project(
            {"010_users.sql": DESIRED},
            {"prod": {"dsn": dsn, "approvers": ["alice", "bob", "carol"], "approvals_required": 2}},
            server={"tokens": tokens},
        )
    )
    queued = cli_json(capsys, "-c", cfg, "apply", "prod")["queued_plan_id"]
    code, _, err = cli(capsys, "-c", cfg, "approve", str(queued), "--token-file", token["mallory"])
    assert code == 1 and "'mallory' is not an approver of environment 'prod'" in err
    code, _, err = cli(capsys, "-c", cfg, "reject", str(queued), "--token-file", token["mallory"], "--reason", "no")
    assert code == 1 and "not an approver" in err
    # A name alone is not an approver here: approvers are named, so they authenticate.
    code, _, err = cli(capsys, "-c", cfg, "approve", str(queued), "--by", "alice")
    assert code == 1 and "refused without a token" in err

    code, out, _ = cli(capsys, "-c", cfg, "approve", str(queued), "--token-file", token["alice"])
    assert code == 0 and "(1 of 2)" in out
    code, _, err = cli(capsys, "-c", cfg, "approve", str(queued), "--token-file", token["alice"])
    assert code == 1 and "already approved by alice; another approval must come from someone else" in err
    # One approval is not enough: nothing destructive runs.
    half = cli_json(capsys, "-c", cfg, "apply", "prod")
    assert half["applied"] == [] and half["queued_plan_id"] == queued
    assert legacy_rows(dsn) == [(1, 10), (2, 20)]

    done = cli_json(capsys, "-c", cfg, "approve", str(queued), "--token-file", token["bob"], "--by", "bob")
    assert done["status"] == "approved" and done["decided_by"] == "alice, bob"
    assert [a["by"] for a in done["approvals"]] == ["alice", "bob"] and all(a["at"] for a in done["approvals"])
    assert all(a["authenticated"] and a["verified"] for a in done["approvals"])
    final = cli_json(capsys, "-c", cfg, "apply", "prod")
    assert final["in_sync"] is True and final["applied_plan_id"] == queued
    assert run_sql(dsn, "select count(*) from information_schema.columns where column_name = 'legacy_score'") == [(0,)]
    events = [(r["event"], r["actor"]) for r in cli_json(capsys, "-c", cfg, "audit") if r["plan_id"] == queued]
    assert ("approval_recorded", "alice") in events and ("plan_approved", "bob") in events


def test_rejected_plan_is_not_proposed_again_for_the_same_revision_and_schema(
    env: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, cfg = env
    c = str(cfg)
    queued = cli_json(capsys, "-c", c, "apply", "dev")["queued_plan_id"]
    rejected = cli_json(capsys, "-c", c, "reject", str(queued), "--by", "bob", "--reason", "keep the scores")
    assert (rejected["status"], rejected["decided_by"], rejected["reason"]) == ("rejected", "bob", "keep the scores")
    assert rejected["approvals"][0]["decision"] == "reject"
    again = cli_json(capsys, "-c", c, "apply", "dev")
    assert again["queued_plan_id"] is None and any("rejected before" in m for m in again["messages"])
    # Once the environment's schema is different, the plan is proposed again.
    run_sql(dsn, "create statistics hand_stats on id, name from users")
    later = cli_json(capsys, "-c", c, "apply", "dev")
    assert later["queued_plan_id"] not in (None, queued)


def test_a_newer_desired_revision_supersedes_the_pending_plan(
    env: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    _dsn, cfg = env
    c = str(cfg)
    first = cli_json(capsys, "-c", c, "apply", "dev")["queued_plan_id"]
    (cfg.parent / "desired-state" / "010_users.sql").write_text(
        "create table users (id int primary key, email text);\n"  # now also drops name
    )
    second = cli_json(capsys, "-c", c, "apply", "dev")["queued_plan_id"]
    assert second not in (None, first)
    plans = {p["id"]: p for p in cli_json(capsys, "-c", c, "plans")}
    assert plans[first]["status"] == "superseded" and "newer desired revision" in plans[first]["reason"]
    assert [p["id"] for p in plans.values() if p["status"] in ("pending", "approved")] == [second]


def test_audit_lists_and_verifies_and_names_a_tampered_record(
    env: tuple[str, Path], capsys: pytest.CaptureFixture[str], make_db: Callable[..., str], project: Callable[..., Path]
) -> None:
    dsn, _ = env
    # The store on PostgreSQL this time (the store tests run both backends).
    state = make_db()
    cfg = project({"010_users.sql": DESIRED}, {"dev": {"dsn": dsn}}, state=state)
    c = str(cfg)
    queued = cli_json(capsys, "-c", c, "apply", "dev")["queued_plan_id"]
    cli(capsys, "-c", c, "approve", str(queued), "--by", "alice")
    assert cli_json(capsys, "-c", c, "apply", "dev")["in_sync"] is True

    records = cli_json(capsys, "-c", c, "audit", "--env", "dev")
    events = [r["event"] for r in records]
    for expected in ("plan_computed", "plan_queued", "plan_approved", "statement_applied", "apply_finished"):
        assert expected in events
    applied = [r["payload"] for r in records if r["event"] == "statement_applied"]
    assert all({"sql", "duration_seconds", "attempts", "waits_seconds"} <= set(p) for p in applied)
    assert all(r["prev_hash"] and r["hash"] for r in records)
    code, out, _ = cli(capsys, "-c", c, "audit")
    assert code == 0 and "plan_approved" in out and "by alice" in out
    assert cli(capsys, "-c", c, "audit", "--env", "nope")[1].strip() == "no audit records"

    code, out, _ = cli(capsys, "-c", c, "audit", "verify")
    assert code == 0 and "intact" in out

    target = next(r["id"] for r in records if r["event"] == "plan_approved")
    engine = sa.create_engine(state.replace("postgresql://", "postgresql+psycopg://", 1))
    with engine.begin() as conn:
        conn.execute(sa.text("update reconciler_audit set actor = 'mallory' where id = :id"), {"id": target})
    engine.dispose()
    code, out, _ = cli(capsys, "-c", c, "audit", "verify")
    assert code == 1 and f"record {target} (plan_approved" in out and "altered" in out
    doc = json.loads(cli(capsys, "-c", c, "audit", "verify", "--format", "json")[1])
    assert doc["ok"] is False and doc["first_broken_id"] == target
