"""Warm sessions: one idle connection per environment kept between passes, so a fast-path pass (the catalog
stamp, and the fingerprint when the stamp moved) runs on a session whose catalog caches are already filled
instead of paying connection set-up and cache warm-up each time.

:class:`WarmSessions` is bounded (``daemon.keep_connections``; 0 keeps none). A connection is lent to one
caller at a time (it leaves the pool while lent, so two threads never share it), rolled back and put back when
the caller is done, and closed instead when the caller failed, when the session is broken, or when the pool is
full. When full, the connections already kept stay (a sweep over more environments than the pool holds then
finds a fixed subset warm; evicting the oldest would find none warm). :meth:`WarmSessions.clear` closes them
all (configuration reload, shutdown).

Only read-only work borrows (the fast path's fingerprint): a session left by a failed borrower is never reused,
and what an environment's contents could leave in a session (settings changed by a function, an open
transaction) is undone by the rollback or refused by :func:`~reconciler.db.session_drift` before reuse.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import TypeVar

import structlog

from .db import Connection, connect, is_broken, session_drift

log = structlog.get_logger("reconciler.warm")

T = TypeVar("T")


class WarmSessions:
    """Idle connections by connection string (at most ``capacity``); thread-safe."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._idle: dict[str, Connection] = {}
        self.reused = 0  # how many borrows found a warm session (for tests and benchmarks)

    def __len__(self) -> int:
        with self._lock:
            return len(self._idle)

    def run(self, dsn: str, fn: Callable[[Connection], T], *, what: str, connect_timeout: timedelta) -> T:
        """``fn`` on a warm session of ``dsn`` if one is idle, else on a new one (kept afterwards if there is room).

        ``fn`` must only read: when it fails on a reused session (the server may have ended it while idle), it
        runs once more on a new session. Raises what ``connect`` or ``fn`` raise.
        """
        warm = self._take(dsn)
        if warm is not None:
            try:
                result = fn(warm)
            except Exception as exc:  # retried once on a new session, which raises it again
                _close(warm)
                log.info("warm_session_failed", error=str(exc))
            else:
                self._give_back(dsn, warm)
                return result
        conn = connect(dsn, what=what, connect_timeout=connect_timeout)
        try:
            result = fn(conn)
        except BaseException:
            _close(conn)
            raise
        self._give_back(dsn, conn)
        return result

    def clear(self) -> None:
        """Close every idle session (a changed configuration, shutdown)."""
        with self._lock:
            idle = list(self._idle.values())
            self._idle.clear()
        for conn in idle:
            _close(conn)

    def _take(self, dsn: str) -> Connection | None:
        with self._lock:
            conn = self._idle.pop(dsn, None)
        if conn is None:
            return None
        if is_broken(conn):
            _close(conn)
            return None
        with self._lock:
            self.reused += 1
        return conn

    def _give_back(self, dsn: str, conn: Connection) -> None:
        """Roll back and keep ``conn`` idle, or close it (no room, broken, or its settings were changed)."""
        try:
            keep = not session_drift(conn)  # read inside the borrower's transaction, then undone with it
            conn.rollback()
            keep = keep and not is_broken(conn)
        except Exception:
            keep = False
        if keep:
            with self._lock:
                if dsn not in self._idle and len(self._idle) < self.capacity:
                    self._idle[dsn] = conn
                    return
        _close(conn)


def _close(conn: Connection) -> None:
    with contextlib.suppress(Exception):
        conn.close()
