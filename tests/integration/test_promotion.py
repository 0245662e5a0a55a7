"""Promotion: a revision reaches prod only after staging converged on it; `promote` and the daemon obey it."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from conftest import run_sql

from reconciler import status as st
from reconciler.cli import main
from reconciler.config import load_config
from reconciler.obs.metrics import Metrics
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.reconcile.board import StatusBoard
from reconciler.reconcile.loop import ReconcileContext, reconcile
from reconciler.reconcile.result import Request
from reconciler.service import Reconciler

TABLE = "select count(*) from information_schema.tables where table_name = 'items'"


def write(tmp_path: Path, pg_server: EmbeddedPostgres, dsns: dict[str, str]) -> Path:
    (tmp_path / "desired").mkdir()
    (tmp_path / "desired" / "a.sql").write_text("create table items (id int primary key);\n")
    path = tmp_path / "reconciler.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "desired_state": "desired",
                "scratch": pg_server.dsn("postgres"),
                "sandbox": {"share_cluster_with_environments": True},  # tests share one server
                "state": "sqlite:///state.db",
                "environments": {name: {"dsn": dsn} for name, dsn in dsns.items()},
                "promotion": ["dev", "staging", "prod"],
            }
        )
    )
    return path


def test_promote_to_prod_before_staging_converged_is_refused(
    tmp_path: Path, pg_server: EmbeddedPostgres, make_db: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    dsns = {name: make_db() for name in ("dev", "staging", "prod")}
    config = write(tmp_path, pg_server, dsns)
    with Reconciler(load_config(config)) as reconciler:
        revision = reconciler.load_desired().revision
    assert main(["-c", str(config), "apply", "dev"]) == 0
    capsys.readouterr()

    assert main(["-c", str(config), "promote", revision[:12], "--to", "prod"]) == 1
    err = capsys.readouterr().err
    assert f"promoting revision {revision[:12]} to environment 'prod': refused" in err
    assert f"environment 'staging' has not converged on revision {revision[:12]} yet; nothing was applied" in err
    assert run_sql(dsns["prod"], TABLE) == [(0,)]

    assert main(["-c", str(config), "promote", revision, "--to", "staging"]) == 0
    assert main(["-c", str(config), "promote", revision[:12], "--to", "prod"]) == 0
    assert run_sql(dsns["prod"], TABLE) == [(1,)]
    assert main(["-c", str(config), "promote", "0000000", "--to", "prod"]) == 1
    assert "the desired state is revision" in capsys.readouterr().err


def test_the_daemon_waits_with_a_reason_and_a_metric(
    tmp_path: Path, pg_server: EmbeddedPostgres, make_db: Callable[..., str]
) -> None:
    dsns = {name: make_db() for name in ("dev", "staging", "prod")}
    config = write(tmp_path, pg_server, dsns)
    with Reconciler(load_config(config)) as reconciler:
        metrics = Metrics()
        ctx = ReconcileContext(reconciler, metrics, StatusBoard(reconciler.store.save_status))
        reconcile(Request("staging"), ctx)
        status = reconciler.store.load_status("staging")
        assert status is not None
        ready = status.condition(st.ConditionType.READY)
        assert ready.reason == st.Reason.AWAITING_PROMOTION
        assert "environment 'dev' has not converged" in ready.message
        assert metrics.promotion_waiting.labels("staging")._value.get() == 1
        assert run_sql(dsns["staging"], TABLE) == [(0,)]

        reconcile(Request("dev"), ctx)
        reconcile(Request("staging"), ctx)
        assert metrics.promotion_waiting.labels("staging")._value.get() == 0
        assert run_sql(dsns["staging"], TABLE) == [(1,)]
