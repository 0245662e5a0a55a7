"""Red team: desired-state files written by an attacker (``plan`` runs on pull-request branches in CI).

Each case is data: a desired-state file and the text of its refusal. Every one is refused with a
DesiredStateError naming the file and line, either by the allow-list before anything runs, or by PostgreSQL
because the build runs as an unprivileged role with timeouts. Afterwards the cluster has no new role, no file
was written, and the environment's rows and schema are what they were.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from reconciler.db import parse_dsn
from reconciler.errors import DesiredStateError
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.scratch import PREFIX
from reconciler.service import Reconciler
from tests.conftest import run_sql

ENV = "create table users (id int primary key, name text); insert into users values (1, 'ann'), (2, 'bob');"
MARKER = "{marker}"  # replaced by a file path in a folder anyone may write to
ENV_DB = "{env_db}"  # replaced by the environment's database name


@dataclass(frozen=True)
class Attack:
    name: str
    sql: str
    refusal: str  # a regular expression the error must match
    line: int


ATTACKS = [
    # -- refused by the allow-list, before anything runs --------------------------------------------------------
    Attack(
        "copy to program", f"create table t (id int);\ncopy t to program 'touch {MARKER}';", r"COPY is not allowed", 2
    ),
    Attack(
        "copy from program",
        f"create table t (id int);\ncopy t from program 'touch {MARKER}';",
        r"COPY is not allowed",
        2,
    ),
    Attack("create a superuser", "create role evil superuser login password 'x';", r"CREATE ROLE is not allowed", 1),
    Attack("grant a role", "grant pg_execute_server_program to public;", r"GRANT role is not allowed", 1),
    Attack("alter a role", "alter role current_user superuser;", r"ALTER ROLE is not allowed", 1),
    Attack(
        "dblink into the environment",
        "create extension dblink;\n"
        f"create materialized view m as select dblink_exec('dbname={ENV_DB}', 'delete from users') as r;",
        r"extension 'dblink' is not on the allow-list",
        1,
    ),
    Attack("postgres_fdw", "create extension postgres_fdw;", r"extension 'postgres_fdw' is not on the allow-list", 1),
    Attack("alter system", f"alter system set archive_command = 'touch {MARKER}';", r"ALTER SYSTEM is not allowed", 1),
    Attack("do block", "do $$ begin execute 'create role evil superuser'; end $$;", r"DO is not allowed", 1),
    Attack("call", "call public.p();", r"CALL is not allowed", 1),
    Attack("load a library", "load '/tmp/evil.so';", r"LOAD is not allowed", 1),
    Attack(
        "event trigger",
        "create function f() returns event_trigger language plpgsql as $$ begin end $$;\n"
        "create event trigger e on ddl_command_start execute function f();",
        r"CREATE EVENT TRIGGER is not allowed",
        2,
    ),
    Attack(
        "untrusted language",
        f"create function f() returns int language plpython3u as $$ import os; os.system('touch {MARKER}') $$;",
        r"functions in language 'plpython3u' are not allowed",
        1,
    ),
    Attack("untrusted language (C)", "create function f() returns int language c as 'libc', 'abort';", r"'c'", 1),
    Attack("create language", "create language plperlu;", r"'plperlu' is not on the allow-list", 1),
    Attack("select pg_sleep", "create table t (id int);\n\nselect pg_sleep(3600);", r"SELECT is not allowed", 3),
    Attack("select set_config", "select set_config('statement_timeout', '0', false);", r"SELECT is not allowed", 1),
    Attack("insert", "create table users (id int);\ninsert into users values (99);", r"INSERT is not allowed", 2),
    Attack("update", "update users set name = 'x';", r"UPDATE is not allowed", 1),
    Attack("delete", "delete from users;", r"DELETE is not allowed", 1),
    Attack("truncate", "truncate users;", r"TRUNCATE is not allowed", 1),
    Attack("create table as", "create table t as select 1 as x;", r"CREATE TABLE \.\.\. AS", 1),
    Attack("set role", "set role postgres;", r"changing setting 'role' is not allowed", 1),
    Attack("set session authorization", "set session authorization postgres;", r"'session_authorization'", 1),
    Attack("lift the timeout", "set statement_timeout = 0;", r"changing setting 'statement_timeout'", 1),
    Attack(
        "lift the timeout in a function",
        "create function f() returns int language sql set statement_timeout = 0 as 'select 1';",
        r"changing setting 'statement_timeout'",
        1,
    ),
    Attack("create database", "create database evil;", r"CREATE DATABASE is not allowed", 1),
    Attack("foreign server", "create server s foreign data wrapper x;", r"CreateForeignServer is not allowed", 1),
    # -- allowed statement types, refused by PostgreSQL: the build role is unprivileged ------------------------
    Attack(
        "copy to program from a function a materialized view runs",
        "create function f() returns int language plpgsql as $$ begin\n"
        f"  execute 'copy (select 1) to program ''touch {MARKER}''';\n  return 1;\nend $$;\n"
        "create materialized view m as select f() as x;",
        r"pg_execute_server_program|permission denied",
        5,
    ),
    Attack(
        "create a superuser from a function",
        "create function f() returns int language plpgsql as $$ begin\n"
        "  execute 'create role evil superuser'; return 1;\nend $$;\n"
        "create materialized view m as select f() as x;",
        r"must be superuser to create superusers|permission denied to create role",
        4,
    ),
    Attack(
        "write a file from a function",
        "create function f() returns int language plpgsql as $$ begin\n"
        f"  execute 'copy (select 1) to ''{MARKER}'''; return 1;\nend $$;\n"
        "create materialized view m as select f() as x;",
        r"pg_write_server_files|permission denied",
        4,
    ),
    Attack(
        "change a setting of the cluster from a function",
        "create function f() returns int language plpgsql as $$ begin\n"
        "  execute 'alter system set work_mem = ''1GB'''; return 1;\nend $$;\n"
        "create materialized view m as select f() as x;",
        r"ALTER SYSTEM cannot be executed from a function|permission denied",
        4,
    ),
    Attack(
        "read the environment through the catalog of another database",
        f"create materialized view m as select * from {ENV_DB}.public.users;",
        r"cross-database references are not implemented",
        1,
    ),
]


def _roles(pg: EmbeddedPostgres) -> set[str]:
    return {r[0] for r in run_sql(pg.dsn(), "select rolname from pg_roles") if not str(r[0]).startswith(PREFIX)}


@pytest.fixture()
def marker_dir() -> Iterator[Path]:
    """A folder the server's user could write to (pytest's own are 0700): a file appearing there is the attack's."""
    d = Path(tempfile.mkdtemp(prefix="reconciler-redteam-"))
    d.chmod(0o777)
    yield d
    shutil.rmtree(d, ignore_errors=True)


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_an_attacking_desired_file_is_refused_and_harms_nothing(
    attack: Attack,
    marker_dir: Path,
    pg_server: EmbeddedPostgres,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(ENV)
    env_db = parse_dsn(dsn)["dbname"]
    marker = marker_dir / "pwned"
    sql = attack.sql.replace(MARKER, str(marker)).replace(ENV_DB, env_db)
    roles = _roles(pg_server)
    reconciler = reconciler_for(project({"010_attack.sql": sql}, {"dev": {"dsn": dsn}}))
    with pytest.raises(DesiredStateError, match=attack.refusal) as caught:
        reconciler.plan("dev")
    assert f"010_attack.sql:{attack.line}" in str(caught.value)
    assert (caught.value.file, caught.value.line) == ("010_attack.sql", attack.line)
    assert _roles(pg_server) == roles
    assert not marker.exists()
    assert run_sql(dsn, "select id, name from users order by id") == [(1, "ann"), (2, "bob")]
    assert run_sql(pg_server.dsn(), "select count(*) from pg_database where datname = 'evil'") == [(0,)]
    assert run_sql(pg_server.dsn(), "select current_setting('work_mem')") != [("1GB",)]
    tables = "select table_name from information_schema.tables where table_schema = 'public'"
    assert run_sql(dsn, tables) == [("users",)]


def test_a_hanging_desired_file_times_out_naming_its_line(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(ENV)
    desired = "create table t (id int);\ncreate materialized view m as select 1 as x from pg_sleep(3600);\n"
    reconciler = reconciler_for(
        project(
            {"010_slow.sql": desired},
            {"dev": {"dsn": dsn}},
            sandbox={"share_cluster_with_environments": True, "statement_timeout": "1s"},
        )
    )
    started = time.monotonic()
    with pytest.raises(DesiredStateError, match=r"statement timeout at 010_slow\.sql:2 .*statement_timeout 1s"):
        reconciler.plan("dev")
    assert time.monotonic() - started < 15
    # The scratch lock is free again: the next build (of a fixed file) runs at once.
    fixed = project({"010_slow.sql": "create table users (id int primary key, name text);\n"}, {"dev": {"dsn": dsn}})
    started = time.monotonic()
    assert reconciler_for(fixed).plan("dev").in_sync
    assert time.monotonic() - started < 15


# -- an allowed extension the build role could not create (untrusted): the scratch admin creates it, nothing else --
EXTENSIONS_ALLOWED = ["postgres_fdw", "earthdistance"]  # earthdistance needs cube, which is not on the list
EXTENSION_ATTACKS = [
    Attack("an extension not on the list", "create extension dblink;", r"'dblink' is not on the allow-list", 1),
    Attack("cascade into one not on the list", "create extension earthdistance cascade;", r"CASCADE is not allowed", 1),
    Attack("require one not on the list", "create extension earthdistance;", r'required extension "cube"', 1),
    Attack("into a system schema", "create extension postgres_fdw schema pg_catalog;", r"SCHEMA pg_catalog", 1),
    Attack("an older version", "create extension postgres_fdw version '1.0';", r"VERSION/FROM is not allowed", 1),
    Attack(
        "a server on the allowed wrapper",
        "create extension postgres_fdw;\ncreate server s foreign data wrapper postgres_fdw;",
        r"CreateForeignServer is not allowed",
        2,
    ),
    Attack(
        "a server on the allowed wrapper from a function",
        "create extension postgres_fdw;\ncreate function f() returns int language plpgsql as $$ begin\n"
        "  execute 'create server s foreign data wrapper postgres_fdw'; return 1;\nend $$;\n"
        "create materialized view m as select f() as x;",
        r"permission denied for foreign-data wrapper postgres_fdw",
        5,
    ),
    Attack(
        "grant the allowed wrapper",
        "create extension postgres_fdw;\ngrant usage on foreign data wrapper postgres_fdw to public;",
        r"permission denied for foreign-data wrapper postgres_fdw",
        2,
    ),
    Attack(
        "an extension statement with another one",
        "create extension postgres_fdw; create role evil superuser;",
        r"CREATE ROLE is not allowed",
        1,
    ),
]


@pytest.mark.parametrize("attack", EXTENSION_ATTACKS, ids=[a.name for a in EXTENSION_ATTACKS])
def test_an_allowed_extension_cannot_be_used_to_escalate(
    attack: Attack,
    pg_server: EmbeddedPostgres,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(ENV)
    roles = _roles(pg_server)
    sandbox = {"share_cluster_with_environments": True, "extensions_allowed": EXTENSIONS_ALLOWED}
    reconciler = reconciler_for(project({"010_attack.sql": attack.sql}, {"dev": {"dsn": dsn}}, sandbox=sandbox))
    with pytest.raises(DesiredStateError, match=attack.refusal) as caught:
        reconciler.plan("dev")
    assert (caught.value.file, caught.value.line) == ("010_attack.sql", attack.line)
    assert _roles(pg_server) == roles
    assert run_sql(pg_server.dsn(), "select count(*) from pg_foreign_server") == [(0,)]


def test_an_allowed_untrusted_extension_is_built(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(ENV)
    sandbox = {"share_cluster_with_environments": True, "extensions_allowed": EXTENSIONS_ALLOWED}
    desired = "create extension postgres_fdw;\n" + ENV.split(" insert")[0]
    plan = reconciler_for(project({"010_schema.sql": desired}, {"dev": {"dsn": dsn}}, sandbox=sandbox)).plan("dev")
    assert [s.sql.split(" with ")[0] for s in plan.statements] == ['create extension if not exists "postgres_fdw"']


# -- policy tests: their queries come from the same authors -----------------------------------------------------
# Refused when the test file is read, before anything runs: (query, the case's role, text of the refusal).
REFUSED_CASE_QUERIES = [
    ("reset role; create role evil superuser", None, "exactly one statement"),
    ("reset role", None, "VariableSetStmt is refused"),
    ("create role evil superuser login", None, "CreateRoleStmt is refused"),
    (f"copy (select 1) to program 'touch {MARKER}'", None, "CopyStmt is refused"),
    ("set session authorization default", None, "VariableSetStmt is refused"),
    ("set role postgres", "anon_reader", "VariableSetStmt is refused"),
    ("select 1 as x into evil_table", None, "SelectStmt INTO is refused"),
    ("do $$ begin create role evil superuser; end $$", None, "DoStmt is refused"),
]
ADMIN = "{admin}"  # replaced by the scratch admin's role name
# Allowed shapes that would succeed only with privileges the case session lacks: each fails, nothing changes.
CONFINED_CASE_QUERIES = [
    ("escalate through set_config", f"select set_config('role', '{ADMIN}', true)", None),
    ("act as the admin role", "select 1", ADMIN),
    ("read a server file", "select pg_read_file('PG_VERSION')", None),
    ("write a server file", f"select lo_export(lo_from_bytea(0, 'x'), '{MARKER}')", None),
    ("reach another database through dblink", "select * from dblink('dbname=postgres', 'select 1') as t(x int)", None),
    ("escalate as the owner", f"select set_config('session_authorization', '{ADMIN}', true)", None),
]
POLICY_DESIRED = "create table notes (id int primary key, body text);\nalter table notes enable row level security;\n"


def _policy_config(tmp_path: Path, pg: EmbeddedPostgres) -> Path:
    import yaml

    cfg = {
        "desired_state": str(tmp_path / "desired"),
        "scratch": pg.dsn("postgres"),
        "sandbox": {"share_cluster_with_environments": True},
        "state": "sqlite:///state.db",
        "environments": {},
    }
    (tmp_path / "desired").mkdir(exist_ok=True)
    (tmp_path / "desired" / "010_notes.sql").write_text(POLICY_DESIRED)
    path = tmp_path / "reconciler.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.mark.parametrize(("query", "role", "refusal"), REFUSED_CASE_QUERIES, ids=[q[0] for q in REFUSED_CASE_QUERIES])
def test_a_policy_case_query_of_another_shape_is_refused(
    query: str, role: str | None, refusal: str, tmp_path: Path, marker_dir: Path
) -> None:
    from reconciler.errors import PolicyTestFileError
    from reconciler.policytests import load_suite

    case = {"name": "attack", "query": query.replace(MARKER, str(marker_dir / "pwned")), "count": 1}
    if role:
        case["role"] = role
    path = tmp_path / "attack.yaml"
    import yaml

    path.write_text(yaml.safe_dump({"cases": [case]}))
    with pytest.raises(PolicyTestFileError, match=refusal):
        load_suite(path)


def test_policy_case_queries_cannot_escalate_from_their_session(
    tmp_path: Path, marker_dir: Path, pg_server: EmbeddedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    import json

    import yaml

    from reconciler.cli import main

    admin = parse_dsn(pg_server.dsn())["user"]
    marker = marker_dir / "pwned"
    cases = [
        {"name": name, "query": q.replace(ADMIN, admin).replace(MARKER, str(marker)), "count": 1}
        | ({"role": role.replace(ADMIN, admin)} if role else {})
        for name, q, role in CONFINED_CASE_QUERIES
    ]
    tests = tmp_path / "attack.yaml"
    tests.write_text(yaml.safe_dump({"cases": cases}))
    roles = _roles(pg_server)
    assert main(["-c", str(_policy_config(tmp_path, pg_server)), "test-policies", str(tests), "--format", "json"]) == 1
    out = capsys.readouterr()
    assert out.out, out.err
    results = {c["case"]: c for c in json.loads(out.out)["cases"]}
    assert [n for n, c in results.items() if c["passed"]] == []
    for name, result in results.items():
        assert "permission denied" in result["message"] or "does not exist" in result["message"], name
    assert _roles(pg_server) == roles
    assert not marker.exists()
