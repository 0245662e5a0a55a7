"""The fingerprint lists plain indexes, keys and column defaults from catalog columns instead of deparsing them:
every detail the deparsed definition showed must still change it, and equal definitions must still read equal.

One database for the module; each variant is applied in a transaction, fingerprinted on that session and rolled
back, so the cases cost a catalog query each.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from collections.abc import Iterator

import psycopg
import pytest

from reconciler.inspect import schema_fingerprint, schema_listing
from reconciler.pgembedded import EmbeddedPostgres

BASE = """
create table p (id int primary key, code text not null unique);
create table t (id int primary key, name text, p_id int, code text);
create index t_name on t (name);
alter table t add constraint t_p foreign key (p_id) references p (id);
"""

# Pairs of variants (applied to BASE) that must fingerprint differently: each pair differs in one detail.
DIFFERENT = {
    "index direction": ("create index i on t (name)", "create index i on t (name desc)"),
    "index nulls order": ("create index i on t (name)", "create index i on t (name nulls first)"),
    "index method": ("create index i on t (name)", "create index i on t using hash (name)"),
    "index operator class": ("create index i on t (name)", "create index i on t (name text_pattern_ops)"),
    "index collation": ("create index i on t (name)", 'create index i on t (name collate "C")'),
    "index unique": ("create index i on t (name)", "create unique index i on t (name)"),
    "index nulls not distinct": (
        "create unique index i on t (name)",
        "create unique index i on t (name) nulls not distinct",
    ),
    "index include": ("create index i on t (name)", "create index i on t (name) include (id)"),
    "index column order": ("create index i on t (name, id)", "create index i on t (id, name)"),
    "index predicate": ("create index i on t (name) where id > 0", "create index i on t (name) where id > 1"),
    "index expression": ("create index i on t (lower(name))", "create index i on t (upper(name))"),
    "index storage option": ("create index i on t (name)", "create index i on t (name) with (fillfactor = 50)"),
    "primary key deferrable": (
        "alter table t drop constraint t_pkey, add constraint t_pkey primary key (id)",
        "alter table t drop constraint t_pkey, add constraint t_pkey primary key (id) deferrable",
    ),
    "unique key columns": (
        "alter table t add constraint u unique (name, code)",
        "alter table t add constraint u unique (code, name)",
    ),
    "foreign key action": (
        "alter table t drop constraint t_p, add constraint t_p foreign key (p_id) references p (id)",
        "alter table t drop constraint t_p, add constraint t_p foreign key (p_id) references p (id) on delete cascade",
    ),
    "foreign key set null columns": (
        "alter table t drop constraint t_p, add constraint t_p foreign key (p_id) references p (id) on delete set null",
        "alter table t drop constraint t_p, add constraint t_p foreign key (p_id) references p (id) "
        "on delete set null (p_id)",
    ),
    "foreign key match": (
        "alter table t drop constraint t_p, add constraint t_p foreign key (p_id) references p (id)",
        "alter table t drop constraint t_p, add constraint t_p foreign key (p_id) references p (id) match full",
    ),
    "foreign key referenced column": (
        "alter table t add constraint t_c foreign key (code) references p (code)",
        "alter table t add constraint t_c foreign key (name) references p (code)",
    ),
    "foreign key deferred": (
        "alter table t drop constraint t_p, add constraint t_p foreign key (p_id) references p (id) deferrable",
        "alter table t drop constraint t_p, add constraint t_p foreign key (p_id) references p (id) "
        "deferrable initially deferred",
    ),
    "column default": (
        "alter table t alter column name set default 'a'",
        "alter table t alter column name set default 'b'",
    ),
    "column default sequence": (
        "create sequence s1; create sequence s2; alter table t alter column id set default nextval('s1')",
        "create sequence s1; create sequence s2; alter table t alter column id set default nextval('s2')",
    ),
    "generated column": (
        "alter table t add column g int generated always as (id + 1) stored",
        "alter table t add column g int generated always as (id + 2) stored",
    ),
}

# Pairs that are the same schema written differently: equal fingerprints.
SAME = {
    "default index method": ("create index i on t (name)", "create index i on t using btree (name)"),
    "default operator class": ("create index i on t (name)", "create index i on t (name text_ops)"),
    "default direction": ("create index i on t (name)", "create index i on t (name asc nulls last)"),
}


@pytest.fixture(scope="module")
def conn(pg_server: EmbeddedPostgres) -> Iterator[psycopg.Connection[object]]:
    name = f"t_{secrets.token_hex(5)}"
    dsn = pg_server.create_database(name)
    with psycopg.connect(dsn, autocommit=True) as setup:
        setup.execute(BASE.encode())
    try:
        with psycopg.connect(dsn) as c:
            yield c
    finally:
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute(f'drop database if exists "{name}" with (force)'.encode())


def fingerprint_with(conn: psycopg.Connection[object], sql: str) -> str:
    """The fingerprint with ``sql`` applied, on the same session; the change is rolled back afterwards."""
    conn.execute(sql.encode())
    return schema_fingerprint(conn)  # rolls the transaction back


@pytest.mark.parametrize("case", sorted(DIFFERENT))
def test_detail_changes_fingerprint(conn: psycopg.Connection[object], case: str) -> None:
    a, b = DIFFERENT[case]
    first = fingerprint_with(conn, a)
    assert fingerprint_with(conn, a) == first
    assert fingerprint_with(conn, b) != first


@pytest.mark.parametrize("case", sorted(SAME))
def test_equal_definitions_fingerprint_equal(conn: psycopg.Connection[object], case: str) -> None:
    a, b = SAME[case]
    assert fingerprint_with(conn, a) == fingerprint_with(conn, b)


def test_hash_is_of_the_listing(conn: psycopg.Connection[object]) -> None:
    """The digest the server computes is a sha256 over the listing's rows (JSON arrays, one per line)."""
    listing = schema_listing(conn)
    text = "\n".join(json.dumps(list(row), ensure_ascii=False) for row in listing)
    assert schema_fingerprint(conn) == hashlib.sha256(text.encode()).hexdigest()
