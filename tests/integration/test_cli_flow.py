"""End-to-end behaviour of the command line on a real PostgreSQL."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from conftest import cli, run_sql

from reconciler.pgembedded import EmbeddedPostgres

CURRENT = """
create table users (id int primary key, name text not null, legacy_score int);
insert into users values (1, 'ann', 10), (2, 'bob', 20);
"""
DESIRED = "create table users (id int primary key, name text not null, email text);\ncreate index users_name on users (name);\n"


@pytest.fixture()
def env(make_db: Callable[..., str], project: Callable[..., Path]) -> tuple[str, Path]:
    dsn = make_db(CURRENT)
    return dsn, project({"010_users.sql": DESIRED}, {"dev": {"dsn": dsn}})


def test_plan_exit_codes_and_json(env: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _dsn, cfg = env
    code, out, _ = cli(capsys, "-c", str(cfg), "plan", "dev", "--detailed-exitcode", "--format", "json")
    assert code == 2
    doc = json.loads(out)
    assert doc["environment"] == "dev" and doc["in_sync"] is False
    assert len(doc["desired_revision"]) == 64
    by_sql = {s["sql"]: s for s in doc["statements"]}
    drop = next(s for s in doc["statements"] if "drop column" in s["sql"])
    assert drop["destructive"] is True and drop["hazard_codes"] == ["DS103"]
    assert [(h["code"], h["kind"], h["severity"]) for h in drop["hazards"]] == [("DS103", "DESTRUCTIVE", "danger")]
    assert "legacy_score" in drop["hazards"][0]["message"]
    assert drop["decision"] == "needs_approval"
    # The figures of the table behind the hazards (2 rows; never analyzed, so the estimate may be unknown).
    assert set(drop["tables"]) == {"public.users"} and drop["tables"]["public.users"]["bytes"] > 0
    assert all(
        set(s) >= {"sql", "destructive", "hazards", "hazard_codes", "decision", "tables"} for s in by_sql.values()
    )
    assert any(not s["destructive"] for s in doc["statements"])

    # Without --detailed-exitcode, drift is still exit 0.
    assert cli(capsys, "-c", str(cfg), "plan", "dev")[0] == 0


def test_destructive_waits_for_approval_then_converges(
    env: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, cfg = env
    code, out, _ = cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")
    assert code == 0
    res = json.loads(out)
    assert res["in_sync"] is False and res["queued_plan_id"] is not None
    assert any("add column" in s for s in res["applied"])
    assert not any("drop" in s for s in res["applied"])
    # The data in the column to be dropped is still there; the safe changes are applied.
    assert run_sql(dsn, "select id, legacy_score from users order by id") == [(1, 10), (2, 20)]
    assert run_sql(dsn, "select count(*) from pg_indexes where indexname = 'users_name'") == [(1,)]

    # Applying again changes nothing and queues nothing new.
    code, out, _ = cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")
    again = json.loads(out)
    assert again["applied"] == [] and again["queued_plan_id"] == res["queued_plan_id"]

    code, out, _ = cli(capsys, "-c", str(cfg), "plans", "--env", "dev", "--status", "pending", "--format", "json")
    plans = json.loads(out)
    assert [p["id"] for p in plans] == [res["queued_plan_id"]]
    assert set(plans[0]) >= {
        "id",
        "environment",
        "status",
        "desired_revision",
        "statements",
        "created_at",
        "decided_by",
        "reason",
    }
    assert plans[0]["statements"][0]["sql"].startswith('alter table "public"."users" drop column')

    assert cli(capsys, "-c", str(cfg), "approve", str(res["queued_plan_id"]), "--by", "alice")[0] == 0
    code, out, _ = cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")
    final = json.loads(out)
    assert final["in_sync"] is True and final["queued_plan_id"] is None
    assert run_sql(dsn, "select count(*) from information_schema.columns where column_name = 'legacy_score'") == [(0,)]
    assert cli(capsys, "-c", str(cfg), "plan", "dev", "--detailed-exitcode")[0] == 0
    code, out, _ = cli(capsys, "-c", str(cfg), "plans", "--format", "json")
    assert [(p["status"], p["decided_by"]) for p in json.loads(out)] == [("applied", "alice")]


def test_approval_refused_as_stale_after_desired_change(
    env: tuple[str, Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn, cfg = env
    res = json.loads(cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")[1])
    assert cli(capsys, "-c", str(cfg), "approve", str(res["queued_plan_id"]), "--by", "alice")[0] == 0
    # Someone changes the desired state after the approval: the legacy column must now also be renamed away...
    (cfg.parent / "desired-state" / "020_more.sql").write_text("create table audit (id int);\n")
    code, out, _ = cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")
    after = json.loads(out)
    assert code == 0
    assert after["stale_plan_id"] == res["queued_plan_id"]
    assert any("stale" in m and "desired state changed" in m for m in after["messages"])
    # Nothing destructive ran; the column and its data are still there.
    assert run_sql(dsn, "select id, legacy_score from users order by id") == [(1, 10), (2, 20)]
    plans = json.loads(cli(capsys, "-c", str(cfg), "plans", "--format", "json")[1])
    assert [p["status"] for p in plans] == ["stale", "pending"]
    assert "desired state changed" in plans[0]["reason"]


def test_approval_refused_after_desired_change(env: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _dsn, cfg = env
    res = json.loads(cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")[1])
    (cfg.parent / "desired-state" / "020_more.sql").write_text("create table audit (id int);\n")
    code, _, err = cli(capsys, "-c", str(cfg), "approve", str(res["queued_plan_id"]), "--by", "alice")
    assert code == 1
    assert "refused, the plan is stale: the desired state changed" in err
    plans = json.loads(cli(capsys, "-c", str(cfg), "plans", "--format", "json")[1])
    assert [(p["status"], p["decided_by"]) for p in plans] == [("stale", None)]


def test_stale_when_environment_changed_by_hand(env: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    dsn, cfg = env
    res = json.loads(cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")[1])
    cli(capsys, "-c", str(cfg), "approve", str(res["queued_plan_id"]), "--by", "alice")
    run_sql(dsn, "alter table users add column extra int")
    after = json.loads(cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")[1])
    assert after["stale_plan_id"] == res["queued_plan_id"]
    assert run_sql(dsn, "select count(*) from users where legacy_score is not null") == [(2,)]


def test_reject(env: tuple[str, Path], capsys: pytest.CaptureFixture[str]) -> None:
    _dsn, cfg = env
    res = json.loads(cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")[1])
    code, _out, _ = cli(capsys, "-c", str(cfg), "reject", str(res["queued_plan_id"]), "--by", "bob", "--reason", "no")
    assert code == 0
    # Approving a rejected plan is refused.
    code, _, err = cli(capsys, "-c", str(cfg), "approve", str(res["queued_plan_id"]), "--by", "alice")
    assert code == 1 and "rejected" in err
    # The same plan is not queued again for the same revision.
    again = json.loads(cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")[1])
    assert again["queued_plan_id"] is None and any("rejected before" in m for m in again["messages"])


def test_safe_part_depending_on_destructive_waits_whole(
    make_db: Callable[..., str], project: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # text -> integer may reject values (DS107, needs approval); the new view needs the integer column.
    dsn = make_db("create table t (id int, v text); insert into t values (1, '5');")
    cfg = project(
        {"010.sql": "create table t (id int, v int);\ncreate view w as select v + 1 as u from t;\n"},
        {"dev": {"dsn": dsn}},
    )
    res = json.loads(cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")[1])
    assert res["applied"] == []
    assert any("whole plan waits" in m for m in res["messages"])
    assert run_sql(dsn, "select count(*) from pg_views where viewname = 'w'") == [(0,)]
    plan = json.loads(cli(capsys, "-c", str(cfg), "plans", "--format", "json")[1])[0]
    assert len(plan["statements"]) == 2
    cli(capsys, "-c", str(cfg), "approve", str(res["queued_plan_id"]), "--by", "alice")
    final = json.loads(cli(capsys, "-c", str(cfg), "apply", "dev", "--format", "json")[1])
    assert final["in_sync"] is True
    assert run_sql(dsn, "select u from w") == [(6,)]


def _scratch_dbs(pg: EmbeddedPostgres) -> int:
    with psycopg.connect(pg.dsn()) as conn:
        row = conn.execute("select count(*) from pg_database where datname like 'reconciler_scratch_%'").fetchone()
    return int(row[0]) if row else -1


@pytest.mark.parametrize(
    ("files", "where", "what"),
    [
        (
            {"010_a.sql": "create table a (id int);\n", "020_b.sql": "create table b (id int);\n\ncreat table c ();\n"},
            "020_b.sql:3",
            "syntax error",
        ),
        (
            {
                "010_a.sql": "create table a (id int);\n",
                "sub/020_b.sql": "-- refs\ncreate view v as\n  select nope from a;\n",
            },
            "sub/020_b.sql:3",
            "nope",
        ),
    ],
    ids=["syntax", "semantic"],
)
def test_sql_error_in_desired_state(
    files: dict[str, str],
    where: str,
    what: str,
    env: tuple[str, Path],
    project: Callable[..., Path],
    pg_server: EmbeddedPostgres,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn, _ = env
    cfg = project(files, {"dev": {"dsn": dsn}})
    before = _scratch_dbs(pg_server)
    for cmd in ("plan", "apply"):
        code, _out, err = cli(capsys, "-c", str(cfg), cmd, "dev")
        assert code == 1
        assert where in err and what in err
        assert err.count("\n") == 1  # one clear line
    assert _scratch_dbs(pg_server) == before
    assert run_sql(dsn, "select count(*) from information_schema.tables where table_name in ('a', 'b')") == [(0,)]
    assert run_sql(dsn, "select id, legacy_score from users order by id") == [(1, 10), (2, 20)]


def test_unreachable_environment(project: Callable[..., Path], capsys: pytest.CaptureFixture[str]) -> None:
    cfg = project(
        {"010.sql": DESIRED}, {"dev": {"dsn": "postgresql://app:s3cret@127.0.0.1:1/app", "connect_timeout": "2s"}}
    )
    code, _out, err = cli(capsys, "-c", str(cfg), "apply", "dev")
    assert code == 1
    assert "environment 'dev'" in err and "cannot connect" in err
    assert "s3cret" not in err
    assert json.loads(cli(capsys, "-c", str(cfg), "plans", "--format", "json")[1]) == []


@pytest.mark.parametrize(
    "settings",
    [{"suspend": True}, {"maintenance_windows": [{"cron": "0 0 1 1 *", "duration": "1m"}]}],
    ids=["suspended", "outside-window"],
)
def test_apply_respects_suspend_and_windows_unless_forced(
    settings: dict[str, object],
    make_db: Callable[..., str],
    project: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = make_db("create table t (id int);")
    cfg = project({"010.sql": "create table t (id int, note text);"}, {"dev": {"dsn": dsn, **settings}})
    code, _, err = cli(capsys, "-c", str(cfg), "apply", "dev")
    assert code == 1 and "refused" in err and "nothing was applied" in err
    assert run_sql(dsn, "select count(*) from information_schema.columns where table_name = 't'") == [(1,)]
    code, out, _ = cli(capsys, "-c", str(cfg), "apply", "dev", "--force", "--format", "json")
    assert code == 0 and json.loads(out)["in_sync"] is True
