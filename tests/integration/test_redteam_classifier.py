"""Red team: each attack on the classifier, replayed on a real PostgreSQL, is refused, waits for a person, or leaves
the environment untouched. Cases are data.

Attackers: the authors of desired-state files (a pull request) and the contents of an environment. Each case names
what must hold afterwards with a probe query whose answer must not change.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from conftest import run_sql

from reconciler import hazards
from reconciler.apply import apply_statements, execute_steps
from reconciler.config import EnvironmentConfig
from reconciler.db import connect
from reconciler.errors import ApplyError, ReconcilerError, UnsafeSqlError
from reconciler.hazards.phases import order_phases
from reconciler.model import (
    Decision,
    ExecStep,
    QualifiedName,
    TableStats,
    statement_phases,
    transaction_units,
)
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.planning import classify
from reconciler.service import Reconciler
from reconciler.stats import read_figures

SEED = """
create table public.audit (id int primary key, note text);
insert into public.audit select g, 'kept' from generate_series(1, 5) g;
create table public.t (id int primary key, v int);
insert into public.t select g, g from generate_series(1, 5) g;
analyze public.audit; analyze public.t;
"""
WIPE = (
    "create function public.wipe() returns int language plpgsql as $$ begin delete from public.audit; return 1; end $$;"
)
AUDIT_ROWS = "select count(*) from public.audit"


@dataclass(frozen=True)
class Attack:
    name: str
    current: str  # the environment before (seeded with SEED)
    desired: str  # the whole desired state, as the attacker wrote it
    outcome: str  # "refused" | "needs_approval"
    codes: tuple[str, ...]  # hazards that must stop it (needs_approval)
    probe: str = AUDIT_ROWS  # its answer must be the same after the unattended apply


# The desired state always keeps the seeded tables; each attack adds or removes its part.
KEEP = """
create table public.audit (id int primary key, note text);
create table public.t (id int primary key, v int);
"""
WIPE_X = WIPE.replace("plpgsql", "plpgsql immutable").replace("wipe()", "wipe(x int)").replace("return 1", "return x")
DISCARD = "create function public.discard() returns trigger language plpgsql as $$ begin return null; end $$;"
RLS = "alter table public.t enable row level security;"
ADMIN = "create schema auth; create function auth.is_admin() returns boolean language sql as 'select {}';"
ADMINS_POLICY = "create policy admins on public.t using (auth.is_admin());"
ROLE_OF = "create schema auth; create function auth.role_of() returns text language sql as $$ select '{}' $$;"
INDIRECT_ADMIN = (
    "create function auth.is_admin() returns boolean language sql as $$ select auth.role_of() = 'admin' $$;"
)
PLPGSQL_ADMIN = (
    "create function auth.is_admin() returns boolean language plpgsql as "
    "$$ begin return auth.role_of() = 'admin'; end $$;"
)
STANDARD_ADMIN = (  # a SQL-standard body: PostgreSQL keeps it parsed, with an empty prosrc
    "create function auth.is_admin() returns boolean language sql stable begin atomic "
    "select auth.role_of() = 'admin'; end;"
)
OWNS = (
    "create schema auth; create function auth.owns(a text, b text) returns boolean language sql as 'select {}';"
    "create operator auth.=== (function = auth.owns, leftarg = text, rightarg = text);"
)
OWNS_POLICY = RLS + "create policy own on public.t using ((v::text) operator(auth.===) current_user);"
# (name, the guarded function's definition, its body before, after, the rest of the schema, probe): the changed
# function is reached from a policy through another function or an operator.
GUARDS_REACHED = [
    ("function that a policy reaches through another function changed", ROLE_OF, "user", "admin",
     INDIRECT_ADMIN + RLS + ADMINS_POLICY, "select auth.is_admin()"),
    ("function that a policy reaches through a PL/pgSQL function changed", ROLE_OF, "user", "admin",
     PLPGSQL_ADMIN + RLS + ADMINS_POLICY, "select auth.is_admin()"),
    ("function that a policy reaches through a SQL-standard function changed", ROLE_OF, "user", "admin",
     STANDARD_ADMIN + RLS + ADMINS_POLICY, "select auth.is_admin()"),
    ("function behind an operator that a policy uses changed", OWNS, "a = b", "true", OWNS_POLICY,
     "select auth.owns('x', 'y')"),
]  # fmt: skip

ATTACKS = [
    Attack(
        "materialized view WITH DATA calling a function that deletes",
        "",
        KEEP + WIPE + " create materialized view public.m as select public.wipe() as w;",
        "needs_approval",
        ("CX103",),
    ),
    Attack(
        "column default calling a user function on a table with rows",
        WIPE,
        KEEP + WIPE + " alter table public.t add column w int default public.wipe();",
        "needs_approval",
        ("CX104",),
    ),
    Attack(
        "expression index calling a user function",
        WIPE_X,
        KEEP + WIPE_X + " create index t_w on public.t (public.wipe(v));",
        "needs_approval",
        ("CX104",),
    ),
    Attack(
        "trigger that discards writes",
        DISCARD,
        KEEP
        + DISCARD
        + " create trigger t_discard before insert on public.t for each row execute function public.discard();",
        "needs_approval",
        ("CX102",),
        "select count(*) from pg_trigger where tgname = 't_discard'",
    ),
    Attack(
        "function body changed",
        "create function public.f() returns int language sql as 'select 1';",
        KEEP + "create function public.f() returns int language sql as 'select 2';",
        "needs_approval",
        ("CX101",),
        "select public.f()",
    ),
    Attack(
        "SQL-standard function body changed",
        "create function public.f() returns int language sql return 1;",
        KEEP + "create function public.f() returns int language sql return 2;",
        "needs_approval",
        ("CX101",),
        "select public.f()",
    ),
    Attack(
        "function a policy uses changed to return true",
        ADMIN.format("false") + RLS + ADMINS_POLICY,
        KEEP + ADMIN.format("true") + RLS + ADMINS_POLICY,
        "needs_approval",
        ("AZ113",),
        "select auth.is_admin()",
    ),
    *(
        Attack(name, before.format(old) + rest, KEEP + before.format(new) + rest, "needs_approval", ("AZ113",), probe)
        for name, before, old, new, rest, probe in GUARDS_REACHED
    ),
    Attack(
        "permissive policy USING (true)",
        RLS,
        KEEP + RLS + "create policy everyone on public.t using (true);",
        "needs_approval",
        ("AZ114",),
        "select count(*) from pg_policies where policyname = 'everyone'",
    ),
    Attack(
        "constraint dropped",
        "alter table public.t add constraint v_positive check (v > 0);",
        KEEP,
        "needs_approval",
        ("PR101",),
        "select count(*) from pg_constraint where conname = 'v_positive'",
    ),
    Attack(
        "NOT NULL dropped",
        "alter table public.t alter column v set not null;",
        KEEP,
        "needs_approval",
        ("PR106",),
        "select attnotnull from pg_attribute where attrelid = 'public.t'::regclass and attname = 'v'",
    ),
    Attack(
        "view security_invoker quietly removed",
        "create view public.tv with (security_invoker) as select id from public.t;",
        KEEP + "create view public.tv as select id from public.t;",
        "needs_approval",
        ("AZ116",),
        "select reloptions::text from pg_class where oid = 'public.tv'::regclass",
    ),
    Attack(
        "enum label breaking out of its quotes",
        "create type public.mood as enum ('a');" + RLS,
        KEEP
        + RLS
        + "create type public.mood as enum ('a', 'z''); alter table public.t disable row level security; --');",
        "refused",
        (),
        "select relrowsecurity from pg_class where oid = 'public.t'::regclass",
    ),
]


@pytest.mark.parametrize("attack", ATTACKS, ids=[a.name for a in ATTACKS])
def test_attack_is_stopped(
    attack: Attack,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    dsn = make_db(SEED + attack.current)
    before = run_sql(dsn, attack.probe), run_sql(dsn, AUDIT_ROWS)
    reconciler = reconciler_for(project({"010_schema.sql": attack.desired}, {"dev": {"dsn": dsn}}))
    if attack.outcome == "refused":
        with pytest.raises(UnsafeSqlError, match="unescaped"):
            reconciler.apply("dev")
    else:
        plan = reconciler.plan("dev")
        stopped = {h.code for s in plan.statements if s.decision is not Decision.AUTO for h in s.hazards}
        assert set(attack.codes) <= stopped, [(s.sql, s.hazard_codes, s.decision) for s in plan.statements]
        result = reconciler.apply("dev")
        assert result.queued_plan_id is not None
    assert (run_sql(dsn, attack.probe), run_sql(dsn, AUDIT_ROWS)) == before


def test_the_executor_never_sends_two_statements_in_one_string(make_db: Callable[..., str]) -> None:
    dsn = make_db("create table public.t (id int)")
    env = EnvironmentConfig(dsn=dsn)
    with pytest.raises(ApplyError, match="cannot insert multiple commands"):
        apply_statements(dsn, ["select 1; drop table public.t"], env, what="applying")
    assert run_sql(dsn, "select to_regclass('public.t') is not null") == [(True,)]


def test_a_session_whose_parse_settings_differ_is_refused(make_db: Callable[..., str]) -> None:
    dsn = make_db("create table public.t (id int)")
    env = EnvironmentConfig(dsn=dsn)
    with connect(dsn, what="test", autocommit=True) as conn:
        conn.execute(b"set standard_conforming_strings = off")
        with pytest.raises(UnsafeSqlError, match="standard_conforming_strings"):
            execute_steps(conn, [ExecStep("drop table public.t")], env)
    assert run_sql(dsn, "select to_regclass('public.t') is not null") == [(True,)]


RESTRICTED = """
create table public.secrets (id int primary key, owner text);
insert into public.secrets values (1, 'a'), (2, 'b'), (3, 'c'), (4, 'x');
alter table public.secrets enable row level security;
create policy readable on public.secrets as permissive for select using (true);
create policy only_own on public.secrets as restrictive for select using (owner <> 'x');
"""


def test_a_failure_between_a_policy_drop_and_its_re_create_keeps_the_policy(make_db: Callable[..., str]) -> None:
    dsn = make_db(RESTRICTED)
    env = EnvironmentConfig(dsn=dsn, production=True, lock_retries=0, statement_timeout=timedelta(seconds=30))
    sqls = [
        'drop policy "only_own" on "public"."secrets"',
        'create index "secrets_missing" on "public"."secrets" using btree ("no_such_column")',  # fails
        'create policy "only_own" on "public"."secrets" as restrictive for select using ((owner <> \'y\'))',
    ]
    large = TableStats(rows=50_000_000, bytes=20 * 1024**3, heap_bytes=19 * 1024**3)
    statements = classify(sqls, env, {QualifiedName("public", "secrets"): large})
    assert all(step.transactional for s in statements for step in s.execution())
    with pytest.raises(ReconcilerError):
        apply_statements(dsn, [step for s in statements for step in s.execution()], env, what="applying")
    assert run_sql(dsn, "select count(*) from pg_policies where policyname = 'only_own'") == [(1,)]


def test_a_pair_runs_under_one_decision() -> None:
    env = EnvironmentConfig(dsn="postgresql://x/y")
    sqls = [
        'drop trigger if exists "tr" on "public"."t"',
        'create trigger "tr" before insert on "public"."t" for each row execute function public.f()',
    ]
    decisions = [s.decision for s in classify(sqls, env, {})]
    assert decisions == [Decision.NEEDS_APPROVAL, Decision.NEEDS_APPROVAL]


# A desired-state author names a schema or a table with a dot in it, so that as a dotted string an empty object's
# name is the same as a big one's: "a.b".c and a."b.c" are both "a.b.c". Figures are keyed by (schema, name), so a
# statement on the table with rows is still judged by its own figures, and one on the empty table by its own.
ALIASING = """
create schema "a.b"; create schema a;
create table "a.b".c (id int primary key, v int);
insert into "a.b".c select g, case when g % 2 = 0 then null else g end from generate_series(1, 2000) g;
create table a."b.c" (id int primary key, v int);
create schema "x"; create table x."Y" (v int); insert into x."Y" values (1);
create table x.y (v int);
analyze "a.b".c; analyze a."b.c"; analyze x."Y"; analyze x.y;
"""


@dataclass(frozen=True)
class Alias:
    sql: str
    table: str  # the text of the (schema, name) the statement touches, as the plan stores it
    rows: bool  # whether that table holds rows in the environment
    codes: tuple[str, ...]  # hazards the statement must get (none on the empty table)


ALIASES = [
    Alias('alter table "a.b"."c" alter column "v" set not null', '"a.b".c', True, ("MF104",)),
    Alias('alter table "a"."b.c" alter column "v" set not null', 'a."b.c"', False, ()),
    Alias('alter table "a.b"."c" add column "w" int not null', '"a.b".c', True, ("MF101",)),
    Alias('alter table "x"."Y" alter column "v" set not null', 'x."Y"', True, ("MF104",)),
    Alias('alter table "x"."y" alter column "v" set not null', "x.y", False, ()),
    Alias('drop table "a.b"."c"', '"a.b".c', True, ("DS102",)),
]


@pytest.fixture(scope="module")
def aliasing_env(pg_server: EmbeddedPostgres) -> Iterator[str]:
    dsn = pg_server.create_database("redteam_aliasing")
    run_sql(dsn, ALIASING)
    yield dsn
    run_sql(pg_server.dsn(), 'drop database if exists "redteam_aliasing" with (force)')


@pytest.mark.parametrize("case", ALIASES, ids=[a.sql for a in ALIASES])
def test_an_aliasing_schema_or_table_name_does_not_borrow_figures(aliasing_env: str, case: Alias) -> None:
    parsed = hazards.parse_plan([case.sql])
    figures = read_figures(
        aliasing_env, hazards.affected_relations(parsed), hazards.changed_functions(parsed), what="reading"
    )
    [statement] = classify([case.sql], EnvironmentConfig(dsn=aliasing_env), figures=figures)
    assert list(statement.tables) == [case.table]
    assert (statement.tables[case.table].rows or 0) > 0 if case.rows else statement.tables[case.table].empty
    found = {h.code for h in statement.hazards}
    assert set(case.codes) <= found
    if not case.rows:
        assert not found & {"MF101", "MF104"}
    else:
        assert statement.decision is not Decision.AUTO


# A concurrent index build cannot roll back with its neighbours: between a policy and a trigger it would split
# their unit, and its failure would leave the policy without the trigger. It runs after every transactional unit.
DUPLICATES = """
create table public.accounts (id int primary key, email text, owner text);
insert into public.accounts select g, 'same@x', 'o' || g from generate_series(1, 50) g;
create function public.stamp() returns trigger language plpgsql as $$ begin return new; end $$;
analyze public.accounts;
"""
PHASED = [
    'alter table "public"."accounts" enable row level security',
    'create policy "own" on "public"."accounts" as permissive for all to public using ((owner = current_user))',
    'create unique index "accounts_email_key" on "public"."accounts" using btree ("email")',  # meets duplicates
    'create trigger "stamp" before update on "public"."accounts" for each row execute function public.stamp()',
    'grant select on table "public"."accounts" to public',
]


def test_a_failing_concurrent_index_build_runs_after_every_transactional_unit(make_db: Callable[..., str]) -> None:
    dsn = make_db(DUPLICATES)
    env = EnvironmentConfig(dsn=dsn, production=True, lock_retries=0, statement_timeout=timedelta(seconds=30))
    figures = read_figures(dsn, [QualifiedName("public", "accounts")], [], what="reading")
    ordered = order_phases(classify(PHASED, env, figures=figures))
    assert [s.sql for s in ordered] == [*PHASED[:2], *PHASED[3:], PHASED[2]]
    assert statement_phases(ordered) == ["transactional"] * 4 + ["after"]
    assert transaction_units(ordered) == [(1,), (1,), (1,), (1,), (2,)]
    with pytest.raises(ReconcilerError):
        apply_statements(dsn, [step for s in ordered for step in s.execution()], env, what="applying")
    facts = """
    select (select relrowsecurity from pg_class where oid = 'public.accounts'::regclass),
           (select count(*) from pg_policies where policyname = 'own'),
           (select count(*) from pg_trigger where tgname = 'stamp'),
           has_table_privilege('public', 'public.accounts', 'select')
    """
    assert run_sql(dsn, facts) == [(True, 1, 1, True)]
