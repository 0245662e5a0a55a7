"""Execute statements on an environment: transactions where PostgreSQL allows, timeouts, retries, clear failures.

Consecutive transactional statements run together in one transaction (a *unit*); a statement PostgreSQL forbids
inside a transaction block (``CREATE INDEX CONCURRENTLY``, ...) is a unit of its own, committed, in plan order.

Every statement runs with the environment's ``lock_timeout`` and ``statement_timeout`` (a concurrent index build
with ``concurrent_statement_timeout``). A unit that times out waiting for a lock (or is chosen as a deadlock
victim) is rolled back and retried after a bounded, jittered exponential backoff, so the reconciler never queues
in front of other sessions for longer than the lock timeout; every attempt and wait is reported.

``skip`` lets a caller resume a plan after the steps it already committed; ``on_commit`` is called after each
committed unit (to record progress and audit), ``on_lock_wait`` after each failed attempt.
"""

from __future__ import annotations

import random
import re
import time
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import psycopg
import structlog
from pglast import ast, parser
from psycopg import errors as pgerrors

from .config import EnvironmentConfig
from .db import connect
from .errors import ApplyError, ApplyInterruptedError, LockTimeoutError

log = structlog.get_logger("reconciler.apply")

_CONCURRENTLY = re.compile(r"\bconcurrently\b", re.IGNORECASE)


@dataclass(frozen=True)
class Step:
    """One SQL statement to execute, and whether it may run inside a transaction block."""

    sql: str
    transactional: bool = True


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


def pg_error_text(exc: psycopg.Error) -> str:
    diag = exc.diag
    text = (diag.message_primary or str(exc)).strip()
    if diag.sqlstate:
        text = f"{text} (SQLSTATE {diag.sqlstate})"
    return text


def as_steps(items: Sequence[str | Step]) -> list[Step]:
    return [i if isinstance(i, Step) else Step(i) for i in items]


def _parse_one(sql: str) -> Any | None:
    try:
        stmts = parser.parse_sql(sql)
    except parser.ParseError:
        return None
    return stmts[0].stmt if len(stmts) == 1 else None


def is_concurrent(sql: str) -> bool:
    """Whether ``sql`` is a concurrent index build, rebuild or drop (it gets ``concurrent_statement_timeout``)."""
    node = _parse_one(sql)
    if node is None:
        return bool(_CONCURRENTLY.search(sql))
    if isinstance(node, ast.IndexStmt | ast.DropStmt):
        return bool(node.concurrent)
    if isinstance(node, ast.ReindexStmt):
        return any(getattr(p, "defname", None) == "concurrently" for p in node.params or ())
    return False


def statement_timeout_for(step: Step, env: EnvironmentConfig) -> timedelta:
    if not step.transactional and is_concurrent(step.sql):
        return max(env.statement_timeout, env.concurrent_statement_timeout)
    return env.statement_timeout


class _LockWaitExpired(Exception):
    """Internal: one statement of a unit gave up waiting for a lock; the unit is rolled back and may retry."""

    def __init__(self, index: int, sql: str, waited: timedelta, exc: psycopg.Error) -> None:
        super().__init__(pg_error_text(exc))
        self.index = index
        self.sql = sql
        self.waited = waited
        self.error = pg_error_text(exc)
        self.sqlstate = exc.diag.sqlstate


def _broken(conn: psycopg.Connection[Any]) -> bool:
    return bool(conn.broken or conn.closed)


def human(d: timedelta) -> str:
    """A duration as configured: ``200ms``, ``5s``, ``15m``, ``2h``."""
    ms = _ms(d)
    for unit, size in (("h", 3_600_000), ("m", 60_000), ("s", 1000)):
        if ms >= size and ms % size == 0:
            return f"{ms // size}{unit}"
    return f"{ms}ms"


def _run_one(
    conn: psycopg.Connection[Any], index: int, sql: str, env: EnvironmentConfig, timeout: timedelta | None = None
) -> timedelta:
    started = time.monotonic()
    try:
        conn.execute(sql.encode("utf-8"))
    except (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected) as exc:
        raise _LockWaitExpired(index, sql, timedelta(seconds=time.monotonic() - started), exc) from exc
    except pgerrors.QueryCanceled as exc:
        raise ApplyError(
            f"statement {index + 1} was cancelled ({pg_error_text(exc)}; statement_timeout is "
            f"{human(timeout or env.statement_timeout)}): {sql}",
            statement=sql,
            index=index,
            sqlstate=exc.diag.sqlstate,
        ) from exc
    except psycopg.Error as exc:
        if _broken(conn):
            raise ApplyInterruptedError(
                f"statement {index + 1}: the connection to the environment was lost ({pg_error_text(exc)}); "
                f"its transaction was rolled back: {sql}",
                statement=sql,
                index=index,
                sqlstate=exc.diag.sqlstate,
            ) from exc
        raise ApplyError(
            f"statement {index + 1} failed: {pg_error_text(exc)}: {sql}",
            statement=sql,
            index=index,
            sqlstate=exc.diag.sqlstate,
        ) from exc
    return timedelta(seconds=time.monotonic() - started)


def _invalid_index_left_by(conn: psycopg.Connection[Any], sql: str) -> str | None:
    """The qualified name of an INVALID index that a failed ``CREATE INDEX CONCURRENTLY`` ``sql`` left behind."""
    node = _parse_one(sql)
    if not isinstance(node, ast.IndexStmt) or not node.concurrent or not node.idxname:
        return None
    schema = node.relation.schemaname if node.relation is not None else None
    row = conn.execute(
        "select quote_ident(n.nspname) || '.' || quote_ident(c.relname) from pg_index i "
        "join pg_class c on c.oid = i.indexrelid join pg_namespace n on n.oid = c.relnamespace "
        "where c.relname = %s and not i.indisvalid "
        "and (n.nspname = %s or (%s::text is null and pg_table_is_visible(c.oid)))",
        (node.idxname, schema, schema),
    ).fetchone()
    return str(row[0]) if row else None


def _drop_invalid_index(conn: psycopg.Connection[Any], index: int, sql: str) -> None:
    """Before retrying a concurrent index build: drop the INVALID index its failed attempt left behind.

    The drop waits for locks like any statement; if it times out, that counts as a failed attempt of the step.
    """
    started = time.monotonic()
    drop = ""
    try:
        name = _invalid_index_left_by(conn, sql)
        if name is None:
            return
        drop = f"drop index concurrently if exists {name}"
        conn.execute(drop.encode())
        log.info("invalid_index_dropped", index=name)
    except (pgerrors.LockNotAvailable, pgerrors.DeadlockDetected) as exc:
        raise _LockWaitExpired(index, drop or sql, timedelta(seconds=time.monotonic() - started), exc) from exc
    except psycopg.Error as exc:
        if _broken(conn):
            raise
        log.warning("invalid_index_not_dropped", error=pg_error_text(exc))


def _run_unit(
    conn: psycopg.Connection[Any],
    unit: Sequence[tuple[int, Step]],
    env: EnvironmentConfig,
    policy: RetryPolicy,
    on_lock_wait: Callable[[LockWait], None] | None,
    sleep: Callable[[float], None],
    before_attempt: Callable[[], None] | None = None,
) -> list[AppliedStatement]:
    transactional = unit[0][1].transactional
    attempt = 0
    waits: list[timedelta] = []
    while True:
        attempt += 1
        if before_attempt is not None:
            before_attempt()  # may raise to stop before this attempt (e.g. the plan was rejected meanwhile)
        durations: list[timedelta] = []
        try:
            try:
                if transactional:
                    with conn.transaction():
                        conn.execute(f"set local lock_timeout = {_ms(env.lock_timeout)}".encode())
                        conn.execute(f"set local statement_timeout = {_ms(env.statement_timeout)}".encode())
                        for index, step in unit:
                            durations.append(_run_one(conn, index, step.sql, env))
                else:
                    index, step = unit[0]
                    conn.execute(f"set lock_timeout = {_ms(env.lock_timeout)}".encode())
                    conn.execute(f"set statement_timeout = {_ms(statement_timeout_for(step, env))}".encode())
                    try:
                        if attempt > 1:
                            _drop_invalid_index(conn, index, step.sql)
                        durations.append(_run_one(conn, index, step.sql, env, statement_timeout_for(step, env)))
                    finally:
                        if not _broken(conn):
                            conn.execute(b"reset lock_timeout")
                            conn.execute(b"reset statement_timeout")
            except (ApplyError, ApplyInterruptedError, _LockWaitExpired):
                raise
            except psycopg.Error as exc:
                # Raised outside a statement: SET, COMMIT or RESET. A lost connection during COMMIT leaves it
                # unknown whether the unit committed; a later apply re-diffs and finds out.
                first = unit[0][0]
                if _broken(conn):
                    raise ApplyInterruptedError(
                        f"statements {first + 1}-{unit[-1][0] + 1}: the connection to the environment was lost "
                        f"({pg_error_text(exc)})",
                        statement=unit[0][1].sql,
                        index=first,
                        sqlstate=exc.diag.sqlstate,
                    ) from exc
                raise ApplyError(
                    f"statements {first + 1}-{unit[-1][0] + 1}: {pg_error_text(exc)}",
                    statement=unit[0][1].sql,
                    index=first,
                    sqlstate=exc.diag.sqlstate,
                ) from exc
        except _LockWaitExpired as exc:
            final = attempt > policy.retries
            backoff = timedelta(0) if final else policy.backoff(attempt)
            wait = LockWait(exc.index, exc.sql, attempt, exc.waited, backoff, exc.error, final)
            log.warning("lock_wait_expired", **wait.to_json())
            if on_lock_wait is not None:
                on_lock_wait(wait)
            if final:
                raise LockTimeoutError(
                    f"statement {exc.index + 1} waited longer than lock_timeout ({human(env.lock_timeout)}) for a lock "
                    f"on each of {attempt} attempt(s) ({exc.error}): {exc.sql}",
                    statement=exc.sql,
                    index=exc.index,
                    attempts=attempt,
                    sqlstate=exc.sqlstate,
                ) from exc
            sleep(backoff.total_seconds())
            waits.append(backoff)
            continue
        return [
            AppliedStatement(step.sql, d, index, attempt, tuple(waits))
            for (index, step), d in zip(unit, durations, strict=True)
        ]


def units(steps: Sequence[Step], skip: Collection[int] = ()) -> list[list[tuple[int, Step]]]:
    """Group the steps not in ``skip`` into units: runs of consecutive transactional steps, or one other step."""
    out: list[list[tuple[int, Step]]] = []
    for i, step in enumerate(steps):
        if i in skip:
            continue
        if step.transactional and out and out[-1][-1][1].transactional and out[-1][-1][0] == i - 1:
            out[-1].append((i, step))
        else:
            out.append([(i, step)])
    return out


def execute_steps(
    conn: psycopg.Connection[Any],
    items: Sequence[str | Step],
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

    Consecutive transactional steps share one transaction with ``SET LOCAL`` timeouts, rolled back as a whole on
    failure; a non-transactional step runs alone with session-level timeouts. A unit that times out on a lock is
    retried per ``retry`` (default: the environment's ``lock_retries`` and backoff). Raises ApplyError,
    LockTimeoutError or ApplyInterruptedError naming the failing statement; units committed before it stay applied
    (and were passed to ``on_commit``).
    """
    steps = as_steps(items)
    policy = retry or RetryPolicy.for_env(env)
    done: list[AppliedStatement] = []
    for unit in units(steps, skip):
        applied = _run_unit(conn, unit, env, policy, on_lock_wait, sleep, before_attempt)
        done.extend(applied)
        if on_commit is not None:
            on_commit(applied)
    return done


def apply_statements(
    dsn: str,
    items: Sequence[str | Step],
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
