"""A fleet discovered on a real server: each tenant database is an environment, reconciled and measured as such."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from pathlib import Path

from conftest import run_sql

from reconciler.config import load_config
from reconciler.obs.metrics import Metrics
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.reconcile.board import StatusBoard
from reconciler.reconcile.daemon import Daemon
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


def test_the_daemon_discovers_a_fleet_again_every_so_often(
    pg_server: EmbeddedPostgres, make_db: Callable[..., str], project: Callable[..., Path]
) -> None:
    prefix = f"tn{secrets.token_hex(3)}_"
    make_db(SCHEMA, name=f"{prefix}a")
    fleet = {
        "discover": {
            "dsn": pg_server.dsn("postgres"),
            "query": f"select substr(datname, {len(prefix) + 1}) from pg_database where datname like '{prefix}%' "
            "order by 1",
            "every": "1s",
        },
        "dsn": pg_server.dsn(f"{prefix}TENANTNAME").replace("TENANTNAME", "{name}"),
        "template": {"interval": "1s"},  # passes after the first take the fast path, which keeps a stamp
    }
    path = project({"010.sql": SCHEMA}, {}, fleets={"tenants": fleet}, daemon={"watch_interval": "1s"})
    daemon = Daemon(load_config(path), port=0)
    daemon.start()
    try:
        assert sorted(daemon.config.environments) == ["a"]
        make_db(SCHEMA, name=f"{prefix}b")
        assert _eventually(lambda: sorted(daemon.config.environments) == ["a", "b"])
        assert _eventually(lambda: "a" in daemon.reconciler._stamped)  # its fast path's last read, kept
        run_sql(pg_server.dsn("postgres"), f"drop database {prefix}a with (force)")
        assert _eventually(lambda: sorted(daemon.config.environments) == ["b"])
        assert "a" not in daemon.reconciler._stamped  # a vanished tenant leaves nothing behind in the process
    finally:
        daemon.stop()


def _eventually(check: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.2)
    return True
