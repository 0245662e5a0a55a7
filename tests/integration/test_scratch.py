"""Scratch databases: each with its own unprivileged build role; those of dead processes are swept, and a leftover
that cannot be dropped is skipped, never a failure."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest

from reconciler.db import parse_dsn
from reconciler.errors import UnreachableError
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.scratch import LOCK_CLASS, PREFIX, TOKEN, ScratchServer

DEAD = "0badc0de"  # a token whose process is gone: nobody holds its lock
LIVE = "3afef00d"  # another live process's token: its lock is held below


def _databases(pg: EmbeddedPostgres) -> set[str]:
    with psycopg.connect(pg.dsn()) as conn:
        rows = conn.execute("select datname from pg_database where starts_with(datname, %s)", (PREFIX,)).fetchall()
    return {r[0] for r in rows}


def _roles(pg: EmbeddedPostgres) -> set[str]:
    with psycopg.connect(pg.dsn()) as conn:
        rows = conn.execute("select rolname from pg_roles where starts_with(rolname, %s)", (PREFIX,)).fetchall()
    return {r[0] for r in rows}


@pytest.fixture()
def admin(pg_server: EmbeddedPostgres) -> Iterator[psycopg.Connection[tuple[object, ...]]]:
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        yield conn


def test_leftovers_of_dead_processes_are_dropped(
    pg_server: EmbeddedPostgres, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    dead, alive = f"{PREFIX}{DEAD}_deadbeef", f"{PREFIX}{LIVE}_cafef00d"
    old_format = f"{PREFIX}00000000_4194305_0badf00d"  # an older version's name: not ours to judge
    for name in (dead, alive, old_format):
        pg_server.create_database(name)
    admin.execute(f'create role "{dead}"'.encode())
    with psycopg.connect(pg_server.dsn(), autocommit=True) as other:
        other.execute("select pg_advisory_lock_shared(%s::int4, %s::int4)", (LOCK_CLASS, int(LIVE, 16)))
        scratch = ScratchServer(pg_server.dsn())
        try:
            name, _ = scratch.create_database()
            assert name.startswith(f"{PREFIX}{TOKEN}_")
            left = _databases(pg_server)
            assert dead not in left
            assert dead not in _roles(pg_server)
            assert {alive, old_format, name} <= left
            scratch.drop_database(name)
            assert name not in _databases(pg_server) | _roles(pg_server)
        finally:
            scratch.close()
            for n in (dead, alive, old_format):
                admin.execute(f'drop database if exists "{n}"'.encode())


def test_a_leftover_that_cannot_be_dropped_is_skipped(
    pg_server: EmbeddedPostgres, admin: psycopg.Connection[tuple[object, ...]]
) -> None:
    stuck = f"{PREFIX}{DEAD}_5b5c71be"
    dsn = pg_server.create_database(stuck)
    with psycopg.connect(dsn, autocommit=True) as conn:  # a subscription makes DROP DATABASE fail
        conn.execute(
            "create subscription s connection 'host=127.0.0.1 port=1 dbname=none' publication p "
            "with (connect = false, slot_name = none, enabled = false)"
        )
    scratch = ScratchServer(pg_server.dsn())
    try:
        name, _ = scratch.create_database()  # the sweep before it logs and skips the leftover
        assert stuck in _databases(pg_server)
        scratch.drop_database(name)
    finally:
        scratch.close()
        with psycopg.connect(dsn, autocommit=True) as conn:
            conn.execute("drop subscription s")
        admin.execute(f'drop database "{stuck}"'.encode())


def test_the_build_role_owns_its_database_and_nothing_else(pg_server: EmbeddedPostgres) -> None:
    scratch = ScratchServer(pg_server.dsn())
    try:
        name, dsn = scratch.create_database()
        with psycopg.connect(dsn) as conn:
            row = conn.execute(
                "select current_user, rolsuper, rolcreaterole, rolcreatedb, rolreplication, rolbypassrls, "
                "current_setting('statement_timeout'), current_setting('lock_timeout'), "
                "current_setting('idle_in_transaction_session_timeout') from pg_roles where rolname = current_user"
            ).fetchone()
            assert row == (name, False, False, False, False, False, "2min", "10s", "1min")
        assert "password" in parse_dsn(dsn) and "passfile" not in parse_dsn(dsn)
        # The embedded server's pg_hba lets a build role into its own database only.
        elsewhere = {**parse_dsn(dsn), "dbname": "postgres"}
        with pytest.raises(psycopg.OperationalError, match=r"pg_hba\.conf rejects connection"):
            psycopg.connect(**elsewhere)  # type: ignore[arg-type]
        with psycopg.connect(pg_server.dsn()) as conn:
            grants = conn.execute("select datacl::text from pg_database where datname = %s", (name,)).fetchone()
        assert grants is not None and "=c" not in str(grants[0]).replace(f"{name}=", "")  # no CONNECT for PUBLIC
        scratch.drop_database(name)
    finally:
        scratch.close()


def test_the_embedded_server_wants_a_password(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.passfile.stat().st_mode & 0o777 == 0o600
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(host="127.0.0.1", port=pg_server.port, user="postgres", dbname="postgres", passfile="/dev/null")
    hba = (pg_server.data_dir / "pg_hba.conf").read_text()
    assert "trust" not in hba


def test_unreachable_data_folder_fails_without_chmod(tmp_path_factory: pytest.TempPathFactory) -> None:
    import os

    if os.geteuid() != 0:
        pytest.skip("only root runs the server as another user")
    folder = tmp_path_factory.mktemp("closed")
    folder.chmod(0o700)
    with pytest.raises(UnreachableError, match=r"cannot reach .*lacks search \(x\) permission for others"):
        EmbeddedPostgres(folder / "sub" / "data").start()
    assert folder.stat().st_mode & 0o777 == 0o700
