"""Execute steps on an environment: transactions where PostgreSQL allows, timeouts, retries, clear failures.

The executor runs :class:`~reconciler.model.ExecStep` s exactly as given and parses no SQL: the hazard engine's
online pass decided each step's transaction mode and timeouts. Consecutive transactional steps run together in one
transaction (a *unit*); a step PostgreSQL forbids inside a transaction block (``CREATE INDEX CONCURRENTLY``, ...) is a
unit of its own, committed, in plan order.

Every step runs with its own ``lock_timeout`` and ``statement_timeout`` (``SET LOCAL`` inside a transaction,
session-level and reset for a step alone); a step without them (built outside the engine) runs with the
environment's. A unit that times out waiting for a lock (or is chosen as a deadlock victim) is rolled back and
retried after a bounded, jittered exponential backoff, so the reconciler never queues in front of other sessions for
longer than the lock timeout; every attempt and wait is reported. Before retrying a step that builds an index
concurrently (``ExecStep.concurrent_index``), the INVALID index its failed attempt left is dropped.

``skip`` lets a caller resume a plan after the steps it already committed; ``on_commit`` is called after each
committed unit (to record progress and audit), ``on_lock_wait`` after each failed attempt.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from .config import EnvironmentConfig
from .db import (
    LOCK_NOT_GRANTED,
    Connection,
    DriverError,
    QueryCanceled,
    check_session,
    connect,
    error_text,
    execute_alone,
    is_broken,
)
from .errors import ApplyError, ApplyInterruptedError, LockTimeoutError
from .model import ExecStep

log = structlog.get_logger("reconciler.apply")

Unit = Sequence[tuple[int, ExecStep]]


@dataclass(frozen=True)
class AppliedStatement:
    """A statement that was committed: how long its successful run took, after how many attempts and waits."""

    sql: str
    duration: timedelta
    index: int = 0
    attempts: int = 1
    waits: tuple[timedelta, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "sql": self.sql,
            "duration_seconds": round(self.duration.total_seconds(), 6),
            "attempts": self.attempts,
            "waits_seconds": [round(w.total_seconds(), 6) for w in self.waits],
        }


@dataclass(frozen=True)
class LockWait:
    """One attempt of a unit that gave up waiting for a lock; ``backoff`` is the pause before the next attempt."""

    index: int  # the statement that waited
    sql: str
    attempt: int
    waited: timedelta
    backoff: timedelta
    error: str
    final: bool  # no attempt follows

    def to_json(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "sql": self.sql,
            "attempt": self.attempt,
            "waited_seconds": round(self.waited.total_seconds(), 6),
            "backoff_seconds": round(self.backoff.total_seconds(), 6),
            "error": self.error,
            "final": self.final,
        }


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retries of lock timeouts: ``retries`` more attempts, pauses ``base * 2**n`` capped at ``cap``.

    Each pause is drawn uniformly between half and all of that ceiling ("equal jitter"), so two appliers that
    collide do not collide again in step, and no pause is ever shorter than half the ceiling.
    """

    retries: int
    base: timedelta
    cap: timedelta
    rng: random.Random = field(default_factory=random.Random, compare=False)

    @classmethod
    def for_env(cls, env: EnvironmentConfig) -> RetryPolicy:
        return cls(env.lock_retries, env.lock_retry_backoff, env.lock_retry_backoff_max)

    def backoff(self, failed_attempts: int) -> timedelta:
        ceiling: timedelta = min(self.cap, self.base * (2 ** max(0, failed_attempts - 1)))
        factor: float = self.rng.uniform(0.5, 1.0)
        return ceiling * factor


def _ms(d: timedelta) -> int:
    return max(0, int(d.total_seconds() * 1000))


def as_steps(items: Sequence[str | ExecStep]) -> list[ExecStep]:
    return [i if isinstance(i, ExecStep) else ExecStep(i) for i in items]


@dataclass(frozen=True)
class Timeouts:
    """The timeouts one step runs with: its own, else the environment's."""

    statement: timedelta
    lock: timedelta

    @classmethod
    def of(cls, step: ExecStep, env: EnvironmentConfig) -> Timeouts:
        return cls(
            env.statement_timeout if step.statement_timeout is None else step.statement_timeout,
            env.lock_timeout if step.lock_timeout is None else step.lock_timeout,
        )


def human(d: timedelta) -> str:
    """A duration as configured: ``200ms``, ``5s``, ``15m``, ``2h``."""
    ms = _ms(d)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


class _LockWaitExpired(Exception):
    """Internal: one statement of a unit gave up waiting for a lock; the unit is rolled back and may retry."""

    def __init__(self, index: int, sql: str, started: float, lock_timeout: timedelta, exc: DriverError) -> None:
        super().__init__(error_text(exc))
        self.index = index
        self.sql = sql
        self.waited = timedelta(seconds=time.monotonic() - started)
        self.lock_timeout = lock_timeout
        self.error = error_text(exc)
        self.sqlstate = exc.diag.sqlstate


def _failed(conn: Connection, exc: DriverError, index: int, sql: str, lost: str, refused: str) -> Exception:
    """ApplyInterruptedError saying ``lost`` if the connection to the environment is gone, else ApplyError saying
    ``refused``; both name the statement ``index`` (``sql``) and PostgreSQL's SQLSTATE."""
    kind, text = (ApplyInterruptedError, lost) if is_broken(conn) else (ApplyError, refused)
    return kind(text, statement=sql, index=index, sqlstate=exc.diag.sqlstate)


def _statement_failed(conn: Connection, exc: DriverError, index: int, sql: str) -> Exception:
    """The error for a statement PostgreSQL refused, or whose connection was lost while it ran."""
    text, at = error_text(exc), f"statement {index + 1}"
    lost = f"{at}: the connection to the environment was lost ({text}); its transaction was rolled back: {sql}"
    return _failed(conn, exc, index, sql, lost, f"{at} failed: {text}: {sql}")


def _unit_failed(conn: Connection, exc: DriverError, unit: Unit) -> Exception:
    """The error for a unit that failed outside its statements: SET, COMMIT or RESET.

    A lost connection during COMMIT leaves it unknown whether the unit committed; a later apply re-diffs and finds
    out.
    """
    span = f"statements {unit[0][0] + 1}-{unit[-1][0] + 1}"
    lost = f"{span}: the connection to the environment was lost ({error_text(exc)})"
    return _failed(conn, exc, unit[0][0], unit[0][1].sql, lost, f"{span}: {error_text(exc)}")


def _set_timeouts(conn: Connection, timeouts: Timeouts, *, local: bool) -> None:
    scope = "set local" if local else "set"
    conn.execute(f"{scope} lock_timeout = {_ms(timeouts.lock)}".encode())
    conn.execute(f"{scope} statement_timeout = {_ms(timeouts.statement)}".encode())


def _run_one(conn: Connection, index: int, sql: str, timeouts: Timeouts) -> timedelta:
    started = time.monotonic()
    try:
        execute_alone(conn, sql)
    except LOCK_NOT_GRANTED as exc:
        raise _LockWaitExpired(index, sql, started, timeouts.lock, exc) from exc
    except QueryCanceled as exc:
        why = f"{error_text(exc)}; statement_timeout is {human(timeouts.statement)}"
        raise ApplyError(
            f"statement {index + 1} was cancelled ({why}): {sql}",
            statement=sql,
            index=index,
            sqlstate=exc.diag.sqlstate,
        ) from exc
    except DriverError as exc:
        raise _statement_failed(conn, exc, index, sql) from exc
    return timedelta(seconds=time.monotonic() - started)


_INVALID_INDEX = (
    "select i.indexrelid::regclass::text from pg_index i where i.indexrelid = to_regclass(%s) and not i.indisvalid"
)


def _drop_invalid_index(conn: Connection, index: int, step: ExecStep, timeouts: Timeouts) -> None:
    """Before retrying a concurrent index build: drop the INVALID index its failed attempt left behind.

    The drop waits for locks like any statement; if it times out, that counts as a failed attempt of the step.
    """
    if step.concurrent_index is None:
        return
    started = time.monotonic()
    drop = ""
    try:
        row = conn.execute(_INVALID_INDEX, (step.concurrent_index,)).fetchone()
        if row is None:
            return
        drop = f"drop index concurrently if exists {row[0]}"
        conn.execute(drop.encode())
        log.info("invalid_index_dropped", index=str(row[0]))
    except LOCK_NOT_GRANTED as exc:
        raise _LockWaitExpired(index, drop or step.sql, started, timeouts.lock, exc) from exc
    except DriverError as exc:
        if is_broken(conn):
            raise
        log.warning("invalid_index_not_dropped", error=error_text(exc))


def _run_transaction(conn: Connection, unit: Unit, env: EnvironmentConfig) -> list[timedelta]:
    """Run the steps of ``unit`` in one transaction, each with its own ``SET LOCAL`` timeouts."""
    durations: list[timedelta] = []
    current: Timeouts | None = None
    with conn.transaction():
        for index, step in unit:
            timeouts = Timeouts.of(step, env)
            if timeouts != current:
                _set_timeouts(conn, timeouts, local=True)
                current = timeouts
            durations.append(_run_one(conn, index, step.sql, timeouts))
    return durations


def _run_alone(conn: Connection, index: int, step: ExecStep, env: EnvironmentConfig, attempt: int) -> timedelta:
    """Run a step that may not run in a transaction block, with session timeouts reset afterwards."""
    timeouts = Timeouts.of(step, env)
    _set_timeouts(conn, timeouts, local=False)
    try:
        if attempt > 1:
            _drop_invalid_index(conn, index, step, timeouts)
        return _run_one(conn, index, step.sql, timeouts)
    finally:
        if not is_broken(conn):
            conn.execute(b"reset lock_timeout")
            conn.execute(b"reset statement_timeout")


def _attempt(conn: Connection, unit: Unit, env: EnvironmentConfig, attempt: int) -> list[timedelta]:
    """One attempt of ``unit``: the duration of each of its steps."""
    try:
        if unit[0][1].transactional:
            return _run_transaction(conn, unit, env)
        index, step = unit[0]
        return [_run_alone(conn, index, step, env, attempt)]
    except (ApplyError, ApplyInterruptedError, _LockWaitExpired):
        raise
    except DriverError as exc:
        raise _unit_failed(conn, exc, unit) from exc


@dataclass(frozen=True)
class _Retry:
    """How a unit that waited too long for a lock is retried, and who hears about each wait."""

    policy: RetryPolicy
    on_lock_wait: Callable[[LockWait], None] | None
    sleep: Callable[[float], None]
    before_attempt: Callable[[], None] | None

    def waited(self, exc: _LockWaitExpired, attempt: int) -> timedelta:
        """Report a failed attempt and pause before the next; raise LockTimeoutError if none may follow."""
        final = attempt > self.policy.retries
        backoff = timedelta(0) if final else self.policy.backoff(attempt)
        wait = LockWait(exc.index, exc.sql, attempt, exc.waited, backoff, exc.error, final)
        log.warning("lock_wait_expired", **wait.to_json())
        if self.on_lock_wait is not None:
            self.on_lock_wait(wait)
        if final:
            raise LockTimeoutError(
                f"statement {exc.index + 1} waited longer than lock_timeout ({human(exc.lock_timeout)}) for a lock "
                f"on each of {attempt} attempt(s) ({exc.error}): {exc.sql}",
                statement=exc.sql,
                index=exc.index,
                attempts=attempt,
                sqlstate=exc.sqlstate,
            ) from exc
        self.sleep(backoff.total_seconds())
        return backoff


def _run_unit(conn: Connection, unit: Unit, env: EnvironmentConfig, retry: _Retry) -> list[AppliedStatement]:
    attempt = 0
    waits: list[timedelta] = []
    while True:
        attempt += 1
        if retry.before_attempt is not None:
            retry.before_attempt()  # may raise to stop before this attempt (e.g. the plan was rejected meanwhile)
        try:
            durations = _attempt(conn, unit, env, attempt)
        except _LockWaitExpired as exc:
            waits.append(retry.waited(exc, attempt))
            continue
        return [
            AppliedStatement(step.sql, d, index, attempt, tuple(waits))
            for (index, step), d in zip(unit, durations, strict=True)
        ]


def units(steps: Sequence[ExecStep], skip: Collection[int] = ()) -> list[list[tuple[int, ExecStep]]]:
    """Group the steps not in ``skip`` into units: runs of consecutive transactional steps, or one other step."""
    out: list[list[tuple[int, ExecStep]]] = []
    for i, step in enumerate(steps):
        if i in skip:
            continue
        if step.transactional and out and out[-1][-1][1].transactional and out[-1][-1][0] == i - 1:
            out[-1].append((i, step))
        else:
            out.append([(i, step)])
    return out


def execute_steps(
    conn: Connection,
    items: Sequence[str | ExecStep],
    env: EnvironmentConfig,
    *,
    skip: Collection[int] = (),
    on_commit: Callable[[list[AppliedStatement]], None] | None = None,
    on_lock_wait: Callable[[LockWait], None] | None = None,
    retry: RetryPolicy | None = None,
    sleep: Callable[[float], None] = time.sleep,
    before_attempt: Callable[[], None] | None = None,
) -> list[AppliedStatement]:
    """Run ``items`` in order on ``conn`` (which must be in autocommit mode), except the indexes in ``skip``.

    ``before_attempt`` is called before every attempt of every unit; whatever it raises stops the run there.
    Nothing runs unless the session's parse-relevant settings are the pinned ones (UnsafeSqlError), and each
    statement is sent alone through the extended protocol, so one string never runs as two statements.

    Consecutive transactional steps share one transaction, each with its ``SET LOCAL`` timeouts, rolled back as a
    whole on failure; a non-transactional step runs alone with session-level timeouts. A step's own timeouts win
    over the environment's ``statement_timeout`` and ``lock_timeout``. A unit that times out on a lock is
    retried per ``retry`` (default: the environment's ``lock_retries`` and backoff). Raises ApplyError,
    LockTimeoutError or ApplyInterruptedError naming the failing statement; units committed before it stay applied
    (and were passed to ``on_commit``).
    """
    check_session(conn, "applying")
    steps = as_steps(items)
    retrying = _Retry(retry or RetryPolicy.for_env(env), on_lock_wait, sleep, before_attempt)
    done: list[AppliedStatement] = []
    for unit in units(steps, skip):
        applied = _run_unit(conn, unit, env, retrying)
        done.extend(applied)
        if on_commit is not None:
            on_commit(applied)
    return done


def apply_statements(
    dsn: str,
    items: Sequence[str | ExecStep],
    env: EnvironmentConfig,
    *,
    what: str,
    skip: Collection[int] = (),
    on_commit: Callable[[list[AppliedStatement]], None] | None = None,
    on_lock_wait: Callable[[LockWait], None] | None = None,
) -> list[AppliedStatement]:
    """Connect to ``dsn`` and run ``items`` with :func:`execute_steps`."""
    if not items:
        return []
    with connect(dsn, what=what, connect_timeout=env.connect_timeout, autocommit=True) as conn:
        return execute_steps(conn, items, env, skip=skip, on_commit=on_commit, on_lock_wait=on_lock_wait)
