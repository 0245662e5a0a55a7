"""The one seam to PostgreSQL: every connection the reconciler opens comes from here.

Environments, scratch databases and the embedded server are all reached through :func:`connect` (or
:func:`engine_for`, which uses it), so every session carries the same settings (:data:`SESSION_SETTINGS`, set
from the first statement on through libpq ``options``) and the same ``application_name``. Driver errors become
the reconciler's error tree in one place (:func:`translate`), and passwords never reach a message (:func:`redact`).

No other module of the package imports psycopg; a unit test keeps it so.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any, TypeAlias

import psycopg
import sqlalchemy as sa
from psycopg import conninfo
from sqlalchemy.pool import NullPool

from .errors import DatabaseError, LockTimeoutError, ReconcilerError, UnreachableError, UnsafeSqlError

Connection: TypeAlias = psycopg.Connection[Any]
DriverError = psycopg.Error  # what the driver raises; the executor tells lock waits and lost sessions apart
QueryCanceled = psycopg.errors.QueryCanceled
LOCK_NOT_GRANTED = (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected)
"""A connection opened by :func:`connect`, for type hints outside this module."""

APPLICATION_NAME = "schema-reconciler"

SESSION_SETTINGS: Mapping[str, str] = {
    # Backslashes in string literals are literal, whatever a database or role default says.
    "standard_conforming_strings": "on",
    "client_encoding": "UTF8",
    # PostgreSQL's default. A database- or role-level search_path would otherwise change how catalog functions
    # (format_type, pg_get_expr, pg_get_viewdef) qualify names, so two databases holding the same schema would
    # read differently. The desired-state build runs user SQL that may rely on this default.
    "search_path": '"$user", public',
}
"""Settings every session starts with, whatever the server, database or role defaults are."""

SESSION_DEFAULTS: Mapping[str, str] = {
    # The reconciler's own queries read the catalogs; PostgreSQL's planner prices the larger ones (the fingerprint's
    # listing) above jit_above_cost, and compiling them costs more than it saves: measured on 1000 tables, 0.33 s
    # of JIT in a 0.69 s listing. Only speed depends on it, so the DSN's own ``options`` may set it otherwise.
    "jit": "off",
}
"""Settings every session starts with unless the DSN's ``options`` set them (not checked like the ones above)."""

SECRET_KEYS = ("password", "sslpassword")
"""Connection parameters that hold secrets (the password, the passphrase of the client key ``sslkey``)."""

_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@?#]*):(?P<pw>[^@/?#]*)@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\b(?:ssl)?password\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&](?:ssl)?password=)(?P<pw>[^&#]*)", re.IGNORECASE)
_QUOTED = re.compile(r'"[^"]*"')


def redact(text: str) -> str:
    """Hide passwords and key passphrases in DSNs (URL and key=value forms) found anywhere in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)
    text = _QUERY_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)


# -- connection strings -------------------------------------------------------------------------------


def parse_dsn(dsn: str) -> dict[str, str]:
    """The parameters of ``dsn`` (URL or key=value form), as libpq reads them; environment variables not applied."""
    return {k: str(v) for k, v in conninfo.conninfo_to_dict(dsn).items() if v is not None}


def make_dsn(params: Mapping[str, str]) -> str:
    """A key=value connection string holding ``params`` (quoted as libpq needs)."""
    return conninfo.make_conninfo("", **params)


def dsn_problem(dsn: str) -> str | None:
    """Why libpq cannot read ``dsn``, without quoting any part of it (a fragment may be a password), or None."""
    try:
        conninfo.conninfo_to_dict(dsn)
    except psycopg.Error as exc:
        first = (str(exc).strip().splitlines() or ["malformed"])[0]
        return "not a valid connection string: " + _QUOTED.sub('"..."', first).replace(dsn, "...")
    return None


@contextlib.contextmanager
def service_file(dsn: str, folder: str) -> Iterator[dict[str, str]]:
    """Environment variables that make a libpq client (``pg_dump``) connect as ``dsn`` with ``dbname=service=...``.

    Every parameter, secrets included, goes into a service file readable by this user only (in ``folder``) and
    removed afterwards, so no password or key passphrase is on a command line that other local users can read.
    Yields ``{"PGSERVICEFILE": path, "PGSERVICE": name}``.
    """
    fd, path = tempfile.mkstemp(prefix=".reconciler-", suffix=".pgservice", dir=folder)
    try:
        lines = ["[reconciler]", *(f"{k}={v}" for k, v in parse_dsn(dsn).items())]
        os.write(fd, ("\n".join(lines) + "\n").encode())
        os.close(fd)
        yield {"PGSERVICEFILE": path, "PGSERVICE": "reconciler"}
    finally:
        with contextlib.suppress(OSError):
            os.unlink(path)


def quote_literal(value: str) -> str:
    """``value`` as an SQL string literal (standard_conforming_strings is always on: see SESSION_SETTINGS)."""
    return "'" + value.replace("'", "''") + "'"


def with_dbname(dsn: str, dbname: str) -> str:
    """``dsn`` pointing at database ``dbname`` of the same server, with the same user and options."""
    return make_dsn({**parse_dsn(dsn), "dbname": dbname})


def _option(name: str, value: str) -> str:
    """``-c name=value`` as libpq ``options`` reads it: backslash escapes whitespace and backslashes."""
    escaped = re.sub(r"([\s\\])", r"\\\1", value)
    return f"-c {name}={escaped}"


def _with_options(dsn: str, settings: Mapping[str, str], *, first: bool = False) -> str:
    """``dsn`` with ``settings`` appended to its ``options`` (put before them if ``first``); the later of two equal
    names wins in the server."""
    params = parse_dsn(dsn)
    extra = " ".join(_option(k, v) for k, v in settings.items())
    parts = [extra, params.get("options", "")] if first else [params.get("options", ""), extra]
    params["options"] = " ".join(p for p in parts if p)
    return make_dsn(params)


def with_session_timeouts(dsn: str, *, lock_timeout: timedelta, statement_timeout: timedelta) -> str:
    """``dsn`` with ``lock_timeout`` and ``statement_timeout`` as session defaults (libpq ``options``).

    Every connection the reconciler opens to an environment uses them, so reading a catalog never queues behind a
    long lock holder (nor makes other sessions queue behind it) for longer than ``lock_timeout``.
    """
    return _with_options(
        dsn,
        {
            "lock_timeout": str(max(1, int(lock_timeout.total_seconds() * 1000))),
            "statement_timeout": str(max(1, int(statement_timeout.total_seconds() * 1000))),
        },
    )


def with_scratch_settings(
    dsn: str, *, statement_timeout: timedelta, lock_timeout: timedelta, idle_in_transaction_timeout: timedelta
) -> str:
    """``dsn`` with the three timeouts every scratch session runs with (libpq ``options``)."""

    def ms(d: timedelta) -> str:
        return str(max(1, int(d.total_seconds() * 1000)))

    return _with_options(
        dsn,
        {
            "statement_timeout": ms(statement_timeout),
            "lock_timeout": ms(lock_timeout),
            "idle_in_transaction_session_timeout": ms(idle_in_transaction_timeout),
        },
    )


# -- connections --------------------------------------------------------------------------------------


def connect(
    dsn: str,
    *,
    what: str,
    connect_timeout: timedelta = timedelta(seconds=10),
    autocommit: bool = False,
) -> Connection:
    """Open a connection with :data:`SESSION_SETTINGS`; a failure raises what :func:`translate` makes of it.

    The session settings come after any ``options`` of ``dsn``, so they hold even if the DSN sets them too.
    Messages say ``what`` was being done, with passwords redacted.
    """
    _count_open(dsn)
    try:
        return psycopg.connect(
            _with_options(_with_options(dsn, SESSION_DEFAULTS, first=True), SESSION_SETTINGS),
            connect_timeout=max(1, int(connect_timeout.total_seconds())),
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
        )
    except psycopg.Error as exc:
        raise translate(exc, f"{what}: cannot connect") from exc


_opened: Counter[str] = Counter()
_opened_lock = threading.Lock()


def _count_open(dsn: str) -> None:
    name = parse_dsn(dsn).get("dbname", "")
    with _opened_lock:
        _opened[name] += 1


def connections_opened() -> dict[str, int]:
    """How many connections this process opened (or tried to), by database name: what a pass costs a server."""
    with _opened_lock:
        return dict(_opened)


def engine_for(dsn: str, *, what: str, connect_timeout: timedelta = timedelta(seconds=10)) -> sa.Engine:
    """An SQLAlchemy engine (no pooling) whose connections come from :func:`connect`."""
    return sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: connect(dsn, what=what, connect_timeout=connect_timeout),
        poolclass=NullPool,
    )


def server_major(conn: Connection) -> int:
    """The PostgreSQL major version of the server ``conn`` is connected to (e.g. 16)."""
    return int(conn.info.server_version) // 10000


def quote_ident(name: str) -> str:
    """``name`` as an SQL identifier: double-quoted, inner double quotes doubled."""
    return '"' + name.replace('"', '""') + '"'


# -- errors -------------------------------------------------------------------------------------------


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return redact(text.splitlines()[0] if text else type(exc).__name__)


def translate(exc: BaseException, what: str) -> ReconcilerError:
    """The reconciler error for ``exc``, a driver error (psycopg's, or SQLAlchemy's wrapping one).

    * a lock wait or statement that ran out of time (``lock_not_available``, ``query_canceled``):
      :class:`LockTimeoutError`;
    * the connection failed or was lost, and the other operational errors: :class:`UnreachableError`;
    * anything else the server or the driver refused: :class:`DatabaseError` (terminal).

    A :class:`ReconcilerError` is returned as it is. The message is ``what`` and the driver's first line, with
    passwords redacted; the SQLSTATE and the error position are kept on the error when the server gave them.
    """
    if isinstance(exc, ReconcilerError):
        return exc
    orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) and exc.orig is not None else exc
    message = f"{what}: {_first_line(orig)}"
    sqlstate = getattr(orig, "sqlstate", None)
    if isinstance(orig, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
        return LockTimeoutError(message, sqlstate=sqlstate)
    if isinstance(orig, psycopg.OperationalError):
        return UnreachableError(message)
    position = orig.diag.statement_position if isinstance(orig, psycopg.Error) else None
    return DatabaseError(message, sqlstate=sqlstate, position=int(position) if position else None)


@contextlib.contextmanager
def database_errors(what: str) -> Iterator[None]:
    """Raise driver errors of the block as :func:`translate` turns them (the driver error as the cause)."""
    try:
        yield
    except (psycopg.Error, sa.exc.DBAPIError) as exc:
        raise translate(exc, what) from exc


def fetch_all(
    conn_or_dsn: Connection | str,
    sql: str,
    params: Mapping[str, Any],
    *,
    what: str,
    connect_timeout: timedelta = timedelta(seconds=10),
) -> list[Any]:
    """The rows of one read-only query, on ``conn_or_dsn`` (a connection of the caller's, whose transaction is
    rolled back unless it autocommits) or on a connection opened for it and closed again."""
    with database_errors(what):
        if isinstance(conn_or_dsn, str):
            with connect(conn_or_dsn, what=what, connect_timeout=connect_timeout) as conn:
                return conn.execute(sql, params).fetchall()
        rows = conn_or_dsn.execute(sql, params).fetchall()
        if not conn_or_dsn.autocommit:
            conn_or_dsn.rollback()
        return rows


def database_identity(dsn: str) -> str:
    """``host:port/dbname`` of a DSN (libpq defaults filled in), without connecting: what plans are bound to."""
    params = parse_dsn(dsn)
    host = str(params.get("host") or params.get("hostaddr") or "local")
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"


def error_text(exc: DriverError) -> str:
    """PostgreSQL's primary message of a driver error, with its SQLSTATE."""
    diag = exc.diag
    text = (diag.message_primary or str(exc)).strip()
    if diag.sqlstate:
        text = f"{text} (SQLSTATE {diag.sqlstate})"
    return text


def is_broken(conn: Connection) -> bool:
    """Whether the session is gone (terminated, server restart, network): its transaction was rolled back."""
    return bool(conn.broken or conn.closed)


def is_idle(conn: Connection) -> bool:
    """Whether the session is outside any transaction block (a statement sent now runs in a transaction of its
    own; several sent at once, in one implicit transaction that a failure rolls back whole)."""
    return conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


# -- what runs is what was classified ---------------------------------------------------------------------


def session_drift(conn: Connection) -> dict[str, tuple[str, str]]:
    """The :data:`SESSION_SETTINGS` that the server reports otherwise on ``conn``: name -> (pinned, reported).

    These settings change how PostgreSQL parses a statement (``standard_conforming_strings`` decides whether a
    backslash ends a string literal), so a statement classified under one value can hide another under the other.
    A proxy that drops libpq ``options``, or a server that refuses them, shows up here.
    """
    names = list(SESSION_SETTINGS)
    row = conn.execute(
        ("select " + ", ".join("current_setting(%s)" for _ in names)).encode(),
        names,
    ).fetchone()
    reported = [str(v) for v in (row or ())]
    return {n: (SESSION_SETTINGS[n], r) for n, r in zip(names, reported, strict=True) if r != SESSION_SETTINGS[n]}


def check_session(conn: Connection, what: str) -> None:
    """Refuse to go on (:class:`UnsafeSqlError`) if the session's parse-relevant settings are not the pinned ones.

    Stops the contents of an environment (a database or role default, a pooler in between) from making a
    classified statement parse as something else.
    """
    drift = session_drift(conn)
    if not conn.autocommit and not conn.broken:
        conn.rollback()
    if drift:
        shown = ", ".join(f"{n} is {got!r}, not {want!r}" for n, (want, got) in drift.items())
        raise UnsafeSqlError(f"{what}: the session's settings differ from the pinned ones ({shown}); nothing was run")


def execute_alone(conn: Connection, sql: str) -> None:
    """Run ``sql`` as exactly one statement, through the extended query protocol.

    The server refuses a string that holds several statements (``cannot insert multiple commands into a prepared
    statement``), so a statement can never smuggle a second one past the classifier. (psycopg sends a query
    without parameters through the simple protocol, which runs any number of statements; a binary cursor forces the
    extended one.)
    """
    conn.cursor(binary=True).execute(sql.encode("utf-8"))
