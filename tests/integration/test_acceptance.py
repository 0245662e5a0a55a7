"""Acceptance cases as data: current DDL, desired DDL, expected destructive statements, expect converged.

Each case: plan (hazards as expected), apply (unattended part), approve the queued remainder if any, apply again,
then a fresh plan must be empty.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.model import PlanStatus
from reconciler.policy import NEEDS_APPROVAL_BY_DEFAULT
from reconciler.service import Reconciler


@dataclass(frozen=True)
class Case:
    name: str
    current: str
    desired: str
    destructive: tuple[str, ...]  # hazard codes expected on destructive statements, in plan order
    converged: bool = True


CASES = [
    Case("new table", "", "create table t (id int primary key, name text);", ()),
    Case(
        "new column with default and index",
        "create table t (id int primary key);",
        "create table t (id int primary key, note text default 'x' not null); create index t_note on t (note);",
        (),
    ),
    Case("drop table", "create table t (id int); create table old (x int);", "create table t (id int);", ("DS102",)),
    Case("drop column", "create table t (id int, legacy int);", "create table t (id int);", ("DS103",)),
    # Widening loses nothing (a rewrite, harmless on an empty table); narrowing or a lossy cast needs approval.
    Case("widen column type", "create table t (id int, v int);", "create table t (id int, v bigint);", ()),
    Case("narrow column type", "create table t (id int, v bigint);", "create table t (id int, v int);", ("DS111",)),
    Case("change column type", "create table t (id int, v text);", "create table t (id int, v int);", ("DS107",)),
    Case(
        "enum value added is a recreate",
        "create type mood as enum ('a', 'b'); create table t (id int, m mood);",
        "create type mood as enum ('a', 'b', 'c'); create table t (id int, m mood);",
        (),
    ),
    Case(
        "view recreated is not data loss",
        "create table t (id int, v int); create view vv as select id from t;",
        "create table t (id int, v int); create view vv as select id, v from t;",
        (),
    ),
    Case(
        "function changed is not data loss",
        "create function f() returns int language sql as 'select 1';",
        "create function f() returns int language sql as 'select 2';",
        (),
    ),
    Case(
        "drop schema and sequence",
        "create schema old; create sequence s; create table t (id int);",
        "create table t (id int);",
        ("DS104", "DS101"),
    ),
    Case(
        "drop enum type",
        "create type mood as enum ('a', 'b'); create table t (id int);",
        "create table t (id int);",
        ("DS105",),
    ),
    Case(
        "drop materialized view",
        "create table t (id int); create materialized view m as select * from t;",
        "create table t (id int);",
        ("DS106",),
    ),
    Case(
        "policy and rls enabled",
        "create table t (id int, owner text);",
        "create table t (id int, owner text); alter table t enable row level security; "
        "create policy own on t using (owner = current_user);",
        (),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_case(
    case: Case,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(case.current)
    reconciler = reconciler_for(project({"010_schema.sql": case.desired}, {"dev": {"dsn": dsn}}))

    plan = reconciler.plan("dev")
    assert not plan.in_sync
    got = tuple(h.code for s in plan.statements if s.destructive for h in s.hazards if h.kind == "DESTRUCTIVE")
    assert got == case.destructive

    first = reconciler.apply("dev")
    if all(s.decision == "auto" for s in plan.statements):
        assert not case.destructive
        assert first.queued_plan_id is None
        assert first.in_sync is case.converged
    else:
        assert first.queued_plan_id is not None
        queued = reconciler.store.get_plan(first.queued_plan_id)
        assert queued.status is PlanStatus.PENDING
        # what waits carries a hazard that needs a person by default (data loss, code execution, ...)
        assert all(
            any(h.kind in NEEDS_APPROVAL_BY_DEFAULT for h in s.hazards)
            for s in queued.statements
            if s.decision != "auto"
        )
        reconciler.approve(first.queued_plan_id, "alice")
        second = reconciler.apply("dev")
        assert second.in_sync is case.converged
        assert reconciler.store.get_plan(first.queued_plan_id).status is PlanStatus.APPLIED
    assert reconciler.plan("dev").in_sync is case.converged
