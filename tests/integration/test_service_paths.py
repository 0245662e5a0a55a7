"""Service paths around vetting: queued plans are not re-vetted, pg_dump never queues behind a lock holder."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest

from reconciler.errors import LockTimeoutError
from reconciler.service import Reconciler


def test_unchanged_queued_plan_is_not_vetted_again(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db("create table t (id int, legacy int);")
    rec = reconciler_for(project({"010.sql": "create table t (id int);"}, {"dev": {"dsn": dsn}}))
    first = rec.apply("dev")
    assert first.queued_plan_id is not None and first.vet is not None and first.vet.ok
    second = rec.apply("dev")
    assert second.queued_plan_id == first.queued_plan_id
    assert second.vet is None  # the same plan (revision, statements, fingerprint): no second clone
    # A change of the environment makes it a different plan: vetted again, and the old one superseded.
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("alter table t add column extra int")
    third = rec.apply("dev")
    assert third.vet is not None and third.queued_plan_id != first.queued_plan_id


def test_vetting_does_not_queue_behind_a_lock_holder(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db("create table t (id int); create table busy (id int);")
    rec = reconciler_for(
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
            rec.apply("dev")
        assert time.monotonic() - started < 10
    finally:
        release.set()
        holder.join()
    with psycopg.connect(dsn) as conn:
        assert conn.execute(
            "select count(*) from information_schema.columns where table_name = 't' and column_name = 'name'"
        ).fetchone() == (0,)
    assert rec.apply("dev").in_sync
