"""One applier per environment: a session-level PostgreSQL advisory lock taken on the environment database itself.

The lock lives on the environment, not in the reconciler's store, so two reconcilers (with or without a shared
store), or a reconciler and a person running the CLI, never apply to one environment at once. It is taken with
``pg_try_advisory_lock`` (never waits): the second applier gets :class:`BusyError` and changes nothing. The lock
is held by the connection that runs the plan's statements, so it cannot outlive the applier: if that connection
dies, PostgreSQL releases the lock with it.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from .db import Connection, connect, database_errors
from .errors import BusyError, ReconcilerError

# A constant 64-bit key (signed, as PostgreSQL's bigint): the first 8 bytes of sha256("schema-reconciler/apply").
APPLY_LOCK_KEY = int.from_bytes(hashlib.sha256(b"schema-reconciler/apply").digest()[:8], "big", signed=True)


def _holder(conn: Connection) -> str:
    """Who holds the apply lock, as far as pg_locks and pg_stat_activity tell (empty if unknown)."""
    key = APPLY_LOCK_KEY & 0xFFFFFFFFFFFFFFFF
    try:
        with database_errors("reading who holds the apply lock"):
            row = conn.execute(
                "select a.pid, a.application_name, a.client_addr::text, a.backend_start "
                "from pg_locks l join pg_stat_activity a on a.pid = l.pid "
                "where l.locktype = 'advisory' and l.granted and l.database = "
                "(select oid from pg_database where datname = current_database()) "
                "and l.classid = %s and l.objid = %s and l.objsubid = 1",
                ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
            ).fetchone()
    except ReconcilerError:
        return ""
    if row is None:
        return ""
    pid, app, addr, since = row
    where = f" from {addr}" if addr else ""
    return f" (backend pid {pid}, {app or 'unnamed client'}{where}, connected since {since:%Y-%m-%d %H:%M:%S%z})"


@contextmanager
def environment_lock(
    dsn: str, *, environment: str, connect_timeout: timedelta = timedelta(seconds=10)
) -> Iterator[Connection]:
    """Hold the environment's apply lock for the duration of the block; yield the (autocommit) connection that
    holds it, on which the plan's statements should run. Raises BusyError if another session holds it."""
    what = f"taking the apply lock of environment {environment!r}"
    conn = connect(dsn, what=what, connect_timeout=connect_timeout, autocommit=True)
    try:
        with database_errors(what):
            got = conn.execute("select pg_try_advisory_lock(%s)", (APPLY_LOCK_KEY,)).fetchone()
        if not got or not got[0]:
            raise BusyError(
                f"applying to environment {environment!r}: busy: another applier holds the environment's apply "
                f"lock{_holder(conn)}; nothing was changed"
            )
        try:
            yield conn
        finally:
            if not (conn.broken or conn.closed):
                # Closing the session below releases the lock anyway.
                with contextlib.suppress(ReconcilerError), database_errors("releasing the apply lock"):
                    conn.execute("select pg_advisory_unlock(%s)", (APPLY_LOCK_KEY,))
    finally:
        conn.close()
