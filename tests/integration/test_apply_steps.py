"""The executor runs each step with the timeouts the step carries, on a real PostgreSQL.

The planner's side (which step gets which timeouts) is tested without a database in the hazard engine's tests;
here the executor must really set them: a step reads its own settings back, a sleeping step is cancelled after
its own statement_timeout, a blocked step gives up after its own lock_timeout.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta

import psycopg
import pytest
from conftest import run_sql

from reconciler.apply import execute_steps
from reconciler.config import EnvironmentConfig
from reconciler.errors import ApplyError, LockTimeoutError
from reconciler.model import ExecStep

SEEN = "insert into seen select {n}, current_setting('lock_timeout'), current_setting('statement_timeout')"


def env_for(dsn: str) -> EnvironmentConfig:
    """An environment whose own timeouts are long: whatever a step is cut short by is the step's own."""
    return EnvironmentConfig(dsn=dsn, lock_timeout="30s", statement_timeout="15m", lock_retries=0)  # type: ignore[arg-type]


def seen_step(n: int, transactional: bool, statement: timedelta | None, lock: timedelta | None) -> ExecStep:
    return ExecStep(SEEN.format(n=n), transactional, statement, lock)


def test_each_step_runs_with_its_own_timeouts(make_db: Callable[..., str]) -> None:
    dsn = make_db("create table seen (n int, lock text, statement text)")
    steps = [
        seen_step(0, True, timedelta(seconds=4), timedelta(milliseconds=250)),
        seen_step(1, True, None, None),  # built outside the engine: the environment's timeouts
        seen_step(2, True, timedelta(seconds=7), timedelta(milliseconds=100)),  # same transaction, other values
        seen_step(3, False, timedelta(hours=2), timedelta(milliseconds=1500)),  # alone: session-level
        seen_step(4, True, None, None),
    ]
    with psycopg.connect(dsn, autocommit=True) as conn:
        before = conn.execute(b"select current_setting('lock_timeout'), current_setting('statement_timeout')")
        session = before.fetchone()
        done = execute_steps(conn, steps, env_for(dsn))
        after = conn.execute(b"select current_setting('lock_timeout'), current_setting('statement_timeout')")
        assert after.fetchone() == session  # nothing the steps set outlives them
    assert [a.index for a in done] == [0, 1, 2, 3, 4]
    assert run_sql(dsn, "select n, lock, statement from seen order by n") == [
        (0, "250ms", "4s"),
        (1, "30s", "15min"),
        (2, "100ms", "7s"),
        (3, "1500ms", "2h"),
        (4, "30s", "15min"),
    ]


@pytest.mark.parametrize("transactional", [True, False], ids=["in-a-transaction", "alone"])
def test_a_step_is_cancelled_after_its_own_statement_timeout(make_db: Callable[..., str], transactional: bool) -> None:
    dsn = make_db()
    sleeper = ExecStep("select pg_sleep(10)", transactional, statement_timeout=timedelta(milliseconds=200))
    with psycopg.connect(dsn, autocommit=True) as conn:
        started = time.monotonic()
        with pytest.raises(ApplyError, match=r"statement_timeout is 200ms") as err:
            execute_steps(conn, [sleeper], env_for(dsn))
        elapsed = time.monotonic() - started
    assert err.value.sqlstate == "57014"  # query_canceled
    assert elapsed < 3, elapsed


@pytest.mark.parametrize("transactional", [True, False], ids=["in-a-transaction", "alone"])
def test_a_step_gives_up_on_a_lock_after_its_own_lock_timeout(make_db: Callable[..., str], transactional: bool) -> None:
    dsn = make_db("create table t (id int)")
    alter = ExecStep("alter table t add column x int", transactional, lock_timeout=timedelta(milliseconds=200))
    with psycopg.connect(dsn) as holder, psycopg.connect(dsn, autocommit=True) as conn:
        holder.execute(b"lock table t in access share mode")  # held until the end: the ALTER must wait
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match=r"lock_timeout \(200ms\)") as err:
            execute_steps(conn, [alter], env_for(dsn))
        elapsed = time.monotonic() - started
        holder.rollback()
    assert err.value.sqlstate == "55P03" and err.value.attempts == 1
    assert timedelta(milliseconds=180) <= timedelta(seconds=elapsed) < timedelta(seconds=3), elapsed
