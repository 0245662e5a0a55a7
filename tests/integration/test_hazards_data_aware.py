"""Data-aware hazards, policy and online-safe rewrites on a real PostgreSQL.

The same statement is harmless on an empty table and a hazard on a table with rows or above the ``large_table``
threshold (lowered here to keep the tables small); online-safe rewrites really run (CONCURRENTLY outside a
transaction, NOT VALID then VALIDATE); a denied statement never runs, not even with approval.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import run_sql

from reconciler.cli import main
from reconciler.errors import ApplyError, PlanError
from reconciler.model import Decision
from reconciler.service import Reconciler

# Small thresholds: a table with a few hundred analyzed rows counts as large.
LOW = {"large_table": {"rows": 100, "bytes": "1GB"}}


def env(dsn: str, **extra: Any) -> dict[str, dict[str, Any]]:
    return {"dev": {"dsn": dsn, **extra}}


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code = main(list(args))
    out, err = capsys.readouterr()
    assert code in (0, 2), err
    return json.loads(out)


@pytest.mark.parametrize(
    ("rows", "analyze", "codes", "decision"),
    [
        (0, True, [], "auto"),
        (300, True, ["MF102"], "needs_approval"),
        (3, False, ["MF102"], "needs_approval"),  # never analyzed: the estimate is unknown, the size is not 0
    ],
    ids=["empty", "rows", "rows-unanalyzed"],
)
def test_unique_index_harmless_on_empty_table_hazard_with_rows(
    rows: int,
    analyze: bool,
    codes: list[str],
    decision: str,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = make_db(
        f"create table t (id int, v int); insert into t select g, g from generate_series(1, {rows}) g;"
        + ("analyze t;" if analyze else "")
    )
    cfg = project({"010.sql": "create table t (id int, v int);\ncreate unique index t_v on t (v);\n"}, env(dsn))
    doc = cli_json(capsys, "-c", str(cfg), "plan", "dev", "--format", "json")
    [stmt] = doc["statements"]
    assert stmt["hazard_codes"] == codes and stmt["decision"] == decision
    assert [h["code"] for h in stmt["hazards"]] == codes
    assert all(set(h) == {"code", "kind", "severity", "message"} for h in stmt["hazards"])
    figures = stmt["tables"]["public.t"]
    assert figures["rows"] == (rows if analyze else None) and figures["bytes"] >= 0
    if codes:
        assert ("~300 rows" if analyze else "rows unknown") in stmt["hazards"][0]["message"]
    # The text plan shows the same: decision, figures, codes.
    assert main(["-c", str(cfg), "plan", "dev"]) == 0
    text = capsys.readouterr().out
    assert f"[{decision}]" in text and "table public.t: " in text
    assert all(c in text for c in codes)


@pytest.mark.parametrize(
    ("production", "threshold", "codes", "decision"),
    [
        (False, LOW, ["LK102"], Decision.AUTO),
        (True, LOW, ["LK102"], Decision.NEEDS_APPROVAL),
        (True, {}, [], Decision.AUTO),  # default threshold: 300 rows is not large
    ],
    ids=["large-table", "large-table-in-production", "small-table-in-production"],
)
def test_rewrite_on_large_table_needs_approval_in_production(
    production: bool,
    threshold: dict[str, Any],
    codes: list[str],
    decision: Decision,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(
        "create table t (id int, v int); insert into t select g, g from generate_series(1, 300) g; analyze t;"
    )
    reconciler = reconciler_for(
        project({"010.sql": "create table t (id int, v bigint);\n"}, env(dsn, production=production, **threshold))
    )
    [stmt] = reconciler.plan("dev").statements
    assert [h.code for h in stmt.hazards] == codes and stmt.decision is decision
    result = reconciler.apply("dev")
    assert result.in_sync is (decision is Decision.AUTO)
    assert (result.queued_plan_id is not None) is (decision is Decision.NEEDS_APPROVAL)


def test_index_on_large_table_is_built_concurrently(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(
        "create table t (id int, v int); insert into t select g, g % 7 from generate_series(1, 500) g; analyze t;"
    )
    reconciler = reconciler_for(
        project({"010.sql": "create table t (id int, v int);\ncreate index t_v on t (v);\n"}, env(dsn, **LOW))
    )
    [stmt] = reconciler.plan("dev").statements
    assert stmt.hazards == () and stmt.decision is Decision.AUTO
    assert [(e.sql, e.transactional) for e in stmt.execution()] == [
        ("CREATE INDEX CONCURRENTLY t_v ON public.t (v)", False)
    ]
    result = reconciler.apply("dev")
    # PostgreSQL refuses CONCURRENTLY inside a transaction block: it ran on its own, and the plan converged.
    assert result.in_sync and result.applied == [stmt.sql]
    assert [a.sql for a in result.executed] == ["CREATE INDEX CONCURRENTLY t_v ON public.t (v)"]
    assert run_sql(dsn, "select indisvalid from pg_index where indexrelid = 't_v'::regclass") == [(True,)]
    # The audit trail counts the plan's statement, as migra wrote it.
    assert [r.payload["sql"] for r in reconciler.store.audit_records("dev", event="statement_applied")] == [stmt.sql]


def test_invalid_index_left_by_a_failed_build_is_dropped_before_the_retry(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(
        # Autovacuum off: an autoanalyze after the delete below would make the table small, and the build not online.
        "create table t (id int, v int) with (autovacuum_enabled = off);"
        "insert into t select g, g % 50 from generate_series(1, 500) g; analyze t;"
    )
    reconciler = reconciler_for(
        project(
            {
                "010.sql": "create table t (id int, v int) with (autovacuum_enabled = off);\n"
                "create unique index t_v on t (v);\n"
            },
            env(dsn, policy={"auto_apply": ["MF102"]}, lock_retries=0, **LOW),
        )
    )
    with pytest.raises(ApplyError, match="could not create unique index"):
        reconciler.apply("dev")
    assert run_sql(dsn, "select indisvalid from pg_index where indexrelid = 't_v'::regclass") == [(False,)]

    # An INVALID index is no index: the next plan builds it again, dropping the leftover first.
    run_sql(dsn, "delete from t where id > 50")
    [stmt] = reconciler.plan("dev").statements
    assert [(e.sql, e.transactional) for e in stmt.execution()] == [
        ('DROP INDEX CONCURRENTLY IF EXISTS "public"."t_v"', False),
        ("CREATE UNIQUE INDEX CONCURRENTLY t_v ON public.t (v)", False),
    ]
    assert reconciler.apply("dev").in_sync
    assert run_sql(dsn, "select indisvalid, indisunique from pg_index where indexrelid = 't_v'::regclass") == [
        (True, True)
    ]


def test_foreign_key_added_not_valid_then_validated_on_its_own(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    schema = "create table u (id int primary key); create table o (id int, uid int);"
    dsn = make_db(
        schema + "insert into u select generate_series(1, 10);"
        "insert into o select g, 1 + g % 10 from generate_series(1, 400) g; analyze o; analyze u;"
    )
    reconciler = reconciler_for(
        project(
            {"010.sql": "create table u (id int primary key);\ncreate table o (id int, uid int references u (id));\n"},
            env(dsn, policy={"auto_apply": ["MF106"]}, **LOW),
        )
    )
    add, validate = reconciler.plan("dev").statements
    assert "not valid" in add.sql and add.execution()[0].transactional
    assert [(e.sql, e.transactional) for e in validate.execution()] == [(validate.sql, False)]
    assert [h.code for h in validate.hazards] == ["MF106"]
    result = reconciler.apply("dev")
    assert result.in_sync and result.applied == [add.sql, validate.sql]
    assert run_sql(dsn, "select convalidated from pg_constraint where conname = 'o_uid_fkey'") == [(True,)]


def test_set_not_null_proven_by_a_validated_check(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(
        "create table t (id int, v int); insert into t select g, g from generate_series(1, 300) g; analyze t;"
    )
    reconciler = reconciler_for(
        project(
            {"010.sql": "create table t (id int, v int not null);\n"}, env(dsn, policy={"auto_apply": ["MF104"]}, **LOW)
        )
    )
    [stmt] = reconciler.plan("dev").statements
    assert [e.transactional for e in stmt.execution()] == [True, True, False, True, True]
    result = reconciler.apply("dev")
    assert result.in_sync and result.applied == [stmt.sql]
    assert run_sql(dsn, "select attnotnull from pg_attribute where attrelid = 't'::regclass and attname = 'v'") == [
        (True,)
    ]
    assert run_sql(dsn, "select count(*) from pg_constraint where conrelid = 't'::regclass") == [(0,)]


def test_denied_statement_is_queued_but_never_approved_or_run(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = make_db("create table t (id int, legacy int); insert into t values (1, 10);")
    cfg = project(
        {"010.sql": "create table t (id int, note text);\n"},
        env(dsn, policy={"deny": ["DS103"]}),
    )
    reconciler = reconciler_for(cfg)
    drop, add = reconciler.plan("dev").statements
    assert drop.decision is Decision.DENIED and add.decision is Decision.AUTO
    result = reconciler.apply("dev")
    # The rest runs; the denied drop is queued so that people see it.
    assert result.applied == [add.sql] and result.queued_plan_id is not None
    queued = reconciler.store.get_plan(result.queued_plan_id)
    assert [s.decision for s in queued.statements] == ["denied"]
    with pytest.raises(PlanError, match="denies 1 of its statements even with approval"):
        reconciler.approve(result.queued_plan_id, "alice")
    assert main(["-c", str(cfg), "approve", str(result.queued_plan_id), "--by", "alice"]) == 1
    assert "policy denies" in capsys.readouterr().err
    assert run_sql(dsn, "select id, legacy from t") == [(1, 10)]
