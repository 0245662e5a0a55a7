"""The connection seam against a real PostgreSQL: pinned session settings, and driver errors in the error tree."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import sqlalchemy as sa
from conftest import run_sql

from reconciler.db import (
    APPLICATION_NAME,
    SESSION_DEFAULTS,
    SESSION_SETTINGS,
    connect,
    database_errors,
    engine_for,
    make_dsn,
    parse_dsn,
    with_dbname,
    with_session_timeouts,
)
from reconciler.errors import DatabaseError, LockTimeoutError, TerminalError, UnreachableError
from reconciler.pgembedded import EmbeddedPostgres


def _show(dsn: str, *names: str) -> dict[str, str]:
    with connect(dsn, what="reading settings") as conn:
        return {n: str(conn.execute(f"show {n}").fetchone()[0]) for n in names}  # type: ignore[index]


def test_every_connection_starts_with_the_session_settings(make_db: Callable[..., str]) -> None:
    dsn = make_db()
    dbname = parse_dsn(dsn)["dbname"]
    # Defaults of the database that the session settings must override.
    run_sql(
        dsn,
        f"alter database {dbname} set search_path = pg_catalog; "
        f"alter database {dbname} set standard_conforming_strings = off",
    )
    shown = _show(dsn, "application_name", *SESSION_SETTINGS)
    assert shown == {"application_name": APPLICATION_NAME, **SESSION_SETTINGS}
    assert SESSION_SETTINGS["search_path"] == '"$user", public'


def test_sessions_run_without_jit_unless_the_dsn_asks_for_it(make_db: Callable[..., str]) -> None:
    dsn = make_db()
    run_sql(dsn, f"alter database {parse_dsn(dsn)['dbname']} set jit = on")
    assert _show(dsn, *SESSION_DEFAULTS) == dict(SESSION_DEFAULTS) == {"jit": "off"}
    assert _show(make_dsn({**parse_dsn(dsn), "options": "-c jit=on"}), "jit", "search_path") == {
        "jit": "on",
        "search_path": '"$user", public',
    }


def test_session_settings_keep_the_dsn_options(make_db: Callable[..., str]) -> None:
    dsn = with_session_timeouts(
        make_db(), lock_timeout=timedelta(milliseconds=1500), statement_timeout=timedelta(seconds=30)
    )
    shown = _show(dsn, "lock_timeout", "statement_timeout", "search_path")
    assert shown == {"lock_timeout": "1500ms", "statement_timeout": "30s", "search_path": '"$user", public'}


def test_sqlalchemy_connections_come_from_the_seam(make_db: Callable[..., str]) -> None:
    engine = engine_for(make_db(), what="reading settings")
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("show application_name")).scalar() == APPLICATION_NAME
            assert conn.execute(sa.text("show search_path")).scalar() == '"$user", public'
    finally:
        engine.dispose()


def test_with_dbname_points_at_another_database_of_the_server(make_db: Callable[..., str]) -> None:
    first, second = make_db(), make_db()
    moved = with_dbname(first, parse_dsn(second)["dbname"])
    with connect(moved, what="reading the database name") as conn:
        assert conn.execute("select current_database()").fetchone() == (parse_dsn(second)["dbname"],)


def test_a_refused_statement_is_terminal_and_keeps_its_sqlstate(make_db: Callable[..., str]) -> None:
    dsn = make_db()
    with (
        pytest.raises(DatabaseError, match=r"^reading things: relation \"nope\" does not exist$") as info,
        connect(dsn, what="reading things") as conn,
        database_errors("reading things"),
    ):
        conn.execute("select 1\nfrom nope")
    assert isinstance(info.value, TerminalError)
    assert info.value.sqlstate == "42P01"
    assert info.value.position == 15


def test_a_lock_wait_that_runs_out_is_a_lock_timeout(make_db: Callable[..., str]) -> None:
    dsn = make_db("create table t (id int)")
    with connect(dsn, what="holding a lock") as holder:
        holder.execute("lock table t in access exclusive mode")
        waiter_dsn = with_session_timeouts(
            dsn, lock_timeout=timedelta(milliseconds=100), statement_timeout=timedelta(seconds=30)
        )
        with (
            pytest.raises(LockTimeoutError, match=r"^reading t: canceling statement due to lock timeout") as info,
            connect(waiter_dsn, what="reading t") as waiter,
            database_errors("reading t"),
        ):
            waiter.execute("select * from t")
    assert info.value.sqlstate == "55P03"


def test_sqlalchemy_wrapped_errors_are_translated_too(make_db: Callable[..., str]) -> None:
    engine = engine_for(make_db(), what="reading things")
    try:
        with pytest.raises(DatabaseError) as info, database_errors("reading things"), engine.connect() as conn:
            conn.execute(sa.text("select * from nope"))
        assert info.value.sqlstate == "42P01"
        assert isinstance(info.value.__cause__, sa.exc.DBAPIError)
    finally:
        engine.dispose()


def test_an_unreachable_server_is_retryable_and_the_password_stays_hidden(pg_server: EmbeddedPostgres) -> None:
    assert pg_server.port is not None
    dsn = f"postgresql://someone:s3cret@127.0.0.1:{pg_server.port + 1}/postgres"
    with pytest.raises(UnreachableError, match=r"^probing dev: cannot connect: ") as info:
        connect(dsn, what="probing dev", connect_timeout=timedelta(seconds=1))
    assert "s3cret" not in str(info.value)


def test_a_lost_session_is_unreachable(make_db: Callable[..., str]) -> None:
    dsn = make_db()
    with connect(dsn, what="reading things", autocommit=True) as conn:
        pid = conn.info.backend_pid
        run_sql(dsn, f"select pg_terminate_backend({pid})")
        with pytest.raises(UnreachableError, match=r"^reading things: "), database_errors("reading things"):
            conn.execute("select 1")
