"""Vetting starts from a template of the environment's clone while its schema fingerprint is unchanged: no second
pg_dump, the same verdict; a changed fingerprint rebuilds the template and drops the old one."""

from __future__ import annotations

import shlex
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from conftest import run_sql

from reconciler.catalog import describe
from reconciler.config import EnvironmentConfig
from reconciler.diff import diff
from reconciler.drift import describe_options, plan_statements
from reconciler.inspect import inspect_database
from reconciler.pgembedded import EmbeddedPostgres, find_bin_dir
from reconciler.scratch import PREFIX, ScratchServer
from reconciler.vet import vet_plan

TEMPLATES = "select datname from pg_database where starts_with(datname, %s) and not datallowconn order by 1"


def counting_pg_dump(folder: Path) -> tuple[Path, Path]:
    """A pg_dump that writes a line to a file each time it runs, then runs the real one."""
    calls = folder / "pg_dump.calls"
    script = folder / "pg_dump"
    real = shlex.quote(str(find_bin_dir() / "pg_dump"))
    script.write_text(f'#!/bin/sh\necho run >> {shlex.quote(str(calls))}\nexec {real} "$@"\n')
    script.chmod(0o755)
    return script, calls


def templates(admin: str) -> list[str]:
    with psycopg.connect(admin, autocommit=True) as conn:
        return [r[0] for r in conn.execute(TEMPLATES, (PREFIX,))]


def test_an_unchanged_environment_is_vetted_from_its_template_and_a_change_rebuilds_it(
    pg_server: EmbeddedPostgres, make_db: Callable[..., str], tmp_path: Path
) -> None:
    env_dsn = make_db(
        "create table t (id int primary key); create table u (id int); create view v as select id from t;"
    )
    desired = inspect_database(
        make_db("create table t (id int primary key, note text); create view v as select id from t;"), what="test"
    )
    sqls = diff(inspect_database(env_dsn, what="test"), desired)
    env = EnvironmentConfig(dsn=env_dsn)
    pg_dump, calls = counting_pg_dump(tmp_path)
    admin = pg_server.dsn("postgres")
    scratch = ScratchServer(admin)
    try:
        first = vet_plan(scratch, env_dsn, env, desired, [], sqls, pg_dump)
        assert first.ok, first.describe()
        [template] = templates(admin)
        second = vet_plan(scratch, env_dsn, env, desired, [], sqls, pg_dump)
        assert second == first
        assert len(calls.read_text().splitlines()) == 1  # the second clone is a copy of the template
        assert templates(admin) == [template]
        with pytest.raises(psycopg.OperationalError, match="not currently accepting connections"):
            psycopg.connect(pg_server.dsn(template)).close()

        run_sql(env_dsn, "create table w (id int);")  # the fingerprint changes: the old template is stale
        third = vet_plan(scratch, env_dsn, env, desired, [], sqls, pg_dump)
        assert not third.ok and any("w" in r for r in third.residue)  # the clone has the new table
        assert len(calls.read_text().splitlines()) == 2
        [rebuilt] = templates(admin)
        assert rebuilt != template
    finally:
        scratch.close()
    assert templates(admin) == []


# Default privileges of the environment's owner, restored in the template as its build role's: a copy's build role
# takes them over, so the objects a replayed plan creates get them, as in the desired build.
DEFAULT_PRIVILEGES = [
    "alter default privileges grant select on tables to public;",
    "create schema app; alter default privileges in schema app grant select, insert on tables to public;",
    "alter default privileges revoke execute on functions from public;",
    "alter default privileges grant usage on sequences to vet_reader with grant option;",
]


@pytest.mark.parametrize("granted", DEFAULT_PRIVILEGES, ids=["tables", "in schema", "revoked", "grant option"])
def test_a_template_with_default_privileges_is_kept_and_its_copies_converge(
    granted: str, pg_server: EmbeddedPostgres, make_db: Callable[..., str]
) -> None:
    current = granted + " create table t (id int);"
    wanted = current + (
        " create table t2 (id int); create sequence s2; create function f2() returns int language sql as 'select 1';"
    )
    if "app" in granted:
        wanted += " create table app.t3 (id int);"
    run_sql(admin := pg_server.dsn("postgres"), "drop role if exists vet_reader; create role vet_reader")
    env_dsn = make_db(current)
    desired_dsn = make_db(wanted)
    desired = inspect_database(desired_dsn, what="test")
    env = EnvironmentConfig(dsn=env_dsn, privileges=True)
    options = describe_options(env)
    wanted_rows = describe(desired_dsn, options, what="test")
    current_rows = describe(env_dsn, options, what="test")
    sqls = plan_statements(inspect_database(env_dsn, what="test"), desired, current_rows, wanted_rows, privileges=True)
    scratch = ScratchServer(admin)
    try:
        first = vet_plan(scratch, env_dsn, env, desired, [], sqls, find_bin_dir() / "pg_dump", wanted=wanted_rows)
        assert first.ok, first.describe()
        [template] = templates(admin)  # kept, default privileges and all
        second = vet_plan(scratch, env_dsn, env, desired, [], sqls, find_bin_dir() / "pg_dump", wanted=wanted_rows)
        assert second.ok, second.describe()
        assert templates(admin) == [template]
    finally:
        scratch.close()
