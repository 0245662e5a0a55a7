"""Warm sessions: one idle connection per environment, lent to one caller at a time, closed when it cannot be
trusted again (against the session's PostgreSQL server)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.config import load_config
from reconciler.db import Connection, connect
from reconciler.errors import UnreachableError
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.reconcile.daemon import Daemon
from reconciler.reconcile.result import Outcome
from reconciler.warm import WarmSessions

TIMEOUT = timedelta(seconds=5)


def backend(conn: Connection) -> int:
    row = conn.execute("select pg_backend_pid()").fetchone()
    assert row is not None
    return int(row[0])


def run(pool: WarmSessions, dsn: str, fn: object = backend) -> int:
    assert callable(fn)
    result = pool.run(dsn, fn, what="reading", connect_timeout=TIMEOUT)
    assert isinstance(result, int)
    return result


@pytest.fixture()
def dsn(pg_server: EmbeddedPostgres) -> str:
    return pg_server.dsn("postgres")


def test_a_session_is_kept_and_lent_again_and_never_to_two_callers_at_once(dsn: str) -> None:
    pool = WarmSessions(4)
    try:
        first = run(pool, dsn)
        assert len(pool) == 1
        assert run(pool, dsn) == first and pool.reused == 1

        def nested(conn: Connection) -> int:
            assert len(pool) == 0  # lent: out of the pool while in use
            return run(pool, dsn) - backend(conn)  # a second caller gets a session of its own

        assert run(pool, dsn, nested) != 0
        assert len(pool) == 1  # the pool keeps one per connection string
    finally:
        pool.clear()
    assert len(pool) == 0


def test_a_session_the_server_ended_while_idle_is_replaced_and_a_failed_caller_leaves_none(dsn: str) -> None:
    pool = WarmSessions(4)
    try:
        first = run(pool, dsn)
        with connect(dsn, what="ending a session", autocommit=True) as admin:
            admin.execute("select pg_terminate_backend(%s)", (first,))
        assert run(pool, dsn) != first  # read again on a new session
        assert len(pool) == 1

        def fails(conn: Connection) -> int:
            raise UnreachableError("gone")

        with pytest.raises(UnreachableError):
            run(pool, dsn, fails)
        assert len(pool) == 0  # closed: neither the warm session it failed on nor the new one is kept
    finally:
        pool.clear()


def test_a_session_whose_settings_a_caller_changed_is_closed(dsn: str) -> None:
    """What a caller's queries did to the session (here: the pinned search_path) never reaches the next one."""
    pool = WarmSessions(4)
    try:

        def changes(conn: Connection) -> int:
            conn.execute("set search_path = pg_catalog")
            return backend(conn)

        run(pool, dsn, changes)
        assert len(pool) == 0
    finally:
        pool.clear()


def test_a_full_pool_keeps_the_sessions_it_has_and_zero_keeps_none(pg_server: EmbeddedPostgres) -> None:
    one, other = pg_server.dsn("postgres"), pg_server.dsn("template1")
    pool = WarmSessions(1)
    try:
        kept = run(pool, one)
        run(pool, other)  # no room: closed after use
        assert len(pool) == 1 and run(pool, one) == kept
    finally:
        pool.clear()
    none = WarmSessions(0)
    run(none, one)
    assert len(none) == 0


def test_the_daemon_reads_the_fingerprint_warm_and_drops_its_sessions_on_a_config_reload(
    make_db: Callable[..., str], project: Callable[..., Path]
) -> None:
    schema = "create table t (id int primary key);\n"
    dsn = make_db(schema)
    path = project({"010.sql": schema}, {"dev": {"dsn": dsn}})
    daemon = Daemon(load_config(path), port=0)
    try:
        for _ in range(3):  # the full pass, then two fast-path passes on one session
            assert daemon._reconcile("dev").outcome is Outcome.SUCCESS
        assert daemon.reconciler.warm.reused == 1 and len(daemon.reconciler.warm) == 1
        project({"010.sql": schema}, {"dev": {"dsn": dsn, "interval": "7m"}})
        daemon._watch()  # the changed file is taken over: the kept session may belong to an old DSN or password
        assert daemon.config.environment("dev").interval == timedelta(minutes=7)
        assert len(daemon.reconciler.warm) == 0
    finally:
        daemon.close()
