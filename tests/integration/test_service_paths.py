"""Service paths around vetting: queued plans are not re-vetted, pg_dump never queues behind a lock holder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from reconciler.errors import BusyError, LockTimeoutError, PlanError
from reconciler.model import PlanStatus
from reconciler.service import Reconciler


def test_unchanged_queued_plan_is_not_vetted_again(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db("create table t (id int, legacy int);")
    reconciler = reconciler_for(project({"010.sql": "create table t (id int);"}, {"dev": {"dsn": dsn}}))
    first = reconciler.apply("dev")
    assert first.queued_plan_id is not None and first.vet is not None and first.vet.ok
    second = reconciler.apply("dev")
    assert second.queued_plan_id == first.queued_plan_id
    assert second.vet is None  # the same plan (revision, statements, fingerprint): no second clone
    # A change of the environment makes it a different plan: vetted again, and the old one superseded.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("alter table t add column extra int")
    third = reconciler.apply("dev")
    assert third.vet is not None and third.queued_plan_id != first.queued_plan_id


def test_vetting_does_not_queue_behind_a_lock_holder(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db("create table t (id int); create table busy (id int);")
    reconciler = reconciler_for(
        project(
            {"010.sql": "create table t (id int, name text); create table busy (id int);"},
            {"dev": {"dsn": dsn, "lock_timeout": "300ms", "lock_retries": 0}},
        )
    )
    holding = threading.Event()
    release = threading.Event()

    def hold() -> None:
        with psycopg.connect(dsn) as conn:
            conn.execute("lock table busy in access exclusive mode")
            holding.set()
            release.wait(30)

    holder = threading.Thread(target=hold)
    holder.start()
    try:
        assert holding.wait(10)
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="pg_dump waited longer than lock_timeout"):
            reconciler.apply("dev")
        assert time.monotonic() - started < 10
    finally:
        release.set()
        holder.join()
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "select count(*) from information_schema.columns where table_name = 't' and column_name = 'name'"
        ).fetchone() == (0,)
    assert reconciler.apply("dev").in_sync


def test_planning_does_not_hang_behind_a_lock_holder(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    """Every connection to an environment carries its lock_timeout: a catalog read gives up instead of queueing."""
    dsn = make_db("create table t (id int);")
    reconciler = reconciler_for(
        project({"010.sql": "create table t (id int, name text);"}, {"dev": {"dsn": dsn, "lock_timeout": "300ms"}})
    )
    with psycopg.connect(dsn) as holder:
        holder.execute("lock table t in access exclusive mode")
        started = time.monotonic()
        with pytest.raises(LockTimeoutError, match="environment 'dev'"):
            reconciler.plan("dev")
        assert time.monotonic() - started < 10
    assert not reconciler.plan("dev").in_sync  # the lock is gone: planning works again


def _approved_drop(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> tuple[str, Reconciler, Reconciler, int]:
    """An environment whose approved plan drops a column; an operator's and an applier's Reconciler on it."""
    dsn = make_db("create table users (id int, legacy int); insert into users values (1, 7);")
    cfg = project(
        {"010.sql": "create table users (id int);"},
        {
            "dev": {
                "dsn": dsn,
                "lock_timeout": "300ms",
                "lock_retries": 40,
                "lock_retry_backoff": "100ms",
                "lock_retry_backoff_max": "200ms",
            }
        },
    )
    operator, applier = reconciler_for(cfg), reconciler_for(cfg)
    plan_id = operator.apply("dev").queued_plan_id
    assert plan_id is not None
    operator.approve(plan_id, "alice")
    return dsn, operator, applier, plan_id


def _apply_in_thread(reconciler: Reconciler) -> tuple[threading.Thread, list[BaseException]]:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            reconciler.apply("dev")
        except BaseException as exc:
            errors.append(exc)

    t = threading.Thread(target=run)
    t.start()
    return t, errors


def _wait_for_lock_wait(reconciler: Reconciler) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if any(r.event == "lock_timeout" for r in reconciler.store.audit_records("dev")):
            return
        time.sleep(0.05)
    raise AssertionError("the apply never waited for a lock")


def test_reject_is_refused_while_the_plan_is_being_applied(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn, operator, applier, plan_id = _approved_drop(make_db, project, reconciler_for)
    with psycopg.connect(dsn) as reader:
        reader.execute("select * from users")  # an open transaction: the DROP COLUMN has to wait
        thread, errors = _apply_in_thread(applier)
        _wait_for_lock_wait(operator)
        with pytest.raises(BusyError):
            operator.reject(plan_id, "bob", "too late")
        assert operator.store.get_plan(plan_id).status is PlanStatus.APPROVED
    thread.join(30)
    assert errors == []
    assert operator.store.get_plan(plan_id).status is PlanStatus.APPLIED


def test_a_plan_rejected_meanwhile_stops_before_its_next_attempt(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    """A rejection recorded without the lock (the environment was unreachable from the operator) still wins."""
    dsn, operator, applier, plan_id = _approved_drop(make_db, project, reconciler_for)
    with psycopg.connect(dsn) as reader:
        reader.execute("select * from users")
        thread, errors = _apply_in_thread(applier)
        _wait_for_lock_wait(operator)
        operator.store.reject(plan_id, "bob", "changed my mind")
        thread.join(30)
    assert len(errors) == 1 and isinstance(errors[0], PlanError)
    assert "stopped, the plan is rejected" in str(errors[0])
    assert operator.store.get_plan(plan_id).status is PlanStatus.REJECTED
    with psycopg.connect(dsn) as conn:
        assert conn.execute("select legacy from users").fetchall() == [(7,)]
