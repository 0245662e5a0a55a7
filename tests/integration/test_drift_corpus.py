"""The drift corpus: pairs of schemas that differ in what migra does not see, as data.

Each case: the environment's DDL, the desired DDL and the expected outcome: ``CONVERGES`` (the plan is applied,
approved if it must be; the re-plan is in sync and ``pg_dump --schema-only`` of the environment and of the desired
build are equal after the documented normalisation), or the kind of unmanaged drift that remains. In no case is a
plan ``in_sync`` while the two dumps differ.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from drift_helpers import CONVERGES, PLAN_WAITS, Case, check_case, ensure_reader

from reconciler.pgembedded import EmbeddedPostgres
from reconciler.service import Reconciler

KEEP = "create table keep (id int);"  # a desired state both sides share


T = "create table t (id int primary key, v text);"
V = T + " create view v as select id, v from t;"
S = "create sequence s;"
F = "create function f(a int) returns int language sql as 'select a';"
RLS = T + " alter table t enable row level security;"

CASES = [
    # a view's options
    Case("security_invoker added", V, T + " create view v with (security_invoker) as select id, v from t;", CONVERGES),
    Case(
        "security_invoker removed", T + " create view v with (security_invoker) as select id, v from t;", V, CONVERGES
    ),
    Case("security_barrier added", V, T + " create view v with (security_barrier) as select id, v from t;", CONVERGES),
    Case(
        "check_option added",
        V,
        T + " create view v as select id, v from t with local check option;",
        CONVERGES,
    ),
    Case(
        "options on a view migra recreates",
        T + " create view v with (security_invoker) as select id from t;",
        T + " create view v with (security_invoker) as select id, v from t;",
        CONVERGES,
    ),
    # FORCE ROW LEVEL SECURITY
    Case("force rls added", RLS, RLS + " alter table t force row level security;", CONVERGES),
    Case("force rls removed", RLS + " alter table t force row level security;", RLS, CONVERGES),
    Case("force rls on a new table", "", RLS + " alter table t force row level security;", CONVERGES),
    Case(
        "force rls beside a policy",
        RLS,
        RLS + " create policy p on t using (id > 0); alter table t force row level security;",
        CONVERGES,
    ),
    Case(
        "force rls on a partitioned table",
        "create table pt (id int) partition by range (id); alter table pt enable row level security;",
        "create table pt (id int) partition by range (id); alter table pt enable row level security;"
        " alter table pt force row level security;",
        CONVERGES,
    ),
    # grants on views, sequences, functions, columns
    Case("grant on a view", V, V + " grant select on v to drift_reader;", CONVERGES),
    Case("revoke on a view", V + " grant select on v to drift_reader;", V, CONVERGES),
    Case("grant on a sequence", S, S + " grant usage on sequence s to drift_reader;", CONVERGES),
    Case("execute revoked from public", F, F + " revoke execute on function f(int) from public;", CONVERGES),
    Case("column grant", T, T + " grant select (v) on t to drift_reader;", CONVERGES),
    # default privileges
    Case(
        "default privileges on tables",
        T,
        T + " alter default privileges grant select on tables to drift_reader;",
        CONVERGES,
    ),
    Case(
        "default privileges in a schema",
        "create schema app;",
        "create schema app; alter default privileges in schema app grant select on tables to drift_reader;",
        CONVERGES,
    ),
    Case(
        "default privileges on functions revoked",
        F,
        F + " alter default privileges revoke execute on functions from public;",
        CONVERGES,
    ),
    Case(
        "default privileges on sequences",
        S,
        S + " alter default privileges grant usage on sequences to drift_reader;",
        CONVERGES,
    ),
    Case(
        "default privileges with grant option, and a new sequence",
        S + " alter default privileges grant usage on sequences to drift_reader with grant option;",
        S + " alter default privileges grant usage on sequences to drift_reader with grant option; create sequence s2;",
        CONVERGES,
    ),
    Case(
        "grant to PUBLIC on a new table", T, T + " create table t2 (id int); grant select on t2 to public;", CONVERGES
    ),
    Case(
        "default privileges removed",
        T + " alter default privileges grant select on tables to drift_reader;",
        T,
        CONVERGES,
    ),
    # comments
    Case("comment on a table", T, T + " comment on table t is 'people';", CONVERGES),
    Case(
        "comment on a column changed",
        T + " comment on column t.v is 'a';",
        T + " comment on column t.v is 'b';",
        CONVERGES,
    ),
    Case("comment removed", T + " comment on table t is 'x';", T, CONVERGES),
    Case("comment on a function", F, F + " comment on function f(int) is 'it''s f';", CONVERGES),
    Case("comment on a new view", T, V + " comment on view v is 'the view';", CONVERGES),
    Case("comment on a constraint", T, T + " comment on constraint t_pkey on t is 'pk';", CONVERGES),
    Case("comment on a schema", "create schema app;", "create schema app; comment on schema app is 'app';", CONVERGES),
    # aggregates
    Case(
        "aggregate added",
        "",
        "create aggregate mysum(int) (sfunc = int4pl, stype = int);",
        CONVERGES,
    ),
    Case(
        "aggregate initcond changed",
        "create aggregate mysum(int) (sfunc = int4pl, stype = int);",
        "create aggregate mysum(int) (sfunc = int4pl, stype = int, initcond = '0');",
        CONVERGES,
    ),
    Case("aggregate dropped", "create aggregate mysum(int) (sfunc = int4pl, stype = int);", "", CONVERGES),
    Case(
        "aggregate given a moving-aggregate mode",
        "create aggregate mysum(int) (sfunc = int4pl, stype = int);",
        "create aggregate mysum(int) (sfunc = int4pl, stype = int, msfunc = int4pl, minvfunc = int4mi, mstype = int);",
        "aggregate",
    ),
    Case(
        "aggregate sort operator removed",
        "create aggregate mymax(int) (sfunc = int4larger, stype = int, sortop = >);",
        "create aggregate mymax(int) (sfunc = int4larger, stype = int);",
        CONVERGES,  # CREATE OR REPLACE AGGREGATE without the option takes it away
    ),
    Case(
        "aggregate comment",
        "create aggregate mysum(int) (sfunc = int4pl, stype = int);",
        "create aggregate mysum(int) (sfunc = int4pl, stype = int); comment on aggregate mysum(int) is 'sum';",
        CONVERGES,
    ),
    Case(
        "aggregate execute revoked",
        "create aggregate mysum(int) (sfunc = int4pl, stype = int);",
        "create aggregate mysum(int) (sfunc = int4pl, stype = int); revoke execute on function mysum(int) from public;",
        CONVERGES,
    ),
    # collations
    Case(
        "collation comment",
        "create collation c1 (locale = 'C');",
        "create collation c1 (locale = 'C'); comment on collation c1 is 'c';",
        CONVERGES,
    ),
    Case(
        "collation comment removed",
        "create collation c1 (locale = 'C'); comment on collation c1 is 'c';",
        "create collation c1 (locale = 'C');",
        CONVERGES,
    ),
    Case("collation added", "", "create collation c1 (locale = 'C');", CONVERGES),
    Case("collation dropped", "create collation c1 (locale = 'C');", "", CONVERGES),
    Case(
        "comment on a new collation",
        "",
        "create collation c1 (locale = 'C'); comment on collation c1 is 'c';",
        CONVERGES,
    ),
    Case(
        "collation changed",
        "create collation c1 (locale = 'C');",
        "create collation c1 (provider = icu, locale = 'und');",
        PLAN_WAITS,  # migra writes locale = 'None'
        needs_icu=True,
    ),
    # replica identity
    Case("replica identity full", T, T + " alter table t replica identity full;", CONVERGES),
    Case("replica identity nothing", T, T + " alter table t replica identity nothing;", CONVERGES),
    Case("replica identity back to default", T + " alter table t replica identity full;", T, CONVERGES),
    Case(
        "replica identity using index",
        T + " create unique index t_v on t (v); alter table t alter column v set not null;",
        T + " create unique index t_v on t (v); alter table t alter column v set not null;"
        " alter table t replica identity using index t_v;",
        CONVERGES,
    ),
    Case("replica identity on a new table", "", T + " alter table t replica identity full;", CONVERGES),
    # sequences
    Case("sequence as smallint", S, "create sequence s as smallint;", CONVERGES),
    Case("sequence increment", S, "create sequence s increment by 5;", CONVERGES),
    Case("sequence cycle", S, "create sequence s cycle;", CONVERGES),
    Case(
        "sequence limits and cache",
        "create sequence s cycle;",
        "create sequence s minvalue 0 maxvalue 90 cache 3;",
        CONVERGES,
    ),
    Case("sequence owned by", T + S, T + S + " alter sequence s owned by t.id;", CONVERGES),
    Case("sequence no longer owned", T + S + " alter sequence s owned by t.id;", T + S, CONVERGES),
    # domains
    Case("domain added", "", "create domain pos as int check (value > 0);", CONVERGES),
    Case(
        "domain check changed",
        "create domain pos as int check (value > 0);",
        "create domain pos as int check (value > 1);",
        CONVERGES,
    ),
    Case("domain not null", "create domain pos as int;", "create domain pos as int not null;", CONVERGES),
    Case("domain default", "create domain pos as int;", "create domain pos as int default 1;", CONVERGES),
    Case(
        "domain outside the search path",
        "create schema app;",
        "create schema app; create domain app.pos as int check (value > 0);",
        CONVERGES,
    ),
    Case("domain dropped", "create domain pos as int not null;", "", CONVERGES),
    Case("table of a new domain", "", "create domain pos as int; create table t (id pos);", CONVERGES),
    Case("domain base type changed", "create domain pos as int;", "create domain pos as bigint;", "domain"),
    # a changed policy: ALTER POLICY, so the table never goes without it; a new command or permissiveness: drop and
    # create
    Case(
        "policy using changed",
        RLS + " create policy p on t using (id > 0);",
        RLS + " create policy p on t using (id > 1);",
        CONVERGES,
        plan_has="ALTER POLICY",
    ),
    Case(
        "policy roles changed",
        RLS + " create policy p on t using (id > 0);",
        RLS + " create policy p on t to drift_reader using (id > 0);",
        CONVERGES,
        plan_has="ALTER POLICY",
    ),
    Case(
        "policy with check changed",
        RLS + " create policy p on t for update using (id > 0) with check (id > 0);",
        RLS + " create policy p on t for update using (id > 0) with check (id > 2);",
        CONVERGES,
        plan_has="ALTER POLICY",
    ),
    Case(
        "policy command changed",
        RLS + " create policy p on t for select using (id > 0);",
        RLS + " create policy p on t for update using (id > 0);",
        CONVERGES,
        plan_has="drop policy",
    ),
    Case(
        "policy made restrictive",
        RLS + " create policy p on t using (id > 0);",
        RLS + " create policy p on t as restrictive using (id > 0);",
        CONVERGES,
        plan_has="drop policy",
    ),
    # owners (compare_owners: true): objects the environment gave away go back to the role that applies
    Case("table owner", T + " alter table t owner to drift_owner;", T, CONVERGES, "OWNER TO", owners=True),
    Case("view owner", V + " alter view v owner to drift_owner;", V, CONVERGES, "OWNER TO", owners=True),
    Case("sequence owner", S + " alter sequence s owner to drift_owner;", S, CONVERGES, "OWNER TO", owners=True),
    Case("function owner", F + " alter function f(int) owner to drift_owner;", F, CONVERGES, "OWNER TO", owners=True),
    Case(
        "schema owner",
        "create schema app; alter schema app owner to drift_owner;",
        "create schema app;",
        CONVERGES,
        "OWNER TO",
        owners=True,
    ),
    # foreign servers: a desired file may not declare them (the sandbox refuses CREATE FOREIGN DATA WRAPPER, SERVER
    # and USER MAPPING), so the environment holds them and the desired state does not: unmanaged drift, never in sync
    Case(
        "foreign server in the environment",
        KEEP + " create foreign data wrapper w; create server s1 foreign data wrapper w;",
        KEEP,
        "foreign_server",
    ),
    Case(
        "foreign server with options in the environment",
        KEEP + " create foreign data wrapper w; create server s1 foreign data wrapper w options (host 'x');",
        KEEP,
        "foreign_server",
    ),
    Case(
        "two foreign servers in the environment",
        KEEP
        + " create foreign data wrapper w; create server s1 foreign data wrapper w; create server s2 foreign data wrapper w;",
        KEEP,
        "foreign_server",
    ),
    Case(
        "user mapping in the environment",
        KEEP + " create foreign data wrapper w; create server s1 foreign data wrapper w;"
        " create user mapping for public server s1 options (password 'secret');",
        KEEP,
        "user_mapping",
    ),
    Case(
        "foreign data wrapper in the environment",
        KEEP + " create foreign data wrapper w;",
        KEEP,
        "foreign_data_wrapper",
    ),
]

# What migra gets wrong on PostgreSQL 15, corrected (reconciler/corrections.py); vetting proves each plan.
E = "create type e as enum ('a', 'b'); create table t (id int, x e);"
E_ADDED = "create type e as enum ('a', 'b', 'c'); create table t (id int, x e);"
PK_PARENT = "create table p (id int primary key, v text) partition by range (id);"
P1 = " create table p1 partition of p for values from (0) to (10);"
P2 = " create table p2 partition of p for values from (10) to (20);"
G = "create table g (a int, b int generated always as (a * 2) stored);"
CASES += [
    # enum labels added while the type is in use: ALTER TYPE ... ADD VALUE, committed before what uses it
    Case(
        "enum label appended while a view uses the type",
        E + " create view ev as select id from t where x = 'a';",
        E_ADDED + " create view ev as select id from t where x = 'a';",
        CONVERGES,
    ),
    Case(
        "enum label inserted while a partial index uses the type",
        E + " create index t_a on t (id) where x = 'a';",
        "create type e as enum ('z', 'a', 'b'); create table t (id int, x e); create index t_a on t (id) where x = 'a';",
        CONVERGES,
    ),
    Case(
        "enum label added and used by a default",
        E,
        "create type e as enum ('a', 'b', 'c'); create table t (id int, x e default 'c');",
        CONVERGES,
    ),
    Case(
        "enum labels added before and after",
        E + " create view ev as select id from t where x = 'b';",
        "create type e as enum ('0', 'a', 'a2', 'b', 'c'); create table t (id int, x e);"
        " create view ev as select id from t where x = 'b';",
        CONVERGES,
    ),
    Case("enum label removed stays a swap", E_ADDED, E, CONVERGES),
    Case(
        "enum swap while a default is dropped",
        "create type e as enum ('a', 'b'); create table t (id int, x e default 'a');",
        "create type e as enum ('a'); create table t (id int, x e);",
        CONVERGES,
    ),
    Case(
        "enum swap while a default is added",
        "create type e as enum ('z', 'a'); create table t (id int, x e);",
        "create type e as enum ('a', 'b'); create table t (id int, x e default 'a');",
        CONVERGES,
    ),
    # partitions of a table with a primary key
    Case("new partition of a table with a primary key", PK_PARENT + P1, PK_PARENT + P1 + P2, CONVERGES),
    Case(
        "new partition of a table with a primary key and an index",
        PK_PARENT + P1 + " create index p_v on p (v);",
        PK_PARENT + P1 + P2 + " create index p_v on p (v);",
        CONVERGES,
    ),
    Case("first partition of a table with a primary key", PK_PARENT, PK_PARENT + P1, CONVERGES),
    # a partitioned table with a primary key created from scratch
    Case("partitioned table with a primary key from scratch", KEEP, KEEP + PK_PARENT + P1, CONVERGES),
    Case(
        "partitioned table with a primary key and an index from scratch",
        KEEP,
        KEEP + PK_PARENT + P1 + P2 + " create index p_v on p (v);",
        CONVERGES,
    ),
    Case("partitioned table with a primary key dropped", KEEP + PK_PARENT + P1 + P2, KEEP, CONVERGES),
    Case(
        "primary key added to a partitioned table",
        "create table p (id int not null, v text) partition by range (id);" + P1,
        PK_PARENT + P1,
        CONVERGES,
    ),
    Case(
        "column grant revoked beside a table grant",
        T + " grant select (v) on t to drift_reader;",
        T + " grant select on t to drift_reader;",
        CONVERGES,
    ),
    Case(
        "column grant revoked beside a table grant in a schema named with a dot",
        'create schema "a.b"; create table "a.b".t (id int, v text); create table a (id int);'
        ' grant select (v) on "a.b".t to drift_reader;',
        'create schema "a.b"; create table "a.b".t (id int, v text); create table a (id int);'
        ' grant select on "a.b".t to drift_reader;',
        CONVERGES,
        plan_has='REVOKE SELECT ("v") ON TABLE "a.b"."t"',
    ),
    # a materialized view migra recreates: its indexes are created again after it
    Case(
        "indexes of a recreated materialized view",
        T + " create materialized view mv as select id, v from t;"
        " create unique index mv_id on mv (id); create index mv_v on mv (v);",
        T + " create materialized view mv as select id, v, 1 as one from t;"
        " create unique index mv_id on mv (id); create index mv_v on mv (v);",
        CONVERGES,
        plan_has="CREATE UNIQUE INDEX mv_id ON public.mv USING btree (id)",
    ),
    Case(
        "index changed on a recreated materialized view in a schema named with a dot",
        'create schema "m.v"; create table "m.v".t (id int, v text);'
        ' create materialized view "m.v".mv as select id, v from "m.v".t; create index mv_i on "m.v".mv (v);',
        'create schema "m.v"; create table "m.v".t (id int, v text);'
        ' create materialized view "m.v".mv as select id from "m.v".t; create index mv_i on "m.v".mv (id);',
        CONVERGES,
        plan_has="CREATE INDEX mv_i ON",
    ),
    # a changed generated-column expression: the column is dropped and added again
    Case(
        "generated expression changed",
        G,
        "create table g (a int, b int generated always as (a * 3) stored);",
        CONVERGES,
    ),
    Case(
        "generated expression changed on a text column",
        "create table g2 (a text, b text generated always as (upper(a)) stored);",
        "create table g2 (a text, b text generated always as (lower(a)) stored);",
        CONVERGES,
    ),
]

# SQL-standard function bodies (RETURN, BEGIN ATOMIC): PostgreSQL keeps them parsed, with an empty prosrc, which is
# all schemainspect reads. A changed body must be planned, and never called in sync.
SQLBODY = "create function sb(a int) returns int language sql immutable return a + 1;"
CASES += [
    Case(
        "sql-standard function body changed",
        SQLBODY,
        "create function sb(a int) returns int language sql immutable return a + 2;",
        CONVERGES,
        plan_has="RETURN (a + 2)",
    ),
    Case(
        "begin atomic procedure body changed",
        T + " create procedure sp(x int) language sql begin atomic insert into t (id) values (x); end;",
        T + " create procedure sp(x int) language sql begin atomic insert into t (id) values (x + 1); end;",
        CONVERGES,
        plan_has="x + 1",
    ),
    Case(
        "sql-standard body changed to a table another function reads",
        T + " create table u (id int);" + " create function cnt() returns bigint language sql stable"
        " begin atomic select count(*) from t; end;",
        T + " create table u (id int);" + " create function cnt() returns bigint language sql stable"
        " begin atomic select count(*) from u; end;",
        CONVERGES,
    ),
    Case("quoted body made sql-standard", F, "create function f(a int) returns int language sql return a;", CONVERGES),
]


@pytest.fixture(scope="module")
def reader_role(pg_server: EmbeddedPostgres) -> str:
    return ensure_reader(pg_server)


@pytest.fixture(scope="module")
def icu(pg_server: EmbeddedPostgres) -> bool:
    """Whether the test server was built with ICU: an ICU collation can be created (in a transaction rolled back)."""
    with psycopg.connect(pg_server.dsn()) as conn:
        try:
            conn.execute("create collation icu_probe (provider = icu, locale = 'und')")
        except psycopg.errors.FeatureNotSupported:
            return False
        finally:
            conn.rollback()
    return True


# Known gaps of the guarantee, kept as strict expected failures so that they are reported (and a fix shows up).
KNOWN_GAPS: dict[str, str] = {}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param(c, marks=pytest.mark.xfail(strict=True, reason=KNOWN_GAPS[c.name])) if c.name in KNOWN_GAPS else c
        for c in CASES
    ],
    ids=[c.name for c in CASES],
)
def test_drift_case(
    case: Case,
    reader_role: str,
    icu: bool,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    if case.needs_icu and not icu:
        pytest.skip("this PostgreSQL build has no ICU support (CREATE COLLATION ... provider = icu fails)")
    env = make_db(case.current)
    built = make_db(case.desired)
    settings = {"dsn": env, "privileges": True, "compare_owners": case.owners}
    check_case(case, reconciler_for(project({"010.sql": case.desired}, {"dev": settings})), env, built)
