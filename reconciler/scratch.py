"""Throwaway databases on a scratch server: build the desired state, clone environments, always clean up.

The scratch server is either a configured DSN on which the reconciler may create and drop databases, or the
embedded PostgreSQL the reconciler starts itself. Every database made here is named
``reconciler_scratch_<host>_<pid>_<random>`` and dropped when its user is done, also on errors. A process that
was killed cannot drop its own: the next scratch server opened on the same host drops the databases of processes
of this host that are no longer alive.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import secrets
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta

from .db import Connection, connect, database_errors, quote_ident, server_major, with_dbname
from .errors import DatabaseError, DesiredStateError, VersionMismatchError
from .inspect import Inspection, inspect_database
from .model import DesiredState
from .sqltext import line_of, split_statements

PREFIX = "reconciler_scratch_"
HOST_TAG = hashlib.sha256(socket.gethostname().encode()).hexdigest()[:8]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OverflowError):
        return True  # exists (another user's), or not a pid we can judge: keep its databases
    return True


@dataclass(frozen=True)
class BuiltDesired:
    """The desired state built in a scratch database and inspected once."""

    revision: str
    dbname: str
    dsn: str
    inspection: Inspection


class ScratchServer:
    """Creates and drops throwaway databases on one server; builds and caches the desired state."""

    def __init__(self, admin_dsn: str, *, connect_timeout: timedelta = timedelta(seconds=10)) -> None:
        self.admin_dsn = admin_dsn
        self.connect_timeout = connect_timeout
        self._major: int | None = None
        self._built: BuiltDesired | None = None
        self._lock = threading.RLock()
        self._swept = False

    # -- databases --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _admin(self, what: str) -> Iterator[Connection]:
        """An autocommit connection to the scratch server's own database, for ``what`` (errors name it)."""
        what = f"{what} on the scratch server"
        with (
            database_errors(what),
            connect(self.admin_dsn, what=what, connect_timeout=self.connect_timeout, autocommit=True) as conn,
        ):
            yield conn

    @property
    def major_version(self) -> int:
        if self._major is None:
            with self._admin("reading the server version") as conn:
                self._major = server_major(conn)
        return self._major

    def check_same_major(self, env_name: str, env_major: int) -> None:
        if env_major != self.major_version:
            raise VersionMismatchError(
                f"comparing environment {env_name!r}: it runs PostgreSQL {env_major} but the scratch server runs "
                f"PostgreSQL {self.major_version}; schemas are only compared on the same major version "
                "(point `scratch` at a server of the same major version)"
            )

    def drop_leftovers(self) -> list[str]:
        """Drop the scratch databases that dead processes of this host left behind; return their names."""
        mine = f"{PREFIX}{HOST_TAG}_"
        dropped: list[str] = []
        with self._admin("dropping leftover scratch databases") as conn:
            names = [
                r[0] for r in conn.execute("select datname from pg_database where starts_with(datname, %s)", (mine,))
            ]
            for name in names:
                pid_text = name[len(mine) :].split("_", 1)[0]
                if pid_text.isdigit() and int(pid_text) != os.getpid() and not _alive(int(pid_text)):
                    conn.execute(f"drop database if exists {quote_ident(name)} with (force)".encode())
                    dropped.append(name)
        return dropped

    def create_database(self, template: str | None = None) -> tuple[str, str]:
        if not self._swept:
            self._swept = True
            self.drop_leftovers()
        name = f"{PREFIX}{HOST_TAG}_{os.getpid()}_{secrets.token_hex(4)}"
        with self._admin("creating a scratch database") as conn:
            sql = f"create database {quote_ident(name)}"
            if template:
                sql += f" template {quote_ident(template)}"
            conn.execute(sql)
        return name, with_dbname(self.admin_dsn, name)

    def drop_database(self, name: str) -> None:
        with self._admin(f"dropping scratch database {name!r}") as conn:
            conn.execute(f"drop database if exists {quote_ident(name)} with (force)")

    @contextlib.contextmanager
    def temporary_database(self) -> Iterator[tuple[str, str]]:
        name, dsn = self.create_database()
        try:
            yield name, dsn
        finally:
            self.drop_database(name)

    # -- desired state ----------------------------------------------------------------------------
    def build_desired(self, desired: DesiredState) -> BuiltDesired:
        """Build ``desired`` in a scratch database (once per revision) and inspect it.

        A failing statement raises DesiredStateError naming the file and line; the database is dropped.
        """
        with self._lock:
            if self._built is not None and self._built.revision == desired.revision:
                return self._built
            name, dsn = self.create_database()
            try:
                run_sql_files(dsn, desired, connect_timeout=self.connect_timeout)
                inspection = inspect_database(
                    dsn, what="inspecting the desired state", connect_timeout=self.connect_timeout
                )
            except BaseException:
                self.drop_database(name)
                raise
            old, self._built = self._built, BuiltDesired(desired.revision, name, dsn, inspection)
            if old is not None:
                self.drop_database(old.dbname)
            return self._built

    def close(self) -> None:
        with self._lock:
            if self._built is not None:
                with contextlib.suppress(Exception):
                    self.drop_database(self._built.dbname)
                self._built = None


def run_sql_files(dsn: str, desired: DesiredState, *, connect_timeout: timedelta = timedelta(seconds=10)) -> None:
    """Execute every statement of every desired-state file in order; errors name the file and the line."""
    what = "building desired state in scratch database"
    with connect(dsn, what=what, connect_timeout=connect_timeout, autocommit=True) as conn:
        for f in desired.files:
            for stmt in split_statements(f.text):
                try:
                    with database_errors(what):
                        conn.execute(stmt.sql.encode("utf-8"))  # bytes: no client-side placeholder parsing
                except DatabaseError as exc:  # retryable errors are the scratch server's, not the SQL's
                    line = stmt.line
                    if exc.position:
                        line += line_of(stmt.sql, exc.position - 1) - 1
                    raise DesiredStateError(f"{exc} at {f.path}:{line}", file=f.path, line=line) from exc
