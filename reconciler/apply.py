"""Execute statements on an environment: transactions where PostgreSQL allows, timeouts, clear failures.

Consecutive transactional statements run together in one transaction; a statement PostgreSQL forbids inside a
transaction block (``CREATE INDEX CONCURRENTLY``, ...) runs on its own, committed, in plan order.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import psycopg
from psycopg import errors as pgerrors

from .config import EnvironmentConfig
from .db import connect
from .errors import ApplyError, LockTimeoutError


@dataclass(frozen=True)
class Step:
    """One SQL statement to execute, and whether it may run inside a transaction block."""

    sql: str
    transactional: bool = True


@dataclass(frozen=True)
class AppliedStatement:
    sql: str
    duration: timedelta


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


def _run_one(conn: psycopg.Connection[Any], index: int, sql: str, env: EnvironmentConfig) -> AppliedStatement:
    started = time.monotonic()
    try:
        conn.execute(sql.encode("utf-8"))
    except pgerrors.LockNotAvailable as exc:
        raise LockTimeoutError(
            f"statement {index + 1} waited longer than lock_timeout ({env.lock_timeout}) for a lock: {sql}"
        ) from exc
    except psycopg.Error as exc:
        raise ApplyError(
            f"statement {index + 1} failed: {pg_error_text(exc)}: {sql}", statement=sql, index=index
        ) from exc
    return AppliedStatement(sql, timedelta(seconds=time.monotonic() - started))


def execute_steps(
    conn: psycopg.Connection[Any], items: Sequence[str | Step], env: EnvironmentConfig
) -> list[AppliedStatement]:
    """Run ``items`` in order on ``conn`` (which must be in autocommit mode).

    Consecutive transactional steps share one transaction with ``SET LOCAL`` timeouts, rolled back as a whole on
    failure; a non-transactional step runs alone with session-level timeouts. Raises ApplyError or
    LockTimeoutError naming the failing statement; steps in transactions committed before it stay applied.
    """
    steps = as_steps(items)
    done: list[AppliedStatement] = []
    i = 0
    while i < len(steps):
        if steps[i].transactional:
            j = i
            while j < len(steps) and steps[j].transactional:
                j += 1
            batch: list[AppliedStatement] = []
            with conn.transaction():
                conn.execute(f"set local lock_timeout = {_ms(env.lock_timeout)}".encode())
                conn.execute(f"set local statement_timeout = {_ms(env.statement_timeout)}".encode())
                for k in range(i, j):
                    batch.append(_run_one(conn, k, steps[k].sql, env))
            done.extend(batch)
            i = j
        else:
            conn.execute(f"set lock_timeout = {_ms(env.lock_timeout)}".encode())
            conn.execute(f"set statement_timeout = {_ms(env.statement_timeout)}".encode())
            try:
                done.append(_run_one(conn, i, steps[i].sql, env))
            finally:
                conn.execute(b"reset lock_timeout")
                conn.execute(b"reset statement_timeout")
            i += 1
    return done


def apply_statements(
    dsn: str, items: Sequence[str | Step], env: EnvironmentConfig, *, what: str
) -> list[AppliedStatement]:
    """Connect to ``dsn`` and run ``items`` with :func:`execute_steps`."""
    if not items:
        return []
    with connect(dsn, what=what, connect_timeout=env.connect_timeout, autocommit=True) as conn:
        return execute_steps(conn, items, env)
