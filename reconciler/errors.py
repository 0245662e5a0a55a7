"""The reconciler's error tree.

Every error the package raises on purpose derives from :class:`ReconcilerError`. The tree::

    ReconcilerError
    +-- TerminalError              retrying without a change of input will not help
    |   +-- ConfigError            bad configuration file: names the file and the key path
    |   +-- DesiredStateError      desired-state SQL does not build: names the file and the line
    |   +-- VersionMismatchError   scratch and environment servers run different major versions
    |   +-- PlanError              a plan cannot be approved, rejected or applied as asked
    |   |   +-- StalePlanError     the plan no longer matches what a fresh diff yields
    |   +-- ApplyError             a statement failed while applying (carries the statement)
    |   +-- PolicyTestFileError  a policy test file is malformed: names the file and the case
    |   +-- PromotionError     a revision may not reach an environment before the earlier ones converged on it
    |   +-- StoreError             the state store is unusable (e.g. written by a newer version)
    |   +-- DatabaseError          the database (or its driver) refused a request: carries the SQLSTATE
    |   +-- UnsafeSqlError         what would run may differ from what was classified: refused before it runs
    +-- RetryableError             transient: try again later with backoff
        +-- UnreachableError       an environment or server cannot be reached
        +-- BusyError              another applier holds the environment's lock
        +-- LockTimeoutError       a statement waited too long for a lock, on every allowed attempt
        +-- ApplyInterruptedError  the connection was lost while applying; committed steps stay, the rest resumes

Driver errors enter the tree in one place, :func:`reconciler.db.translate`. Every raise picks a leaf, never
one of the three bases. Messages say what was being done, e.g.
``building desired state in scratch database: syntax error at 010_users.sql:14``.
"""

from __future__ import annotations


class ReconcilerError(Exception):
    """Base of every error raised by the reconciler on purpose."""


class TerminalError(ReconcilerError):
    """Retrying without a change of configuration or desired state will not help."""


class RetryableError(ReconcilerError):
    """A transient failure: the same request may succeed later."""


class ConfigError(TerminalError):
    """The configuration file is malformed; the message names the file and the key path."""

    def __init__(self, message: str, *, path: str | None = None, key: str | None = None) -> None:
        where = ""
        if path:
            where = path
            if key:
                where += f": {key}"
            where += ": "
        super().__init__(f"{where}{message}")
        self.path = path
        self.key = key


class DesiredStateError(TerminalError):
    """The desired state cannot be read or built; names the file and line when known."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None) -> None:
        super().__init__(message)
        self.file = file
        self.line = line


class VersionMismatchError(TerminalError):
    """Schemas are only compared between servers of the same PostgreSQL major version."""


class PlanError(TerminalError):
    """A plan cannot be approved, rejected or applied as requested."""


class StalePlanError(PlanError):
    """An approved plan no longer matches what a fresh diff yields."""


class _AtStatement(ReconcilerError):
    """Carries the statement an error happened at: its SQL, its index in the plan and PostgreSQL's SQLSTATE."""

    def __init__(
        self,
        message: str,
        *,
        statement: str | None = None,
        index: int | None = None,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message)
        self.statement = statement
        self.index = index
        self.sqlstate = sqlstate


class ApplyError(_AtStatement, TerminalError):
    """A statement failed while being applied."""


class PolicyTestFileError(TerminalError):
    """A policy test file cannot be read or is malformed; the message names the file (and the case)."""


class PromotionError(TerminalError):
    """A desired revision may not be applied to an environment yet: an earlier environment has not converged on it."""


class StoreError(TerminalError):
    """The state store cannot be used."""


class DatabaseError(_AtStatement, TerminalError):
    """The database, or its driver, refused a request for a reason that a retry will not change.

    Carries PostgreSQL's SQLSTATE when the server gave one, and ``position``: the 1-based character position in
    the statement that the error points at, when known.
    """

    def __init__(
        self,
        message: str,
        *,
        statement: str | None = None,
        sqlstate: str | None = None,
        position: int | None = None,
    ) -> None:
        super().__init__(message, statement=statement, sqlstate=sqlstate)
        self.position = position


class UnreachableError(RetryableError):
    """An environment or server cannot be reached."""


class BusyError(RetryableError):
    """Another applier holds the environment's advisory lock.

    ``holder`` describes the session holding it (if known); ``blocked_seconds`` is how long this process has found
    that same session holding it; ``overdue`` says that is longer than ``lock_held_alert_after``."""

    def __init__(self, message: str, *, holder: str = "", blocked_seconds: float = 0.0, overdue: bool = False) -> None:
        super().__init__(message)
        self.holder = holder
        self.blocked_seconds = blocked_seconds
        self.overdue = overdue


class LockTimeoutError(_AtStatement, RetryableError):
    """A statement waited longer than lock_timeout for a lock (on every attempt that was allowed)."""

    def __init__(
        self,
        message: str,
        *,
        statement: str | None = None,
        index: int | None = None,
        attempts: int = 1,
        sqlstate: str | None = None,
    ) -> None:
        super().__init__(message, statement=statement, index=index, sqlstate=sqlstate)
        self.attempts = attempts


class ApplyInterruptedError(_AtStatement, RetryableError):
    """The connection to the environment was lost while applying (terminated, server restart, network).

    The transaction in flight was rolled back by PostgreSQL; steps committed before it stay applied, and a later
    apply resumes after them.
    """


class UnsafeSqlError(TerminalError):
    """What would run may differ from what was classified, so nothing runs: a migra chunk that is not exactly one
    statement, a name that schemainspect prints unescaped, or a session whose parse-relevant settings differ from the
    pinned ones."""
