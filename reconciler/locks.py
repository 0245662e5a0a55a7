"""One applier per environment: a session-level PostgreSQL advisory lock taken on the environment database itself.

The lock lives on the environment, not in the reconciler's store, so two reconcilers sharing the installation's
secret (with or without a shared store), or a reconciler and a person running the CLI, never apply to one environment
at once. It is taken with ``pg_try_advisory_lock`` (never waits): the second applier gets :class:`BusyError` and
changes nothing. The lock is held by the connection that runs the plan's statements, so it cannot outlive the
applier: if that connection dies, PostgreSQL releases the lock with it.

The key is derived from the installation's secret, the environment and its database
(:func:`reconciler.signing.lock_key`): a role with CONNECT on the environment (environment contents are not
trusted) cannot compute it, so it cannot take the lock ahead of the reconciler and keep it busy forever. Should
the key still be held by someone else (e.g. a stuck reconciler), this process remembers since when it has found it
held by the same session; past ``lock_held_alert_after`` the BusyError says ``overdue``, which the daemon turns into
a condition reason and ``schema_reconciler_apply_lock_blocked_seconds``.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

from .db import Connection, connect, database_errors
from .errors import BusyError, ReconcilerError


class _BlockedSince:
    """Per environment: which session was last found holding the lock, and since when (monotonic seconds)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._seen: dict[str, tuple[str, float]] = {}

    def blocked(self, environment: str, holder: str) -> float:
        """Seconds this process has found ``holder`` holding the lock (0 on the first sighting)."""
        now = time.monotonic()
        with self._lock:
            was = self._seen.get(environment)
            if was is None or was[0] != holder:
                self._seen[environment] = (holder, now)
                return 0.0
            return now - was[1]

    def clear(self, environment: str) -> None:
        with self._lock:
            self._seen.pop(environment, None)


BLOCKED = _BlockedSince()


def _holder(conn: Connection, key: int) -> tuple[str, str]:
    """Who holds the apply lock, as far as pg_locks and pg_stat_activity tell: a description (empty if unknown)
    and an id of the holding session (pid and connection time) that stays the same while it holds the lock."""
    key = key & 0xFFFFFFFFFFFFFFFF
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
        return "", ""
    if row is None:
        return "", ""
    pid, app, addr, since = row
    where = f" from {addr}" if addr else ""
    text = f" (backend pid {pid}, {app or 'unnamed client'}{where}, connected since {since:%Y-%m-%d %H:%M:%S%z})"
    return text, f"{pid}@{since.isoformat()}"


def _busy(conn: Connection, environment: str, key: int, alert_after: timedelta) -> BusyError:
    holder, who = _holder(conn, key)
    blocked = BLOCKED.blocked(environment, who or "unknown")
    overdue = blocked >= alert_after.total_seconds()
    longer = f"; found held by it for {blocked:.0f}s, longer than lock_held_alert_after" if overdue else ""
    return BusyError(
        f"applying to environment {environment!r}: busy: another applier holds the environment's apply "
        f"lock{holder}{longer}; nothing was changed",
        holder=holder.strip(" ()"),
        blocked_seconds=blocked,
        overdue=overdue,
    )


@contextmanager
def environment_lock(
    dsn: str,
    *,
    environment: str,
    key: int,
    connect_timeout: timedelta = timedelta(seconds=10),
    alert_after: timedelta = timedelta(minutes=10),
) -> Iterator[Connection]:
    """Hold the environment's apply lock (advisory lock ``key``, see :func:`reconciler.signing.lock_key`) for the
    duration of the block; yield the (autocommit) connection that holds it, on which the plan's statements should
    run. Raises BusyError if another session holds it (``overdue`` once held longer than ``alert_after``)."""
    what = f"taking the apply lock of environment {environment!r}"
    conn = connect(dsn, what=what, connect_timeout=connect_timeout, autocommit=True)
    try:
        with database_errors(what):
            got = conn.execute("select pg_try_advisory_lock(%s)", (key,)).fetchone()
        if not got or not got[0]:
            raise _busy(conn, environment, key, alert_after)
        BLOCKED.clear(environment)
        try:
            yield conn
        finally:
            if not (conn.broken or conn.closed):
                # Closing the session below releases the lock anyway.
                with contextlib.suppress(ReconcilerError), database_errors("releasing the apply lock"):
                    conn.execute("select pg_advisory_unlock(%s)", (key,))
    finally:
        conn.close()
