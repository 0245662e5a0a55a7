"""A fleet discovered on a real server: each tenant database is an environment, reconciled and measured as such."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from pathlib import Path

from reconciler.obs.metrics import Metrics
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.reconcile.board import StatusBoard
from reconciler.reconcile.loop import ReconcileContext, reconcile
from reconciler.reconcile.result import Outcome, Request
from reconciler.service import Reconciler

SCHEMA = "create table t (id int primary key);\n"


def test_a_discovered_fleet_is_reconciled_tenant_by_tenant(
    pg_server: EmbeddedPostgres,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    reconciler_for: Callable[[Path], Reconciler],
) -> None:
    prefix = f"tn{secrets.token_hex(3)}_"
    for tenant in ("a", "b", "c"):
        make_db("" if tenant != "b" else SCHEMA, name=f"{prefix}{tenant}")
    fleet = {
        "discover": {
            "dsn": pg_server.dsn("postgres"),
            "query": f"select substr(datname, {len(prefix) + 1}) from pg_database where datname like '{prefix}%' "
            "order by 1",
        },
        "dsn": pg_server.dsn(f"{prefix}TENANTNAME").replace("TENANTNAME", "{name}"),
        "template": {"interval": "5m"},
        "overrides": {"c": {"suspend": True}},
    }
    reconciler = reconciler_for(project({"010.sql": SCHEMA}, {}, fleets={"tenants": fleet}))
    assert sorted(reconciler.config.environments) == ["a", "b", "c"]
    ctx = ReconcileContext(reconciler, Metrics(), StatusBoard(save=reconciler.store.save_status))
    outcomes = {name: reconcile(Request(name), ctx).outcome for name in ("a", "b", "c")}
    assert outcomes == {"a": Outcome.SUCCESS, "b": Outcome.SUCCESS, "c": Outcome.REQUEUE}  # c is suspended
    drift = {n: ctx.metrics.registry.get_sample_value("schema_reconciler_drift", {"environment": n}) for n in "abc"}
    assert drift == {"a": 0.0, "b": 0.0, "c": 1.0}
    assert reconciler.plan("a").in_sync and not reconciler.plan("c").in_sync
