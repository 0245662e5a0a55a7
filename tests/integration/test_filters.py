"""Schema filters and privileges are honoured on both sides of the diff."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import run_sql

from reconciler.errors import VersionMismatchError
from reconciler.scratch import ScratchServer
from reconciler.service import Reconciler

CURRENT = "create schema other; create table other.keep (id int); create table t (id int);"
DESIRED = "create table t (id int, name text);"


@pytest.mark.parametrize(
    ("filters", "expect_drop"),
    [({}, True), ({"schemas": ["public"]}, False), ({"exclude_schemas": ["other"]}, False)],
    ids=["no-filter", "schemas", "exclude_schemas"],
)
def test_schema_filters(
    filters: dict[str, list[str]],
    expect_drop: bool,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(CURRENT)
    reconciler = reconciler_for(project({"010.sql": DESIRED}, {"dev": {"dsn": dsn, **filters}}))
    sqls = reconciler.plan("dev").sqls
    assert 'alter table "public"."t" add column "name" text' in sqls
    assert any('drop table "other"."keep"' in s for s in sqls) is expect_drop
    result = reconciler.apply("dev")
    assert result.in_sync is (not expect_drop)
    assert run_sql(dsn, "select count(*) from information_schema.tables where table_schema = 'other'") == [(1,)]


ROLE_SQL = (
    "do $$ begin if not exists (select from pg_roles where rolname = 'reconciler_test_reader') then "
    "create role reconciler_test_reader; end if; end $$;"
)


@pytest.mark.parametrize("privileges", [True, False])
def test_privileges(
    privileges: bool,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(ROLE_SQL + "create table t (id int);")
    reconciler = reconciler_for(
        project(
            {"010.sql": "create table t (id int);\ngrant select on t to reconciler_test_reader;\n"},
            {"dev": {"dsn": dsn, "privileges": privileges}},
        )
    )
    plan = reconciler.plan("dev")
    assert plan.in_sync is (not privileges)
    if privileges:
        assert plan.sqls == ('grant select on table "public"."t" to "reconciler_test_reader"',)
        queued = reconciler.apply("dev").queued_plan_id  # a grant (AZ108) waits for a person by default
        assert queued is not None
        reconciler.approve(queued, "alice")
        assert reconciler.apply("dev").in_sync
        assert run_sql(dsn, "select has_table_privilege('reconciler_test_reader', 't', 'select')") == [(True,)]


def test_migra_grant_to_public_is_corrected(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    """migra writes GRANT ... TO "PUBLIC" (a role that does not exist, which vetting stopped); the plan grants to
    the PUBLIC pseudo-role instead, and converges."""
    dsn = make_db("create table t (id int);")
    reconciler = reconciler_for(
        project(
            {"010.sql": "create table t (id int);\ngrant select on t to public;\n"},
            {"dev": {"dsn": dsn, "privileges": True}},
        )
    )
    assert reconciler.plan("dev").sqls == ("GRANT SELECT ON TABLE public.t TO PUBLIC",)
    result = reconciler.apply("dev")  # a grant (AZ108) waits for a person by default
    assert result.vet is not None and result.vet.ok and result.queued_plan_id is not None
    reconciler.approve(result.queued_plan_id, "alice")
    assert reconciler.apply("dev").in_sync
    assert run_sql(dsn, "select has_table_privilege('public', 't', 'select')") == [(True,)]


def test_major_version_mismatch_is_refused() -> None:
    scratch = ScratchServer("postgresql://nobody@127.0.0.1:1/postgres")
    scratch._major = 15  # what the scratch server reported
    scratch.check_same_major("dev", 15)
    with pytest.raises(VersionMismatchError, match=r"'dev'.*PostgreSQL 16.*scratch server runs PostgreSQL 15"):
        scratch.check_same_major("dev", 16)
