"""Applying safely on a real PostgreSQL: lock timeouts and retries, a terminated applier, resuming, one applier."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import run_sql

from reconciler.apply import AppliedStatement, LockWait, execute_steps
from reconciler.config import EnvironmentConfig
from reconciler.db import APPLICATION_NAME
from reconciler.errors import ApplyError, ApplyInterruptedError, LockTimeoutError
from reconciler.hazards import StepTimeouts, examine
from reconciler.model import ExecStep, Plan, PlanStatus
from reconciler.service import ApplyResult, Reconciler
from reconciler.status import ConditionType
from reconciler.store import open_store

ROOT = Path(__file__).resolve().parents[2]
TWO_TABLES = "create table a (id int); create table b (id int); insert into a values (1); insert into b values (1);"


class Background:
    """Run a callable in a thread; keep its result or exception."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self.result: Any = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, args=(fn,), daemon=True)
        self.thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self.result = fn()
        except BaseException as exc:
            self.error = exc

    def join(self, timeout: float = 60) -> Any:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the background call did not finish"
        return self.result


class Probe:
    """Another session reading ``table`` in a loop; remembers the longest it ever had to wait."""

    def __init__(self, dsn: str, table: str) -> None:
        self.longest = 0.0
        self.reads = 0
        self._stop = threading.Event()
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._thread = threading.Thread(target=self._run, args=(table,), daemon=True)
        self._thread.start()

    def _run(self, table: str) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self._conn.execute(f"select count(*) from {table}".encode())
            self.longest = max(self.longest, time.monotonic() - started)
            self.reads += 1
            time.sleep(0.01)

    def stop(self) -> float:
        self._stop.set()
        self._thread.join(10)
        self._conn.close()
        return self.longest


@contextmanager
def holding(dsn: str, sql: str) -> Iterator[psycopg.Connection[Any]]:
    """Another session that ran ``sql`` in a transaction it keeps open (rolled back at the end)."""
    conn = psycopg.connect(dsn)
    try:
        conn.execute(sql.encode())
        yield conn
    finally:
        conn.rollback()
        conn.close()


def wait_for(predicate: Callable[[], Any], timeout: float = 30.0, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = predicate()
        if got:
            return got
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def waiting_applier(dsn: str) -> int | None:
    """The pid of the reconciler's backend that is waiting for a lock in the database at ``dsn``."""
    rows = run_sql(
        dsn,
        "select pid from pg_stat_activity where application_name = %s and wait_event_type = 'Lock' "
        "and datname = current_database()".replace("%s", f"'{APPLICATION_NAME}'"),
    )
    return int(rows[0][0]) if rows else None


def columns(dsn: str, table: str) -> list[str]:
    return [
        r[0]
        for r in run_sql(
            dsn,
            f"select column_name from information_schema.columns where table_name = '{table}' order by ordinal_position",
        )
    ]


def first_and_second_table(reconciler: Reconciler) -> tuple[str, str]:
    """Which of a and b the plan's (single, transactional) unit touches first."""
    sqls = reconciler.plan("dev").sqls
    assert len(sqls) == 2
    return ("a", "b") if '"a"' in sqls[0] else ("b", "a")


# -- lock timeouts ------------------------------------------------------------------------------------------


def test_lock_timeout_is_retried_without_blocking_other_sessions(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(TWO_TABLES)
    lock_timeout = 0.2
    cfg = project(
        {"010.sql": "create table a (id int, x int);\ncreate table b (id int, y int);\n"},
        {
            "dev": {
                "dsn": dsn,
                "lock_timeout": "200ms",
                "lock_retries": 50,
                "lock_retry_backoff": "100ms",
                "lock_retry_backoff_max": "300ms",
            }
        },
    )
    reconciler = reconciler_for(cfg)
    first, second = first_and_second_table(reconciler)
    audit = open_store(reconciler.config.state, key=reconciler.secret)
    try:
        # A long-running reader of the second table: ALTER TABLE on it must wait, while the applier's transaction
        # already holds ACCESS EXCLUSIVE on the first table. Readers of the first table queue behind the applier,
        # but never for longer than the lock timeout.
        with holding(dsn, f"select * from {second}"):
            held_since = time.monotonic()
            probe = Probe(dsn, first)
            job = Background(lambda: reconciler.apply("dev"))
            wait_for(lambda: len(audit.audit_records(event="lock_timeout")) >= 4, what="four lock timeouts")
            held_for = time.monotonic() - held_since
        result: ApplyResult = job.join()
        longest = probe.stop()
        assert job.error is None, job.error
    finally:
        audit.close()

    assert result.in_sync and len(result.applied) == 2
    assert "x" in columns(dsn, "a") and "y" in columns(dsn, "b")
    attempts = {a.attempts for a in result.executed}
    assert len(attempts) == 1  # one transaction: its statements share their attempts
    [n] = attempts
    assert n == len(result.lock_waits) + 1 >= 5
    for a in result.executed:
        assert len(a.waits) == n - 1
        assert all(timedelta(milliseconds=50) <= w <= timedelta(milliseconds=300) for w in a.waits)
    for w in result.lock_waits:
        assert f'"{second}"' in w.sql and "lock timeout" in w.error
        assert timedelta(seconds=lock_timeout * 0.9) <= w.waited < timedelta(seconds=lock_timeout + 0.5)
    # Other sessions never waited much longer than the lock timeout, while the reader held its lock for far longer.
    print(f"reader's longest wait {longest:.3f}s; lock held {held_for:.2f}s; {n} attempts")
    assert probe.reads > 10
    assert longest < lock_timeout + 0.4, longest
    assert held_for > 3 * longest

    # The audit trail has every wait and the attempts of every applied statement.
    store = reconciler.store
    waits = store.audit_records("dev", event="lock_timeout")
    assert [r.payload["attempt"] for r in waits] == list(range(1, n))
    applied = [r.payload for r in store.audit_records("dev", event="statement_applied")]
    assert [(p["sql"], p["attempts"], len(p["waits_seconds"])) for p in applied] == [
        (a.sql, n, n - 1) for a in result.executed
    ]
    assert all(p["duration_seconds"] >= 0 for p in applied)
    status = store.load_status("dev")
    assert status is not None and status.is_true(ConditionType.READY)
    assert status.last_applied_revision == result.desired_revision


def test_lock_retries_are_bounded_and_the_transaction_rolls_back(make_db: Callable[..., str]) -> None:
    dsn = make_db(TWO_TABLES)
    env = EnvironmentConfig(
        dsn=dsn,
        lock_timeout="150ms",  # type: ignore[arg-type]
        lock_retries=2,
        lock_retry_backoff="50ms",  # type: ignore[arg-type]
        lock_retry_backoff_max="100ms",  # type: ignore[arg-type]
    )
    waits: list[LockWait] = []
    committed: list[AppliedStatement] = []
    # Another session holds ACCESS EXCLUSIVE on b all along; a reader of a queues behind the applier's transaction
    # (which holds a's lock while it waits for b's), but never for much longer than the lock timeout.
    with holding(dsn, "lock table b in access exclusive mode"), psycopg.connect(dsn, autocommit=True) as conn:
        probe = Probe(dsn, "a")
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="on each of 3 attempt") as err:
            execute_steps(
                conn,
                ["alter table a add column x int", "alter table b add column y int"],
                env,
                on_lock_wait=waits.append,
                on_commit=committed.extend,
            )
        elapsed = time.monotonic() - started
        longest = probe.stop()
    assert probe.reads > 5 and longest < 0.15 + 0.4, longest
    assert err.value.attempts == 3 and err.value.index == 1 and err.value.sqlstate == "55P03"
    assert [(w.attempt, w.final, w.index) for w in waits] == [(1, False, 1), (2, False, 1), (3, True, 1)]
    assert waits[-1].backoff == timedelta(0)
    assert elapsed < 3 * 0.15 + 2 * 0.1 + 1.5
    assert committed == [] and "x" not in columns(dsn, "a")  # rolled back as a whole


def test_concurrent_index_build_has_its_own_statement_timeout_and_is_retried_cleanly(
    make_db: Callable[..., str],
) -> None:
    dsn = make_db("create table t (id int); insert into t select generate_series(1, 1000);")
    env = EnvironmentConfig(
        dsn=dsn,
        lock_timeout="300ms",  # type: ignore[arg-type]
        statement_timeout="100ms",  # type: ignore[arg-type]
        concurrent_statement_timeout="30s",  # type: ignore[arg-type]
        lock_retries=5,
        lock_retry_backoff="100ms",  # type: ignore[arg-type]
    )
    cic = "create index concurrently t_id on t (id)"
    with psycopg.connect(dsn, autocommit=True) as conn:
        # An ordinary statement is cancelled after statement_timeout ...
        with pytest.raises(ApplyError, match="statement_timeout"):
            execute_steps(conn, ["select pg_sleep(1)"], env)
        # ... a concurrent index build gets concurrent_statement_timeout (it outlives the 100ms statement_timeout),
        # but the same short lock timeout: a writer's open transaction makes it give up after 300ms (leaving an
        # INVALID index); the retry drops that index and builds it.
        waits: list[LockWait] = []
        with holding(dsn, "insert into t values (0)") as writer:

            def on_wait(w: LockWait) -> None:
                waits.append(w)
                writer.rollback()  # the writer finishes while the applier backs off

            # The step as the hazard engine builds it for this environment: alone, with the concurrent timeout.
            [found] = examine([cic], timeouts=StepTimeouts.for_env(env))
            done = execute_steps(conn, found.steps, env, on_lock_wait=on_wait)
    assert [(w.attempt, "lock timeout" in w.error) for w in waits] == [(1, True)]
    assert waits[0].waited >= timedelta(milliseconds=250)
    assert done[0].attempts == 2 and len(done[0].waits) == 1
    indexes = "select c.relname, i.indisvalid from pg_index i join pg_class c on c.oid = i.indexrelid"
    assert run_sql(dsn, f"{indexes} where i.indrelid = 't'::regclass") == [("t_id", True)]


# -- a terminated applier -----------------------------------------------------------------------------------

CURRENT_LEGACY = TWO_TABLES + "alter table a add column x int; alter table b add column y int;"


def test_terminated_applier_rolls_back_fails_the_plan_and_a_later_apply_resumes(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(CURRENT_LEGACY)
    cfg = project(
        {"010.sql": "create table a (id int);\ncreate table b (id int);\n"},
        {"dev": {"dsn": dsn, "lock_timeout": "30s"}},
    )
    reconciler = reconciler_for(cfg)
    _first, second = first_and_second_table(reconciler)
    queued = reconciler.apply("dev").queued_plan_id
    assert queued is not None
    reconciler.approve(queued, "alice")

    with holding(dsn, f"select * from {second}"):
        job = Background(lambda: reconciler.apply("dev"))
        pid = wait_for(lambda: waiting_applier(dsn), what="the applier to wait for the lock")
        run_sql(dsn, f"select pg_terminate_backend({pid})")
        job.join()
    assert isinstance(job.error, ApplyInterruptedError), job.error
    # The first statement of the transaction ran before the second waited; it was rolled back with it.
    assert columns(dsn, "a") == ["id", "x"] and columns(dsn, "b") == ["id", "y"]
    assert run_sql(dsn, "select count(*) from a") == [(1,)]
    failed = reconciler.store.get_plan(queued)
    assert failed.status is PlanStatus.FAILED and failed.resumable
    assert failed.error is not None and "terminating connection" in failed.error
    assert failed.completed_steps == ()
    [fail] = reconciler.store.audit_records("dev", event="apply_failed")
    assert fail.plan_id == queued and f'"{second}"' in fail.payload["statement"]
    assert fail.payload["sqlstate"] == "57P01"
    assert reconciler.store.audit_records("dev", event="statement_applied") == []
    status = reconciler.store.load_status("dev")
    assert status is not None and not status.is_true(ConditionType.READY)
    assert "terminating connection" in (status.last_error or "")

    # Later: the same approved plan resumes (nothing had committed) and the environment converges.
    result = reconciler.apply("dev")
    assert result.in_sync and result.applied_plan_id == queued
    assert any("resuming plan" in m for m in result.messages)
    assert columns(dsn, "a") == ["id"] and columns(dsn, "b") == ["id"]
    assert reconciler.store.get_plan(queued).status is PlanStatus.APPLIED
    events = [r.event for r in reconciler.store.audit_records("dev", plan_id=queued)]
    assert events[-5:] == ["plan_resumed", "statement_applied", "statement_applied", "plan_applied", "apply_finished"]
    assert reconciler.store.verify_audit().ok


def test_resume_skips_committed_steps(make_db: Callable[..., str], tmp_path: Path) -> None:
    """Steps in their own transactions (a concurrent index build) stay committed when a later step's connection is
    terminated; the recorded progress lets a retry run only what is left, never a completed step again."""
    dsn = make_db(TWO_TABLES)
    env = EnvironmentConfig(dsn=dsn, lock_timeout="30s")  # type: ignore[arg-type]
    store = open_store(f"sqlite:///{tmp_path}/state.db", key=b"k" * 32)
    queued = store.queue_plan(Plan("dev", "r", (), fingerprint="f"))
    assert queued.plan_id is not None
    record = store.get_plan(queued.plan_id)
    steps = [
        ExecStep("create table c (id int)"),
        ExecStep("create index concurrently a_id on a (id)", transactional=False),
        ExecStep("alter table b add column y int"),
        ExecStep("alter table c add column z int"),
    ]

    def committed(batch: list[AppliedStatement]) -> None:
        store.record_applied(environment="dev", plan_id=record.id, statements=[a.to_json() for a in batch])

    try:
        with holding(dsn, "select * from b"):

            def run() -> list[AppliedStatement]:
                with psycopg.connect(dsn, autocommit=True, application_name=APPLICATION_NAME) as conn:
                    return execute_steps(conn, steps, env, on_commit=committed)

            job = Background(run)
            pid = wait_for(lambda: waiting_applier(dsn), what="the applier to wait for the lock")
            run_sql(dsn, f"select pg_terminate_backend({pid})")
            job.join()
        assert isinstance(job.error, ApplyInterruptedError) and job.error.index == 2
        done = {p.step_index for p in store.progress_of(record.id)}
        assert done == {0, 1}
        assert "z" not in columns(dsn, "c") and "y" not in columns(dsn, "b")

        with psycopg.connect(dsn, autocommit=True) as conn:
            again = execute_steps(conn, steps, env, skip=done, on_commit=committed)
        assert [a.index for a in again] == [2, 3]
        assert {p.step_index for p in store.progress_of(record.id)} == {0, 1, 2, 3}
        applied = [r.payload["index"] for r in store.audit_records(event="statement_applied")]
        assert sorted(applied) == [0, 1, 2, 3]  # each step exactly once
        assert columns(dsn, "b") == ["id", "y"] and columns(dsn, "c") == ["id", "z"]
    finally:
        store.close()


# -- one applier per environment ----------------------------------------------------------------------------

DESIRED_SAFE = "create table a (id int, x int);\ncreate table b (id int, y int);\ncreate index a_x on a (x);\n"


def cli_env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(ROOT), "RECONCILER_LOG_LEVEL": "warning"}


def test_a_busy_environment_changes_nothing(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(TWO_TABLES)
    cfg = project({"010.sql": DESIRED_SAFE}, {"dev": {"dsn": dsn}})
    reconciler = reconciler_for(cfg)
    key = reconciler.lock_key(reconciler.target("dev"))  # derived from the installation's secret
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("select pg_advisory_lock(%s)", (key,))
        holder_pid = other.info.backend_pid
        proc = subprocess.run(
            [sys.executable, "-m", "reconciler", "-c", str(cfg), "apply", "dev"],
            capture_output=True,
            text=True,
            env=cli_env(),
            cwd=ROOT,
            timeout=120,
        )
    assert proc.returncode == 3, proc.stderr
    assert proc.stderr.startswith("error: applying to environment 'dev': busy: ") and f"pid {holder_pid}" in proc.stderr
    assert proc.stderr.count("\n") == 1
    assert columns(dsn, "a") == ["id"]
    assert reconciler.store.list_plans() == [] and reconciler.store.audit_records() == []


def test_two_appliers_started_at_once_apply_the_plan_exactly_once(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(TWO_TABLES)
    cfg = project({"010.sql": DESIRED_SAFE}, {"dev": {"dsn": dsn}})
    cmd = [sys.executable, "-m", "reconciler", "-c", str(cfg), "apply", "dev", "--format", "json"]
    procs = [
        subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT)
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes in ([0, 0], [0, 3]), outs
    applied = [json.loads(out)["applied"] for (out, _), p in zip(outs, procs, strict=True) if p.returncode == 0]
    # Exactly one of them applied the three statements; the other was busy or found nothing left to do.
    assert sorted(len(a) for a in applied) in ([3], [0, 3])
    for (_, err), p in zip(outs, procs, strict=True):
        if p.returncode == 3:
            assert "busy: another applier holds the environment's apply lock" in err
    reconciler = reconciler_for(cfg)
    statements = [r.payload["sql"] for r in reconciler.store.audit_records("dev", event="statement_applied")]
    assert len(statements) == 3 and len(set(statements)) == 3
    assert columns(dsn, "a") == ["id", "x"] and columns(dsn, "b") == ["id", "y"]
    assert reconciler.plan("dev").in_sync
    assert reconciler.store.verify_audit().ok


def test_two_appliers_of_an_approved_destructive_plan_overlap_and_one_is_busy(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    """The overlap is forced: a reader makes the first applier wait on its DROP COLUMN while the second starts."""
    dsn = make_db("create table a (id int, legacy int); insert into a values (1, 7);")
    cfg = project(
        {"010.sql": "create table a (id int);"},
        {
            "dev": {
                "dsn": dsn,
                "lock_timeout": "300ms",
                "lock_retries": 60,
                "lock_retry_backoff": "100ms",
                "lock_retry_backoff_max": "200ms",
            }
        },
    )
    reconciler = reconciler_for(cfg)
    plan_id = reconciler.apply("dev").queued_plan_id
    assert plan_id is not None
    reconciler.approve(plan_id, "alice")
    cmd = [sys.executable, "-m", "reconciler", "-c", str(cfg), "apply", "dev", "--format", "json"]
    with psycopg.connect(dsn) as reader:
        reader.execute("select * from a")  # holds ACCESS SHARE until this transaction ends
        first = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=cli_env(), cwd=ROOT
        )
        deadline = time.monotonic() + 60
        while not any(r.event == "lock_timeout" for r in reconciler.store.audit_records("dev")):
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = subprocess.run(cmd, capture_output=True, text=True, env=cli_env(), cwd=ROOT, timeout=120)
        assert second.returncode == 3, (second.stdout, second.stderr)
        assert "busy" in second.stderr
        reader.rollback()
    out, err = first.communicate(timeout=120)
    assert first.returncode == 0, err
    assert json.loads(out)["applied"] == ['alter table "public"."a" drop column "legacy"']
    assert columns(dsn, "a") == ["id"]
    assert [r.plan_id for r in reconciler.store.audit_records("dev", event="plan_applied")] == [plan_id]
    assert len(reconciler.store.audit_records("dev", event="statement_applied")) == 1
