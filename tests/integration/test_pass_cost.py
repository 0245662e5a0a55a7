"""What one daemon pass costs an in-sync environment: one plan, and a bounded number of connections to it."""

from __future__ import annotations

from collections.abc import Callable
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
    rec = reconciler_for(project({"010.sql": SCHEMA}, {"dev": {"dsn": dsn}}))
    ctx = ReconcileContext(rec, Metrics(), StatusBoard(save=rec.store.save_status))
    assert reconcile(Request("dev"), ctx).outcome is Outcome.SUCCESS  # warms the desired build up
    dbname = parse_dsn(dsn)["dbname"]
    before = connections_opened().get(dbname, 0)
    result = reconcile(Request("dev"), ctx)
    opened = connections_opened().get(dbname, 0) - before
    assert result.outcome is Outcome.SUCCESS
    assert diffs(ctx) == 2  # one plan (one diff) in each of the two passes
    assert 1 <= opened <= MAX_ENV_CONNECTIONS, opened
    stored = rec.store.load_status("dev")
    assert stored is not None and stored.fingerprint and stored.consecutive_failures == 0
