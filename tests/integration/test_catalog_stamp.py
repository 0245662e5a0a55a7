"""The catalog stamp: the fast path's cheap first query. Whenever the environment's fingerprint changes, the
stamp must change too (else the fast path would keep an old fingerprint and say "in sync" after a change); and
the catalogs it leaves out are named, with a reason, for every catalog of the running server."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from test_fingerprint import BASE as FINGERPRINT_BASE

from reconciler import planning
from reconciler.inspect import NOT_STAMPED_CATALOGS, STAMPED_CATALOGS, _stamp_sql, catalog_stamp
from reconciler.planning import read_fingerprint
from reconciler.service import Reconciler

BASE = FINGERPRINT_BASE + "create table t2 (id int primary key);\n"  # the schema the fingerprint tests change


def _changes(role: str) -> list[str]:
    """Schema changes of every kind the fingerprint reads (its listing and the description rows beside it)."""
    return [
        "alter table t add column extra int",
        "create index concurrently t_id_name on t (id, name)",
        "drop index concurrently t_id_name",
        "create or replace function f(a int) returns int language sql as 'select a + 2'",
        "create or replace view v as select id, name, m from t",
        "alter type mood add value 'glad'",
        "alter table t alter column name set default 'x'",
        "alter table t add constraint name_len check (length(name) < 10)",
        "comment on table t is 'hand-written note'",
        "comment on schema public is 'the public schema'",
        "alter table t enable row level security",
        "create policy p on t using (id > 0)",
        "alter policy p on t using (id > 1)",
        "create trigger tr before update on t for each row execute function suppress_redundant_updates_trigger()",
        "alter table t disable trigger tr",
        "alter sequence s increment by 5",
        "alter sequence s owned by t.id",
        "grant select on t to public",
        "grant usage on schema public to public",
        "alter default privileges grant select on tables to public",
        "create extension if not exists pgcrypto",
        "create foreign data wrapper w",
        "create server srv foreign data wrapper w",
        "create user mapping for public server srv",
        "create foreign table ft (id int) server srv options (a '1')",
        "alter foreign table ft options (set a '2')",
        "create operator ### (leftarg = int, rightarg = int, function = int4pl)",
        "create publication pub for table t",
        "alter publication pub add table t2",
        "create text search configuration cfg (copy = pg_catalog.simple)",
        "alter text search configuration cfg drop mapping for word",
        "create cast (t as int) with inout",
        f"alter table t owner to {role}",
        f"alter role {role} rename to {role}_renamed",
        "create table app.part (id int) partition by range (id)",
        "create table app.part_1 partition of app.part for values from (0) to (10)",
        "alter table app.part detach partition app.part_1",
        "create statistics st on id, name from t",
        "alter table t rename column extra to more",
        "alter table t2 rename to t3",
        "alter table t alter column name set compression pglz",
        "alter table t alter column name set (n_distinct = 5)",
        "alter table t alter column name set statistics 300",
        "comment on trigger tr on t is 'a trigger'",
        f"grant usage on language plpgsql to {role}_renamed",
        "revoke execute on function pg_catalog.pg_sleep(float8) from public",
        "drop view v",
    ]


def test_every_catalog_is_stamped_or_left_out_with_a_reason(make_db: Callable[..., str]) -> None:
    with psycopg.connect(make_db()) as conn:
        rows = conn.execute(
            "select relname from pg_class where relnamespace = 'pg_catalog'::regnamespace and relkind = 'r'"
            " and not relisshared"
        ).fetchall()
    present = {r[0] for r in rows}
    stamped = {c for c, _ in STAMPED_CATALOGS}
    assert not stamped & NOT_STAMPED_CATALOGS
    assert present - stamped - NOT_STAMPED_CATALOGS == set()


def test_the_stamp_moves_whenever_the_fingerprint_does(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    role = f"stamp_{secrets.token_hex(4)}"
    dsn = make_db(BASE)
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(f"create role {role}".encode())
    env = {"dsn": dsn, "compare_owners": True, "privileges": True}
    target = reconciler_for(project({}, {"dev": env})).target("dev")
    stamp, fingerprint = catalog_stamp(dsn), read_fingerprint(target)
    moved = 0
    for change in _changes(role):
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute(change.encode())
        now_stamp, now = catalog_stamp(dsn), read_fingerprint(target)
        if now != fingerprint:
            moved += 1
            assert now_stamp != stamp, change
        stamp, fingerprint = now_stamp, now
    assert moved >= len(_changes(role)) - 3  # nearly every change moves the fingerprint: the check is not vacuous


@pytest.mark.parametrize(
    "change",
    ["insert into t values (2, 'b', 'sad')", "update t set name = 'z'", "select nextval('s')", "analyze t"],
)
def test_data_and_statistics_leave_the_stamp_alone(make_db: Callable[..., str], change: str) -> None:
    dsn = make_db(BASE)
    before = catalog_stamp(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(change.encode())
    assert catalog_stamp(dsn) == before


def test_the_fast_path_reads_the_fingerprint_only_when_the_stamp_moved(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = make_db(BASE)
    reconciler = reconciler_for(project({}, {"dev": {"dsn": dsn}}))
    target = reconciler.target("dev")
    reads: list[str] = []
    real = planning.read_fingerprint

    def counted(t: object, conn: object = None) -> str:
        reads.append("full")
        return real(t, conn)  # type: ignore[arg-type]

    monkeypatch.setattr(planning, "read_fingerprint", counted)
    first = reconciler.warm_fingerprint(target)
    assert reconciler.warm_fingerprint(target) == first
    assert reconciler.warm_fingerprint(target) == first
    assert reads == ["full"]
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(b"alter table t add column extra int")
    changed = reconciler.warm_fingerprint(target)
    assert reads == ["full", "full"]
    assert changed != first and changed == real(target)
    reads.clear()
    # Past the trust bound, an equal stamp no longer vouches: the fingerprint is read again.
    monkeypatch.setattr(planning, "STAMP_TRUSTED_FOR", planning.STAMP_TRUSTED_FOR * 0)
    assert reconciler.warm_fingerprint(target) == changed
    assert reads == ["full"]


def test_an_unprivileged_role_reads_the_stamp(make_db: Callable[..., str]) -> None:
    role = f"stamp_reader_{secrets.token_hex(4)}"
    dsn = make_db(
        BASE + "create foreign data wrapper w; create server srv foreign data wrapper w;"
        "create user mapping for public server srv options (user 'u', password 'secret');"
    )
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"create role {role}".encode())
        as_superuser = catalog_stamp(conn)
        conn.execute(f"set role {role}".encode())
        assert catalog_stamp(conn) == catalog_stamp(conn)  # readable, and stable for the role that reads it
        assert catalog_stamp(conn) != as_superuser  # a user mapping's options show only to those who may see them


def test_the_stamp_reads_only_catalogs_the_server_has_and_which_server_it_is(make_db: Callable[..., str]) -> None:
    assert "pg_publication_namespace" not in _stamp_sql(14)  # PostgreSQL 14 has none
    assert "pg_publication_namespace" in _stamp_sql(15)
    assert "pg_postmaster_start_time()" in _stamp_sql(15) and "pg_control_system()" in _stamp_sql(15)
    # Same schema, another database: another stamp (row versions are only comparable within one database).
    assert catalog_stamp(make_db(BASE)) != catalog_stamp(make_db(BASE))
