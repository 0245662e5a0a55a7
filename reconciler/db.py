"""The one seam for opening PostgreSQL connections: timeouts, clear errors, and passwords kept out of text."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import psycopg
import sqlalchemy as sa
from psycopg import conninfo
from sqlalchemy.pool import NullPool

from .errors import LockTimeoutError, ReconcilerError, UnreachableError

APPLICATION_NAME = "schema-reconciler"
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@?#]*):(?P<pw>[^@/?#]*)@", re.IGNORECASE)
_KV_PASSWORD = re.compile(r"(?P<head>\bpassword\s*=\s*)(?P<pw>'(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_QUERY_PASSWORD = re.compile(r"(?P<head>[?&]password=)(?P<pw>[^&#]*)", re.IGNORECASE)


def redact(text: str) -> str:
    """Hide passwords in DSNs (URL and key=value forms) found anywhere in ``text``."""
    text = _URL_PASSWORD.sub(lambda m: f"{m.group('head')}:***@", text)
    text = _QUERY_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)
    return _KV_PASSWORD.sub(lambda m: f"{m.group('head')}***", text)


def connect(
    dsn: str,
    *,
    what: str,
    connect_timeout: timedelta = timedelta(seconds=10),
    autocommit: bool = False,
) -> psycopg.Connection[Any]:
    """Open a connection or raise UnreachableError saying ``what`` was being done (password redacted)."""
    try:
        return psycopg.connect(
            dsn,
            connect_timeout=max(1, int(connect_timeout.total_seconds())),
            autocommit=autocommit,
            application_name=APPLICATION_NAME,
        )
    except (psycopg.OperationalError, psycopg.ProgrammingError) as exc:
        detail = redact(str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__)
        raise UnreachableError(f"{what}: cannot connect: {detail}") from exc


def engine_for(dsn: str, *, what: str, connect_timeout: timedelta = timedelta(seconds=10)) -> sa.Engine:
    """An SQLAlchemy engine (no pooling) whose connections come from :func:`connect`."""
    return sa.create_engine(
        "postgresql+psycopg://",
        creator=lambda: connect(dsn, what=what, connect_timeout=connect_timeout),
        poolclass=NullPool,
    )


def server_major(conn: psycopg.Connection[Any]) -> int:
    return int(conn.info.server_version) // 10000


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def with_session_timeouts(dsn: str, *, lock_timeout: timedelta, statement_timeout: timedelta) -> str:
    """``dsn`` with ``lock_timeout`` and ``statement_timeout`` as session defaults (libpq ``options``).

    Every connection the reconciler opens to an environment uses them, so reading a catalog never queues behind a
    long lock holder (nor makes other sessions queue behind it) for longer than ``lock_timeout``.
    """
    params = conninfo.conninfo_to_dict(dsn)
    extra = (
        f"-c lock_timeout={max(1, int(lock_timeout.total_seconds() * 1000))} "
        f"-c statement_timeout={max(1, int(statement_timeout.total_seconds() * 1000))}"
    )
    params["options"] = f"{params['options']} {extra}" if params.get("options") else extra
    return conninfo.make_conninfo(**params)  # type: ignore[arg-type]


@contextlib.contextmanager
def database_errors(what: str) -> Iterator[None]:
    """Turn driver errors (psycopg's, or SQLAlchemy's wrapping them) into the reconciler's error tree."""
    try:
        yield
    except ReconcilerError:
        raise
    except (psycopg.Error, sa.exc.DBAPIError) as exc:
        orig = exc.orig if isinstance(exc, sa.exc.DBAPIError) else exc
        text = redact(str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__)
        if isinstance(orig, psycopg.errors.LockNotAvailable | psycopg.errors.QueryCanceled):
            raise LockTimeoutError(f"{what}: {text}", sqlstate=getattr(orig, "sqlstate", None)) from exc
        if isinstance(orig, psycopg.OperationalError):
            raise UnreachableError(f"{what}: {text}") from exc
        raise ReconcilerError(f"{what}: {text}") from exc


def database_identity(dsn: str) -> str:
    """``host:port/dbname`` of a DSN (libpq defaults filled in), without connecting: what plans are bound to."""
    params = conninfo.conninfo_to_dict(dsn)
    host = str(params.get("host") or params.get("hostaddr") or "local")
    return f"{host}:{params.get('port') or 5432}/{params.get('dbname') or params.get('user') or ''}"
