"""Execute statements on an environment: one transaction, lock and statement timeouts, clear failures."""

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


def run_in_transaction(
    conn: psycopg.Connection[Any], sqls: Sequence[str], env: EnvironmentConfig
) -> list[AppliedStatement]:
    """Run ``sqls`` in one transaction on ``conn`` with the environment's timeouts; roll back on failure."""
    done: list[AppliedStatement] = []
    with conn.transaction():
        conn.execute(f"set local lock_timeout = {_ms(env.lock_timeout)}")
        conn.execute(f"set local statement_timeout = {_ms(env.statement_timeout)}")
        for i, sql in enumerate(sqls):
            started = time.monotonic()
            try:
                conn.execute(sql.encode("utf-8"))
            except pgerrors.LockNotAvailable as exc:
                raise LockTimeoutError(
                    f"statement {i + 1} waited longer than lock_timeout ({env.lock_timeout}) for a lock: {sql}"
                ) from exc
            except psycopg.Error as exc:
                raise ApplyError(
                    f"statement {i + 1} failed: {pg_error_text(exc)}: {sql}", statement=sql, index=i
                ) from exc
            done.append(AppliedStatement(sql, timedelta(seconds=time.monotonic() - started)))
    return done


def apply_statements(dsn: str, sqls: Sequence[str], env: EnvironmentConfig, *, what: str) -> list[AppliedStatement]:
    """Connect to ``dsn`` and run ``sqls`` in one transaction."""
    if not sqls:
        return []
    with connect(dsn, what=what, connect_timeout=env.connect_timeout) as conn:
        return run_in_transaction(conn, sqls, env)
