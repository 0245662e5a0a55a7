"""schema_fingerprint: one catalog query; changes with the schema (also where migra sees nothing), not with data."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest

from reconciler.inspect import schema_fingerprint, schema_listing
from reconciler.planning import read_fingerprint, read_fingerprint_and_description
from reconciler.service import Reconciler

BASE = """
create schema app;
create type mood as enum ('ok', 'sad');
create table t (id int primary key, name text not null default '', m mood);
create index t_name on t (name);
create view v as select id, name from t;
create function f(a int) returns int language sql as 'select a + 1';
create sequence s;
create table app.other (x int);
insert into t values (1, 'a', 'ok');
"""


@pytest.mark.parametrize(
    ("change", "changes", "kwargs"),
    [
        # Not schema changes.
        ("insert into t values (2, 'b', 'sad')", False, {}),
        ("vacuum (full, analyze) t", False, {}),
        ("select nextval('s')", False, {}),
        ("create temporary table tmp (x int)", False, {}),
        ("grant select on t to public", False, {}),
        # Schema changes, including some that migra does not see.
        ("alter table t add column extra int", True, {}),
        ("create index t_id_name on t (id, name)", True, {}),
        ("create or replace function f(a int) returns int language sql as 'select a + 2'", True, {}),
        ("create or replace view v as select id, name, m from t", True, {}),
        ("alter type mood add value 'glad'", True, {}),
        ("alter table t alter column name set default 'x'", True, {}),
        ("alter table t add constraint name_len check (length(name) < 10)", True, {}),
        ("comment on table t is 'hand-written note'", True, {}),
        ("comment on column t.name is 'who'", True, {}),
        ("alter table t enable row level security", True, {}),
        ("alter table t enable row level security; alter table t force row level security", True, {}),
        ("create policy p on t using (id > 0)", True, {}),
        (
            "create trigger tr before update on t for each row execute function suppress_redundant_updates_trigger()",
            True,
            {},
        ),
        ("alter sequence s increment by 5", True, {}),
        ("grant select on t to public", True, {"privileges": True}),
        # Filters: a change in a schema that is not managed does not count.
        ("alter table app.other add column y int", True, {}),
        ("alter table app.other add column y int", False, {"schemas": ["public"]}),
        ("alter table app.other add column y int", False, {"exclude_schemas": ["app"]}),
        ("alter table t add column y int", True, {"exclude_schemas": ["app"]}),
    ],
)
def test_fingerprint(make_db: Callable[..., str], change: str, changes: bool, kwargs: dict[str, Any]) -> None:
    dsn = make_db(BASE)
    before = schema_fingerprint(dsn, **kwargs)
    assert schema_fingerprint(dsn, **kwargs) == before
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(change.encode())
        # Read on the session that made the change too (a temporary table is visible only there).
        on_same_session = schema_fingerprint(conn, **kwargs)
    after = schema_fingerprint(dsn, **kwargs)
    assert (after != before) is changes
    assert on_same_session == after


def test_listing_is_one_canonical_catalog_query(make_db: Callable[..., str]) -> None:
    dsn = make_db(BASE + "create extension if not exists pgcrypto;")
    listing = schema_listing(dsn)
    kinds = {k for k, _, _ in listing}
    assert {"schema", "relation", "column", "index", "constraint", "function", "type", "extension"} <= kinds
    assert listing == sorted(listing, key=lambda r: (r[0].encode(), r[1].encode(), r[2].encode()))
    # Extension members are represented by the extension, not listed one by one.
    assert ("extension", "pgcrypto") in {(k, i) for k, i, _ in listing}
    assert not any("crypt" in i for k, i, _ in listing if k == "function")
    # Same schema in another database: same fingerprint (no oids, owners or database names in it).
    other = make_db(BASE + "create extension if not exists pgcrypto;")
    assert schema_fingerprint(other) == schema_fingerprint(dsn)


def test_column_numbers_do_not_count_only_the_order(make_db: Callable[..., str]) -> None:
    """Two databases whose tables differ only by a dropped column's gap (as ``pg_dump`` would print them the same)
    fingerprint equal: columns, keys and indexes are listed by position and name, not by column number."""
    tail = (
        "alter table t add primary key (b); create index t_c on t (c) include (b);"
        "create table r (b int references t (b), c int, unique (c, b));"
    )
    gap = make_db("create table t (a int, x int, b int not null, c int); alter table t drop column x;" + tail)
    plain = make_db("create table t (a int, b int not null, c int);" + tail)
    swapped = make_db("create table t (b int not null, a int, c int);" + tail)
    assert schema_fingerprint(gap) == schema_fingerprint(plain)
    assert schema_fingerprint(swapped) != schema_fingerprint(plain)


# Objects the catalog description lists but the fingerprint's listing does not: each must still change the
# environment's fingerprint, or the daemon's fast path would keep saying "in sync" after one was made by hand.
UNLISTED_CHANGES = [
    "create foreign data wrapper w",
    "create server srv foreign data wrapper w",
    "create user mapping for public server srv",
    "create foreign table ft (id int) server srv options (a '1')",
    "alter foreign table ft options (set a '2')",
    "create function plus(a t, b t) returns t language sql as 'select a'",
    "create operator ### (leftarg = t, rightarg = t, function = plus)",
    "create publication pub for table t",
    "create text search configuration cfg (copy = pg_catalog.simple)",
    "create cast (t as int) with inout",
    "alter table t owner to fp_owner",
]


def test_environment_fingerprint_covers_what_the_listing_does_not(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    with psycopg.connect(make_db(), autocommit=True) as admin:
        if not admin.execute("select 1 from pg_roles where rolname = 'fp_owner'").fetchone():
            admin.execute("create role fp_owner")
    dsn = make_db("create table t (id int primary key)")
    reconciler = reconciler_for(project({}, {"dev": {"dsn": dsn, "compare_owners": True}}))
    target = reconciler.target("dev")
    seen = [read_fingerprint(target)]
    for change in UNLISTED_CHANGES:
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(change.encode())
        now = read_fingerprint(target)
        assert now not in seen, change
        seen.append(now)
    # The plan's fingerprint (read beside the full description) is the same value the fast path reads.
    assert read_fingerprint_and_description(target)[0] == seen[-1]
