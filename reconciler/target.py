"""Resolve an environment's name once into a :class:`Target`: its configuration, DSN and database identity.

Entry points (the CLI, the daemon's reconcile, the API) resolve a request here; every stage below them receives the
``Target`` and never looks the name up again.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .config import Config, EnvironmentConfig
from .db import database_errors, database_identity, with_session_timeouts
from .model import DatabaseIdentity

EMBEDDED_SCHEME = "embedded:"


@dataclass(frozen=True)
class Target:
    """One environment as the stages see it.

    ``dsn`` carries the environment's ``lock_timeout`` and ``statement_timeout`` as session defaults, so every
    connection to it (inspection, fingerprint, figures, the apply lock) is bounded. ``database`` names the database
    the DSN points at (``host:port/dbname``), known without connecting; :func:`read_identity` adds what the server
    says it is (cluster system identifier, database oid): plans and approvals are bound to that.
    """

    name: str
    env: EnvironmentConfig
    dsn: str
    database: str

    def doing(self, what: str) -> str:
        """``what`` for an error message: ``"inspecting environment 'prod'"``."""
        return f"{what} environment {self.name!r}"


def resolve(config: Config, name: str, embedded_dsn: Callable[[str], str]) -> Target:
    """The target for environment ``name`` (ConfigError if there is none). ``embedded_dsn(dbname)`` is asked only
    for a DSN of the form ``embedded:[/]DBNAME``, which names a database of the embedded server."""
    env = config.environment(name)
    dsn = env.dsn
    if dsn.startswith(EMBEDDED_SCHEME):
        dsn = embedded_dsn(dsn[len(EMBEDDED_SCHEME) :].strip("/") or name)
    dsn = with_session_timeouts(dsn, lock_timeout=env.lock_timeout, statement_timeout=env.statement_timeout)
    return Target(name, env, dsn, database_identity(dsn))


# One query: which cluster (pg_control_system() is readable by every role) and which database of it.
IDENTITY_SQL = (
    "select (select system_identifier::text from pg_control_system()), "
    "(select oid::bigint from pg_database where datname = current_database())"
)


def read_identity(target: Target, conn: Any) -> DatabaseIdentity:
    """The identity of the database ``conn`` (a connection to ``target``) is connected to."""
    with database_errors(target.doing("reading the database identity of")):
        row = conn.execute(IDENTITY_SQL).fetchone()
    system, oid = (row[0], row[1]) if row is not None else ("", None)
    return DatabaseIdentity(target.database, str(system or ""), None if oid is None else int(oid))
