"""Several replicas sharing one PostgreSQL store split the environments between them.

PostgreSQL's lock manager is the coordination engine; there is no election or lease protocol of our own:

* Each replica keeps one connection to the store whose ``application_name`` is ``schema-reconciler/<replica id>``:
  that is its registration. The live replicas are the distinct such names in ``pg_stat_activity`` of the store's
  database. A replica that dies loses its connection, and with it its registration and its locks.
* Environments are balanced by rendezvous (highest-random-weight) hashing over the live replicas: each
  environment goes to the replica with the highest ``sha256(replica id, environment)``. When a replica joins or
  leaves, only the environments it gains or loses move.
* The owner of an environment holds a session-level advisory lock for it on that connection
  (``pg_try_advisory_lock(SHARD_LOCK, hashtext(environment))``); a replica reconciles only environments whose lock
  it holds. Handing over releases the lock (never while a pass of it runs); taking over waits until the previous
  owner released it or died. The per-environment apply lock on the environment itself stays, so a plan can never
  run twice, even if two replicas ever believed they owned the same environment.

:meth:`Sharder.tick` runs on the daemon's watch job. It never raises: a lost store connection drops every
environment (none is reconciled by this replica until the locks are taken again).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import socket
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import structlog

from ..db import Connection, connect, database_errors, redact
from ..errors import ReconcilerError

log = structlog.get_logger("reconciler.sharding")

APP_PREFIX = "schema-reconciler/"
SHARD_LOCK = 7294004  # first key of pg_try_advisory_lock(int, int): one owner per environment


def replica_id() -> str:
    """A name for this process: host, pid and a random suffix (a restarted process is a new replica)."""
    host = socket.gethostname().split(".")[0][:24]
    return f"{host}-{os.getpid()}-{secrets.token_hex(3)}"


def rendezvous_owner(environment: str, replicas: Iterable[str]) -> str | None:
    """The replica that ``environment`` belongs to: the highest hash of (replica, environment)."""

    def weight(replica: str) -> bytes:
        return hashlib.sha256(f"{replica}\x00{environment}".encode()).digest()

    return max(replicas, key=weight, default=None)


def libpq_url(state_url: str) -> str | None:
    """The libpq URL of a PostgreSQL store's SQLAlchemy URL, or None for another store (no sharding there)."""
    scheme, sep, rest = state_url.partition("://")
    if not sep or scheme.split("+")[0] not in ("postgresql", "postgres"):
        return None
    return "postgresql://" + rest


@dataclass(frozen=True)
class Share:
    """What one tick saw: the live replicas, the environments this replica should own, and those it holds."""

    replicas: tuple[str, ...]
    wanted: frozenset[str]
    held: frozenset[str]

    @property
    def complete(self) -> bool:
        return self.wanted <= self.held


class Sharder:
    """Takes and hands over this replica's environments; thread-safe."""

    def __init__(
        self,
        store_url: str,
        *,
        running: Callable[[str], bool],
        on_gained: Callable[[str], None],
        on_lost: Callable[[str], None],
        me: str | None = None,
    ) -> None:
        self.me = me or replica_id()
        self._dsn = store_url
        self._running = running
        self._on_gained = on_gained
        self._on_lost = on_lost
        self._conn: Connection | None = None
        self._held: set[str] = set()
        self._lock = threading.Lock()
        self.share = Share((), frozenset(), frozenset())

    def owns(self, environment: str) -> bool:
        with self._lock:
            return environment in self._held

    def holds_share(self) -> bool:
        with self._lock:
            return self._conn is not None and self.share.complete

    def tick(self, environments: Iterable[str]) -> Share:
        """Register, list the live replicas, hand over and take environments as rendezvous hashing says."""
        names = sorted(set(environments))
        try:
            conn = self._connection()
            with database_errors("balancing environments between replicas"):
                replicas = self._replicas(conn)
                wanted = {n for n in names if rendezvous_owner(n, replicas) == self.me}
                self._release(conn, [n for n in self._held_copy() if n not in wanted])
                self._take(conn, [n for n in names if n in wanted and not self.owns(n)])
        except ReconcilerError as exc:
            log.error("sharding_failed", error=redact(str(exc)))
            self._drop_all()
            return self.share
        with self._lock:
            self.share = Share(tuple(replicas), frozenset(wanted), frozenset(self._held))
        return self.share

    def close(self) -> None:
        """Leave: the connection closes and PostgreSQL releases every lock, so the others take over at once."""
        conn, self._conn = self._conn, None
        with self._lock:
            self._held.clear()
        if conn is not None:
            conn.close()

    # -- internals ----------------------------------------------------------------------------------
    def _connection(self) -> Connection:
        if self._conn is not None and not self._conn.closed:
            return self._conn
        what = "connecting to the state store for sharding"
        conn = connect(self._dsn, what=what, autocommit=True)
        with database_errors(what):
            conn.execute("select set_config('application_name', %s, false)", (APP_PREFIX + self.me,))
        self._conn = conn
        return conn

    def _replicas(self, conn: Connection) -> list[str]:
        rows = conn.execute(
            "select distinct substr(application_name, %s) from pg_stat_activity "
            "where datname = current_database() and starts_with(application_name, %s)",
            (len(APP_PREFIX) + 1, APP_PREFIX),
        ).fetchall()
        return sorted({str(r[0]) for r in rows} | {self.me})

    def _held_copy(self) -> list[str]:
        with self._lock:
            return sorted(self._held)

    def _release(self, conn: Connection, names: list[str]) -> None:
        for name in names:
            if self._running(name):
                continue  # handed over after its pass ends (next tick)
            with self._lock:
                self._held.discard(name)
            conn.execute("select pg_advisory_unlock(%s, hashtext(%s))", (SHARD_LOCK, name))
            log.info("environment_handed_over", environment=name)
            self._on_lost(name)

    def _take(self, conn: Connection, names: list[str]) -> None:
        for name in names:
            row = conn.execute("select pg_try_advisory_lock(%s, hashtext(%s))", (SHARD_LOCK, name)).fetchone()
            if row is None or not row[0]:
                continue  # its previous owner still holds it: next tick
            with self._lock:
                self._held.add(name)
            log.info("environment_taken", environment=name)
            self._on_gained(name)

    def _drop_all(self) -> None:
        conn, self._conn = self._conn, None
        with self._lock:
            lost = sorted(self._held)
            self._held.clear()
            self.share = Share((), self.share.wanted, frozenset())
        if conn is not None:
            try:
                conn.close()
            except Exception:
                log.exception("sharding_close_failed")
        for name in lost:
            self._on_lost(name)
