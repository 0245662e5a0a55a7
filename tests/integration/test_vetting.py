"""Vetting on a scratch clone catches the plans migra gets wrong on PostgreSQL 15 (../shared/MIGRA.md): nothing
of such a plan is applied, and the environment's status, the audit trail and the queued plan name the failing
statement and PostgreSQL's error."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from conftest import run_sql

from reconciler import vet
from reconciler.model import PlanStatus
from reconciler.service import Reconciler
from reconciler.status import ConditionType

ENUM = "create type mood as enum ('a', 'b'); create table t (id int, m mood);"
ENUM_MORE = "create type mood as enum ('a', 'b', 'c'); create table t (id int, m mood);"


@dataclass(frozen=True)
class Case:
    name: str
    current: str
    desired: str
    statement: str  # part of the statement that fails ("" when the plan runs but does not converge)
    error: str  # part of PostgreSQL's error, or of the residue


CASES = [
    Case(
        "enum value removed while a view uses the enum",
        ENUM_MORE + "create view v as select id from t where m = 'a';",
        ENUM + "create view v as select id from t where m = 'a';",
        'alter column m type "public"."mood"',
        "cannot alter type of a column used by a view or rule",
    ),
    Case(
        "enum value removed while a partial index uses the enum",
        ENUM_MORE + "create index t_a on t (id) where m = 'a';",
        ENUM + "create index t_a on t (id) where m = 'a';",
        'alter column m type "public"."mood"',
        "operator does not exist: mood = mood__old_version_to_be_dropped",
    ),
    Case(
        "enum value removed while a check constraint uses the enum",
        ENUM_MORE.replace("m mood)", "m mood check (m <> 'b'))"),
        ENUM.replace("m mood)", "m mood check (m <> 'b'))"),
        'alter column m type "public"."mood"',
        "operator does not exist",
    ),
    # A materialized view recreated without its indexes is no longer such a case: the plan re-creates them (the
    # drift corpus's "indexes of a recreated materialized view" converges).
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_vetting_stops_what_migra_gets_wrong(
    case: Case,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(case.current)
    reconciler = reconciler_for(project({"010_schema.sql": case.desired}, {"dev": {"dsn": dsn}}))
    before = reconciler.env_fingerprint("dev")

    result = reconciler.apply("dev")

    # Nothing ran: not even the part that would have run unattended.
    assert result.applied == [] and not result.in_sync
    assert reconciler.env_fingerprint("dev") == before
    assert result.vet is not None and result.vet.failed
    assert any("vetting on a scratch clone failed" in m and case.error in m for m in result.messages)
    # The audit trail and the environment's status say which statement failed and why.
    [audit] = reconciler.store.audit_records("dev", event="vet_failed")
    assert case.error in audit.payload["error"] + " ".join(audit.payload["residue"])
    if case.statement:
        assert case.statement in audit.payload["statement"]
    status = reconciler.store.load_status("dev")
    assert status is not None and case.error in status.condition(ConditionType.READY).message
    # The whole plan waits for a human, its error recorded.
    assert result.queued_plan_id is not None
    queued = reconciler.store.get_plan(result.queued_plan_id)
    assert queued.status is PlanStatus.PENDING and queued.error is not None and case.error in queued.error


def test_an_approved_plan_that_fails_vetting_is_never_half_applied(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(ENUM_MORE + "create view v as select id from t where m = 'a'; insert into t values (1, 'a');")
    reconciler = reconciler_for(
        project({"010_schema.sql": ENUM + "create view v as select id from t where m = 'a';"}, {"dev": {"dsn": dsn}})
    )
    queued = reconciler.apply("dev").queued_plan_id
    assert queued is not None
    # Applying again changes nothing and records nothing new.
    again = reconciler.apply("dev")
    assert again.applied == [] and again.queued_plan_id == queued
    assert len(reconciler.store.audit_records("dev", event="vet_failed")) == 1
    reconciler.approve(queued, "alice")
    result = reconciler.apply("dev")
    assert result.applied == []
    record = reconciler.store.get_plan(queued)
    assert record.status is PlanStatus.FAILED and record.error is not None
    assert "cannot alter type of a column used by a view or rule" in record.error
    # The enum is untouched: no renamed old version, no label removed, the row is still there.
    assert run_sql(dsn, "select typname from pg_type where typname like 'mood%' order by 1") == [("mood",)]
    assert run_sql(
        dsn, "select count(*) from pg_enum e join pg_type t on t.oid = e.enumtypid where t.typname = 'mood'"
    ) == [(3,)]
    assert run_sql(dsn, "select id, m::text from t") == [(1, "a")]


def test_enum_value_added_without_dependants_converges(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    # A label added: ALTER TYPE ... ADD VALUE, run alone and committed; it runs unattended.
    dsn = make_db(ENUM)
    reconciler = reconciler_for(project({"010_schema.sql": ENUM_MORE}, {"dev": {"dsn": dsn}}))
    plan = reconciler.plan("dev")
    assert [s.sql for s in plan.statements] == ["alter type \"public\".\"mood\" add value 'c' after 'b'"]
    assert [e.transactional for e in plan.statements[0].execution()] == [False]
    result = reconciler.apply("dev")
    assert result.in_sync and result.queued_plan_id is None
    assert run_sql(
        dsn, "select count(*) from pg_enum e join pg_type t on t.oid = e.enumtypid where t.typname = 'mood'"
    ) == [(3,)]


FOREIGN_TABLES = [
    # (wrapper set-up in the environment, what the desired state adds, extensions allowed)
    ("create extension postgres_fdw;", "create extension postgres_fdw;", ["postgres_fdw"]),  # the real wrapper
    ("create foreign data wrapper w;", "", []),  # a wrapper no allowed extension creates: a stand-in in the clone
]


@pytest.mark.parametrize(("wrapper", "extension", "allowed"), FOREIGN_TABLES, ids=["postgres_fdw", "own wrapper"])
def test_an_environment_with_foreign_tables_vets(
    wrapper: str,
    extension: str,
    allowed: list[str],
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    fdw = "postgres_fdw" if "postgres_fdw" in wrapper else "w"
    dsn = make_db(
        f"{wrapper} create server remote foreign data wrapper {fdw} options (host 'db.example');"
        "create user mapping for public server remote options (user 'app', password 'remote-secret');"
        "create foreign table ft (id int) server remote; create table t (id int);"
    )
    sandbox = {"share_cluster_with_environments": True, "extensions_allowed": allowed}
    desired = f"{extension} create table t (id int, note text);"
    reconciler = reconciler_for(project({"010_schema.sql": desired}, {"dev": {"dsn": dsn}}, sandbox=sandbox))
    result = reconciler.apply("dev")
    assert result.vet is not None and result.vet.ok, result.messages
    assert run_sql(dsn, "select count(*) from information_schema.columns where table_name = 't'") == [(2,)]


def test_a_plan_that_creates_an_allowed_untrusted_extension_vets(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    # The build role may not create postgres_fdw: on the clone, as in the build, the scratch admin creates it.
    dsn = make_db("create table t (id int);")
    sandbox = {"share_cluster_with_environments": True, "extensions_allowed": ["postgres_fdw"]}
    desired = "create extension postgres_fdw; create table t (id int);"
    reconciler = reconciler_for(project({"010_schema.sql": desired}, {"dev": {"dsn": dsn}}, sandbox=sandbox))
    result = reconciler.apply("dev")
    assert result.vet is not None and result.vet.ok, result.messages  # it then waits for approval (an extension)


# (environment, desired state, how many times the clone is inspected): a clone whose fingerprint equals the desired
# build's has converged without a re-diff; one whose fingerprint differs (here the new column lands after `b`, where
# the desired build has it before: a difference no statement closes) is re-diffed, and converges all the same.
CONVERGENCE_PROOFS = [
    ("create table t (id int, b int);", "create table t (id int, b int, a int); create table u (id int);", 0),
    ("create table t (id int, b int);", "create table t (id int, a int, b int);", 1),
]


@pytest.mark.parametrize(("current", "desired", "inspections"), CONVERGENCE_PROOFS, ids=["fingerprint", "re-diff"])
def test_a_converged_clone_is_proved_by_its_fingerprint_or_else_by_a_rediff(
    current: str,
    desired: str,
    inspections: int,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = make_db(current)
    reconciler = reconciler_for(project({"010_schema.sql": desired}, {"dev": {"dsn": dsn}}))
    assert reconciler.plan("dev").statements  # the desired build is made and inspected before counting
    seen: list[str] = []
    real = vet.inspect_database

    def counted(at: str, **kwargs: Any) -> Any:
        seen.append(at)
        return real(at, **kwargs)

    monkeypatch.setattr(vet, "inspect_database", counted)
    result = reconciler.apply("dev")
    assert result.vet is not None and result.vet.ok
    assert result.applied and result.queued_plan_id is None
    assert len(seen) == inspections
