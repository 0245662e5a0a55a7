"""What one daemon pass costs an in-sync environment: one plan, and a bounded number of connections to it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from reconciler.db import connections_opened, parse_dsn
from reconciler.obs.metrics import Metrics
from reconciler.reconcile.board import StatusBoard
from reconciler.reconcile.loop import ReconcileContext, reconcile
from reconciler.reconcile.result import Outcome, Request
from reconciler.service import Reconciler

SCHEMA = "create table t (id int primary key, v text);\ncreate index t_v on t (v);\n"

# Connections one in-sync pass opens to the environment: the apply lock (1), the fingerprint (1), the inspection's
# version and invalid-index probe (1) and schemainspect's own connection (1).
MAX_ENV_CONNECTIONS = 4


def diffs(ctx: ReconcileContext) -> float | None:
    """How many diffs (plans) the passes so far computed: the count of the diff phase's timings."""
    name = "schema_reconciler_reconcile_phase_duration_seconds_count"
    return ctx.metrics.registry.get_sample_value(name, {"environment": "dev", "phase": "diff"})


def test_an_in_sync_pass_plans_once_and_opens_few_connections(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(SCHEMA)
    reconciler = reconciler_for(project({"010.sql": SCHEMA}, {"dev": {"dsn": dsn}}))
    ctx = ReconcileContext(reconciler, Metrics(), StatusBoard(save=reconciler.store.save_status))
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS  # warms the desired build up
    # The full path: without a fingerprint from the last convergence the fast path cannot apply.
    status = ctx.status.get("dev")
    assert status is not None
    ctx.status.put(replace(status, fingerprint=None))
    dbname = parse_dsn(dsn)["dbname"]
    before = connections_opened().get(dbname, 0)
    result = reconcile(Request("dev"), ctx)
    opened = connections_opened().get(dbname, 0) - before
    assert result.outcome is Outcome.SUCCESS
    assert diffs(ctx) == 2  # one plan (one diff) in each of the two passes
    assert 1 <= opened <= MAX_ENV_CONNECTIONS, opened
    stored = reconciler.store.load_status("dev")
    assert stored is not None and stored.fingerprint and stored.consecutive_failures == 0


def plans_queued(reconciler: Reconciler) -> int:
    return len(reconciler.store.list_plans("dev"))


def fast_passes(ctx: ReconcileContext) -> float | None:
    name = "schema_reconciler_fast_path_passes_total"
    return ctx.metrics.registry.get_sample_value(name, {"environment": "dev"})


def test_an_unchanged_environment_takes_the_fast_path_one_connection_and_no_plan(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(SCHEMA)
    reconciler = reconciler_for(project({"010.sql": SCHEMA}, {"dev": {"dsn": dsn}}))
    ctx = ReconcileContext(reconciler, Metrics(), StatusBoard(save=reconciler.store.save_status))
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS  # converges: fingerprint and revision kept
    dbname = parse_dsn(dsn)["dbname"]
    before = connections_opened().get(dbname, 0)
    for _ in range(3):
        assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS
    # One fingerprint query per pass, on one session: the first fast pass opens it, the later ones find it warm.
    assert connections_opened().get(dbname, 0) - before == 1
    assert reconciler.warm.reused == 2
    assert diffs(ctx) == 1  # only the first pass planned
    assert fast_passes(ctx) == 3
    assert ctx.metrics.registry.get_sample_value("schema_reconciler_drift", {"environment": "dev"}) == 0


def test_a_changed_schema_leaves_the_fast_path_and_is_reconciled(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    from reconciler.db import connect

    dsn = make_db(SCHEMA)
    reconciler = reconciler_for(project({"010.sql": SCHEMA}, {"dev": {"dsn": dsn}}))
    ctx = ReconcileContext(reconciler, Metrics(), StatusBoard(save=reconciler.store.save_status))
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS
    with connect(dsn, what="dropping the index by hand", autocommit=True) as conn:
        conn.execute("drop index t_v")
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS  # the index is built again
    assert reconciler.plan("dev").in_sync
    assert not fast_passes(ctx)
    # A pass that applied keeps no fingerprint (the schema changed under it): the next one measures in full
    # and records it, the one after takes the fast path.
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS
    planned = diffs(ctx)
    assert not fast_passes(ctx)
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS
    assert diffs(ctx) == planned and fast_passes(ctx) == 1


def test_a_new_desired_revision_leaves_the_fast_path(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(SCHEMA)
    root = project({"010.sql": SCHEMA}, {"dev": {"dsn": dsn}})
    reconciler = reconciler_for(root)
    ctx = ReconcileContext(reconciler, Metrics(), StatusBoard(save=reconciler.store.save_status))
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS
    (Path(reconciler.config.desired_state) / "020.sql").write_text("create table u (id int primary key);\n")
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS  # creates u
    assert not fast_passes(ctx) and plans_queued(reconciler) == 0
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS  # measures in full after the apply
    planned = diffs(ctx)
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS
    assert diffs(ctx) == planned and fast_passes(ctx) == 1
