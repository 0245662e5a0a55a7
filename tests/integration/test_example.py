"""The bundled example: the demo environment's older revision converges on desired-state/ as the README says."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import yaml
from conftest import run_sql

from reconciler.config import load_config
from reconciler.model import PlanStatus
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.service import Reconciler

ROOT = Path(__file__).resolve().parents[2]


def test_bundled_config_is_valid() -> None:
    cfg = load_config(ROOT / "config" / "reconciler.yaml")
    assert cfg.desired_state == str(ROOT / "desired-state")
    assert cfg.environments["demo"].dsn == "embedded:demo"


def test_example_plan_apply_approve(make_db: Callable[..., str], pg_server: EmbeddedPostgres, tmp_path: Path) -> None:
    older = (ROOT / "config" / "demo" / "older-revision.sql").read_text()
    seed = (ROOT / "config" / "demo" / "seed.sql").read_text()
    dsn = make_db(older + "\n" + seed)
    cfg_path = tmp_path / "reconciler.yaml"
    cfg_path.write_text(
        yaml.safe_dump(
            {
                "desired_state": str(ROOT / "desired-state"),
                "scratch": pg_server.dsn(),
                "state": "sqlite:///state.db",
                "sandbox": {"share_cluster_with_environments": True},
                "environments": {"demo": {"dsn": dsn}},
            }
        )
    )
    with Reconciler(load_config(cfg_path)) as reconciler:
        plan = reconciler.plan("demo")
        destructive = [s for s in plan.statements if s.destructive]
        assert [h.code for s in destructive for h in s.hazards if h.kind == "DESTRUCTIVE"] == ["DS102", "DS103"]
        assert len(plan.statements) > 10

        result = reconciler.apply("demo")
        assert result.queued_plan_id is not None
        # Policies, functions, triggers and the materialized view need a person by default, and the unattended
        # statements depend on them: nothing runs until the plan is approved.
        waiting = {h.kind for s in plan.statements if s.decision != "auto" for h in s.hazards}
        assert {"DESTRUCTIVE", "AUTHORIZATION", "CODE"} <= waiting
        assert result.applied == []
        # Nothing ran: the data the destructive statements would remove is still there.
        assert run_sql(dsn, "select count(*) from users where legacy_score is not null") == [(3,)]
        assert run_sql(dsn, "select count(*) from legacy_sessions") == [(3,)]
        assert run_sql(dsn, "select count(*) from pg_matviews where matviewname = 'leaderboard'") == [(0,)]

        reconciler.approve(result.queued_plan_id, "alice")
        final = reconciler.apply("demo")
        assert final.in_sync
        assert run_sql(dsn, "select count(*) from pg_matviews where matviewname = 'leaderboard'") == [(1,)]
        assert run_sql(dsn, "select count(*) from users where is_public = false") == [(4,)]
        assert reconciler.store.get_plan(result.queued_plan_id).status is PlanStatus.APPLIED
        assert run_sql(dsn, "select count(*) from information_schema.tables where table_name = 'legacy_sessions'") == [
            (0,)
        ]
        assert reconciler.plan("demo").in_sync
        # Row level security is on for every table of the example.
        assert run_sql(
            dsn,
            "select count(*) from pg_class where relkind = 'r' and relnamespace = 'public'::regnamespace "
            "and not relrowsecurity",
        ) == [(0,)]
