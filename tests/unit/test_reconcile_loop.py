"""``reconcile()`` with a fake Reconciler: outcomes, requeue times, windows, suspend, crashes. No database."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from reconciler.config import Config, EnvironmentConfig
from reconciler.errors import DesiredStateError, UnreachableError
from reconciler.model import DesiredState, Hazard, HazardKind, Plan, PlanStatus, Severity, Statement
from reconciler.obs.metrics import Metrics
from reconciler.reconcile.board import StatusBoard
from reconciler.reconcile.loop import ReconcileContext, reconcile
from reconciler.reconcile.result import Outcome, Request
from reconciler.service import ApplyResult
from reconciler.status import ConditionType
from reconciler.target import Target

REV = "c" * 64
T0 = datetime(2026, 3, 4, 1, 59, 30, tzinfo=UTC)
DROP = Statement("drop table t", (Hazard("DS102", HazardKind.DESTRUCTIVE, Severity.DANGER, "table dropped"),))
ADD = Statement("create table u (id int)")


class FakeStore:
    def __init__(self) -> None:
        self.plans: dict[PlanStatus, list[Any]] = {}

    def list_plans(self, environment: str | None = None, status: PlanStatus | None = None) -> list[Any]:
        return list(self.plans.get(status, [])) if status else []


class FakeReconciler:
    """Only what the loop uses; ``drift`` is what a plan finds, ``apply`` removes the AUTO part of it."""

    def __init__(self, env: dict[str, Any], drift: list[Statement]) -> None:
        self.config = Config.model_validate(
            {"environments": {"dev": env}, "daemon": {"backoff_base": "2s", "backoff_max": "5s"}}
        )
        self.drift = drift
        self.store = FakeStore()
        self.calls: list[str] = []
        self.fail: Callable[[], None] | None = None
        self.fail_desired: Exception | None = None

    def target(self, name: str) -> Target:
        dsn = "postgresql://app:hunter2-secret@127.0.0.1:1/app"
        return Target(name, self.config.environment(name), dsn, "127.0.0.1:1/app")

    def load_desired(self) -> DesiredState:
        if self.fail_desired is not None:
            raise self.fail_desired
        return DesiredState("ds", (), REV)

    def plan(self, target: Target, desired: DesiredState | None = None) -> Plan:
        name = target.name
        self.calls.append("plan")
        if self.fail is not None:
            self.fail()
        return Plan(name, REV, tuple(self.drift))

    def apply(self, target: Target, *, force: bool = False, record_status: bool = True) -> ApplyResult:
        assert force  # the loop decides suspension and windows itself
        assert not record_status  # the pass records its own status
        name = target.name
        self.calls.append("apply")
        if self.fail is not None:
            self.fail()
        auto = [s for s in self.drift if not s.destructive]
        self.drift = [s for s in self.drift if s.destructive]
        return ApplyResult(
            name,
            REV,
            applied=[s.sql for s in auto],
            in_sync=not self.drift,
            applied_statements=auto,
            remaining=tuple(self.drift),
        )

    def classify(self, sqls: list[str], env: EnvironmentConfig) -> list[Statement]:
        return [Statement(s) for s in sqls]


def run(reconciler: FakeReconciler, at: datetime = T0) -> tuple[Any, ReconcileContext]:
    ctx = ReconcileContext(reconciler, Metrics(), StatusBoard(), clock=lambda: at)  # type: ignore[arg-type]
    return reconcile(Request("dev"), ctx), ctx


def sample(ctx: ReconcileContext, name: str, **labels: str) -> float | None:
    return ctx.metrics.registry.get_sample_value(name, {"environment": "dev", **labels})


def test_in_sync_after_applying_is_success_after_the_interval() -> None:
    reconciler = FakeReconciler({"dsn": "x", "interval": "30s"}, [ADD])
    result, ctx = run(reconciler)
    assert (result.outcome, result.requeue_after) == (Outcome.SUCCESS, timedelta(seconds=30))
    assert reconciler.calls == ["apply"]
    assert sample(ctx, "schema_reconciler_drift") == 0
    assert sample(ctx, "schema_reconciler_statements_applied_total", kind="NONE") == 1
    assert sample(ctx, "schema_reconciler_last_success_timestamp_seconds") == T0.timestamp()
    status = ctx.status.get("dev")
    assert status is not None and status.is_true(ConditionType.READY) and status.last_applied_revision == REV


def test_destructive_remainder_is_a_requeue_with_drift_measured() -> None:
    reconciler = FakeReconciler({"dsn": "x"}, [ADD, DROP])
    result, ctx = run(reconciler)
    assert result.outcome is Outcome.REQUEUE and result.requeue_after == timedelta(seconds=60)
    assert reconciler.calls == ["apply"]  # apply reports what is left: no second plan
    assert sample(ctx, "schema_reconciler_drift") == 1
    assert sample(ctx, "schema_reconciler_pending_statements", hazard="DESTRUCTIVE") == 1
    assert sample(ctx, "schema_reconciler_pending_statements", hazard="NONE") == 0


@pytest.mark.parametrize(
    ("env", "reason"),
    [
        ({"suspend": True}, "Suspended"),
        ({"maintenance_windows": [{"cron": "0 2 * * *", "duration": "1h"}]}, "OutsideMaintenanceWindow"),
    ],
)
def test_blocked_environments_are_measured_not_applied(env: dict[str, Any], reason: str) -> None:
    reconciler = FakeReconciler({"dsn": "x", **env}, [ADD])
    result, ctx = run(reconciler)
    assert reconciler.calls == ["plan"] and reconciler.drift == [ADD]
    assert result.outcome is Outcome.REQUEUE
    status = ctx.status.get("dev")
    assert status is not None and status.condition(ConditionType.READY).reason.value == reason
    assert not sample(ctx, "schema_reconciler_statements_applied_total", kind="NONE")


def test_requeue_when_the_window_opens_if_sooner_than_the_interval() -> None:
    reconciler = FakeReconciler({"dsn": "x", "maintenance_windows": [{"cron": "0 2 * * *", "duration": "1h"}]}, [ADD])
    result, _ = run(reconciler, T0)  # 01:59:30, the window opens at 02:00
    assert result.requeue_after == timedelta(seconds=30)
    inside, _ = run(reconciler, T0 + timedelta(minutes=1))
    assert inside.outcome is Outcome.SUCCESS and reconciler.calls[-1] == "apply"


def test_a_crash_is_an_error_of_this_environment_with_backoff_and_no_secret() -> None:
    reconciler = FakeReconciler({"dsn": "x"}, [ADD])

    def boom() -> None:
        raise RuntimeError("kaput near postgresql://app:hunter2-secret@db/app")

    reconciler.fail = boom
    ctx = ReconcileContext(reconciler, Metrics(), StatusBoard(), clock=lambda: T0)  # type: ignore[arg-type]
    delays = [reconcile(Request("dev"), ctx).requeue_after for _ in range(4)]
    assert delays == [timedelta(seconds=s) for s in (2, 4, 5, 5)]
    status = ctx.status.get("dev")
    assert status is not None and status.consecutive_failures == 4
    ready = status.condition(ConditionType.READY)
    assert ready.reason.value == "InternalError" and "kaput" in ready.message and "hunter2" not in ready.message
    assert status.last_error is not None and "hunter2" not in status.last_error
    assert sample(ctx, "schema_reconciler_reconciles_total", outcome="error") == 4
    assert not status.is_true(ConditionType.RECONCILING)


def test_unreachable_environment_is_probed_and_reported_unreachable() -> None:
    reconciler = FakeReconciler({"dsn": "x", "connect_timeout": "1s"}, [ADD])

    def unreachable() -> None:
        raise UnreachableError("inspecting environment 'dev': cannot connect: refused")

    reconciler.fail = unreachable
    result, ctx = run(reconciler)
    assert result.outcome is Outcome.ERROR
    assert sample(ctx, "schema_reconciler_environment_reachable") == 0
    status = ctx.status.get("dev")
    assert status is not None and status.condition(ConditionType.READY).reason.value == "EnvironmentUnreachable"


def test_terminal_error_is_not_requeued() -> None:
    reconciler = FakeReconciler({"dsn": "x"}, [ADD])
    reconciler.fail_desired = DesiredStateError("syntax error at 010.sql:3")
    result, ctx = run(reconciler)
    assert result.outcome is Outcome.TERMINAL and result.requeue_after is None
    assert reconciler.calls == []
    assert sample(ctx, "schema_reconciler_environment_stalled") == 1
    status = ctx.status.get("dev")
    assert status is not None and status.condition(ConditionType.STALLED).reason.value == "DesiredStateInvalid"
