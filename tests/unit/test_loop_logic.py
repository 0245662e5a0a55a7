"""The reconcile loop's pure parts: backoff, jitter and the conditions computed from an observation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from reconciler import status as st
from reconciler.errors import (
    ApplyError,
    ConfigError,
    DesiredStateError,
    LockTimeoutError,
    ReconcilerError,
    TerminalError,
    UnreachableError,
)
from reconciler.reconcile.backoff import backoff_delay, jittered
from reconciler.status import ConditionStatus, ConditionType, Observation, Outcome, Reason

T0 = datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
REV = "a" * 64
REV2 = "b" * 64


@pytest.mark.parametrize(
    ("failures", "seconds"),
    [(0, 0), (1, 5), (2, 10), (3, 20), (4, 40), (6, 160), (7, 300), (50, 300), (10_000, 300)],
)
def test_backoff_doubles_up_to_the_cap(failures: int, seconds: float) -> None:
    assert backoff_delay(failures, timedelta(seconds=5), timedelta(minutes=5)) == timedelta(seconds=seconds)


def test_jitter_stretches_by_at_most_the_ratio() -> None:
    d = timedelta(seconds=60)
    assert jittered(d, 0.1, lambda: 0.0) == d
    assert jittered(d, 0.1, lambda: 0.5) == timedelta(seconds=63)
    assert jittered(d, 0.0, lambda: 0.9) == d


def cond(s: st.EnvironmentStatus, t: ConditionType) -> tuple[str, str]:
    c = s.condition(t)
    return c.status.value, c.reason.value


def test_initial_status_is_unknown() -> None:
    s = st.initial_status("dev", T0)
    assert cond(s, ConditionType.READY) == ("Unknown", "NotYetReconciled")
    assert cond(s, ConditionType.STALLED) == ("False", "NotStalled")


def test_in_sync_is_ready_and_records_the_applied_revision() -> None:
    s = st.finish(st.initial_status("dev", T0), Observation(Outcome.SUCCESS, T0, REV, drifted=False, applied=2))
    assert cond(s, ConditionType.READY) == ("True", "InSync")
    assert cond(s, ConditionType.DRIFTED) == ("False", "InSync")
    assert cond(s, ConditionType.AWAITING_APPROVAL) == ("False", "NoPendingPlan")
    assert cond(s, ConditionType.RECONCILING) == ("False", "Idle")
    assert s.last_attempted_revision == s.last_applied_revision == REV
    assert "applied 2 statement(s)" in s.condition(ConditionType.READY).message


@pytest.mark.parametrize(
    ("obs", "ready_reason"),
    [
        (
            Observation(Outcome.REQUEUE, T0, REV, drifted=True, pending_statements=1, pending_plan_id=7),
            "AwaitingApproval",
        ),
        (Observation(Outcome.REQUEUE, T0, REV, drifted=True, blocked=Reason.SUSPENDED), "Suspended"),
        (
            Observation(Outcome.REQUEUE, T0, REV, drifted=True, blocked=Reason.OUTSIDE_MAINTENANCE_WINDOW),
            "OutsideMaintenanceWindow",
        ),
        (Observation(Outcome.REQUEUE, T0, REV, drifted=True, notes=("rejected before",)), "DriftNotResolved"),
    ],
    ids=["pending", "suspended", "window", "unresolved"],
)
def test_drift_reasons(obs: Observation, ready_reason: str) -> None:
    s = st.finish(st.initial_status("dev", T0), obs)
    assert cond(s, ConditionType.READY) == ("False", ready_reason)
    assert cond(s, ConditionType.DRIFTED) == ("True", "DriftDetected")
    assert s.last_applied_revision is None
    awaiting = ("True", "PlanPending") if obs.pending_plan_id else ("False", "NoPendingPlan")
    assert cond(s, ConditionType.AWAITING_APPROVAL) == awaiting


def test_retryable_error_keeps_measured_conditions_and_counts_failures() -> None:
    s = st.finish(
        st.initial_status("dev", T0),
        Observation(Outcome.REQUEUE, T0, REV, drifted=True, pending_statements=1, pending_plan_id=3),
    )
    later = T0 + timedelta(minutes=1)
    for n in (1, 2):
        s = st.finish(
            s,
            Observation(Outcome.ERROR, later, REV, error="cannot connect", error_reason=Reason.ENVIRONMENT_UNREACHABLE),
        )
        assert s.consecutive_failures == n
    assert cond(s, ConditionType.READY) == ("False", "EnvironmentUnreachable")
    assert s.last_error == "cannot connect"
    # What was measured before stays: the drift and the pending plan did not go away because we could not look.
    assert cond(s, ConditionType.DRIFTED) == ("True", "DriftDetected")
    assert cond(s, ConditionType.AWAITING_APPROVAL) == ("True", "PlanPending")
    assert cond(s, ConditionType.STALLED) == ("False", "NotStalled")
    s = st.finish(s, Observation(Outcome.SUCCESS, later, REV, drifted=False))
    assert s.consecutive_failures == 0 and s.last_error is None


def test_terminal_error_stalls_and_success_unstalls() -> None:
    s = st.finish(
        st.initial_status("dev", T0),
        Observation(
            Outcome.TERMINAL, T0, REV, error="syntax error at 010.sql:3", error_reason=Reason.DESIRED_STATE_INVALID
        ),
    )
    assert cond(s, ConditionType.STALLED) == ("True", "DesiredStateInvalid")
    assert cond(s, ConditionType.READY) == ("False", "DesiredStateInvalid")
    assert "not retried until" in s.condition(ConditionType.STALLED).message
    s = st.finish(s, Observation(Outcome.SUCCESS, T0, REV2, drifted=False))
    assert cond(s, ConditionType.STALLED) == ("False", "NotStalled")
    assert s.last_attempted_revision == REV2


def test_transition_time_moves_only_when_the_status_flips() -> None:
    s = st.finish(st.initial_status("dev", T0), Observation(Outcome.SUCCESS, T0, REV, drifted=False))
    t1 = T0 + timedelta(minutes=1)
    s = st.finish(s, Observation(Outcome.SUCCESS, t1, REV, drifted=False))
    assert s.condition(ConditionType.READY).last_transition_time == T0
    t2 = T0 + timedelta(minutes=2)
    s = st.finish(s, Observation(Outcome.REQUEUE, t2, REV, drifted=True, blocked=Reason.SUSPENDED))
    assert s.condition(ConditionType.READY).last_transition_time == t2
    assert s.condition(ConditionType.READY).status is ConditionStatus.FALSE


def test_begin_marks_reconciling() -> None:
    s = st.begin(st.initial_status("dev", T0), REV, T0)
    assert cond(s, ConditionType.RECONCILING) == ("True", "Progressing")


@pytest.mark.parametrize(
    ("exc", "terminal", "reason"),
    [
        (DesiredStateError("x"), True, "DesiredStateInvalid"),
        (ConfigError("x"), True, "ConfigInvalid"),
        (ApplyError("x"), True, "ApplyFailed"),
        (TerminalError("x"), True, "TerminalError"),
        (UnreachableError("x"), False, "EnvironmentUnreachable"),
        (LockTimeoutError("x"), False, "LockTimeout"),
        (ReconcilerError("x"), False, "ReconcileFailed"),
    ],
)
def test_error_reasons(exc: BaseException, terminal: bool, reason: str) -> None:
    assert st.error_reason(exc, terminal=terminal).value == reason


def test_status_json_has_the_documented_fields() -> None:
    s = st.finish(st.initial_status("dev", T0), Observation(Outcome.SUCCESS, T0, REV, drifted=False))
    doc = s.to_json()
    assert set(doc) >= {"conditions", "last_attempted_revision", "last_applied_revision", "last_error", "observed_at"}
    assert [c["type"] for c in doc["conditions"]] == ["Ready", "Drifted", "AwaitingApproval", "Reconciling", "Stalled"]


def test_a_retryable_error_records_when_its_backoff_ends() -> None:
    s = st.initial_status("dev", T0)
    error = Observation(
        Outcome.ERROR, T0, REV, error="down", error_reason=Reason.ENVIRONMENT_UNREACHABLE, retry_after=timedelta(8)
    )
    s = st.finish(s, error)
    assert (s.consecutive_failures, s.retry_at) == (1, T0 + timedelta(8))
    s = st.finish(s, Observation(Outcome.SUCCESS, T0 + timedelta(9), REV, drifted=False))
    assert (s.consecutive_failures, s.retry_at) == (0, None)


def test_fingerprint_and_applied_revision_are_set_together_only_in_sync() -> None:
    s = st.finish(st.initial_status("dev", T0), Observation(Outcome.SUCCESS, T0, REV, drifted=False, fingerprint="f1"))
    assert (s.last_applied_revision, s.fingerprint) == (REV, "f1")
    drifted = Observation(Outcome.REQUEUE, T0, REV2, drifted=True, pending_plan_id=4, plan_id=4, fingerprint="f2")
    s = st.finish(s, drifted)
    # Not in sync at REV2: the pair still describes the last moment the environment matched.
    assert (s.last_applied_revision, s.fingerprint, s.last_plan_id) == (REV, "f1", 4)
    # In sync, fingerprint unknown (statements ran): the old fingerprint must not pair with the new revision.
    s = st.finish(s, Observation(Outcome.SUCCESS, T0, REV2, drifted=False, applied=1))
    assert (s.last_applied_revision, s.fingerprint, s.last_plan_id) == (REV2, None, 4)


def rich_status() -> st.EnvironmentStatus:
    s = st.finish(
        st.initial_status("dev", T0),
        Observation(Outcome.REQUEUE, T0, REV, drifted=True, pending_statements=2, pending_plan_id=9, plan_id=9),
    )
    s = st.finish(s, Observation(Outcome.SUCCESS, T0 + timedelta(1), REV, drifted=False, fingerprint="f" * 64))
    later = T0 + timedelta(2)
    s = st.finish(
        s,
        Observation(
            Outcome.TERMINAL, later, REV2, error="apply failed: nope", error_reason=Reason.APPLY_FAILED, plan_id=11
        ),
    )
    return st.begin(s, REV2, later)


def test_status_json_round_trips_losslessly() -> None:
    s = rich_status()
    assert s.stalled and s.last_plan_id == 11 and s.fingerprint == "f" * 64
    doc = s.to_json()
    assert st.EnvironmentStatus.from_json(doc) == s
    # Through text, as the store keeps it.
    assert st.EnvironmentStatus.from_json(json.loads(json.dumps(doc))) == s
    backing_off = st.finish(
        s,
        Observation(
            Outcome.ERROR, T0, None, error="busy", error_reason=Reason.ENVIRONMENT_BUSY, retry_after=timedelta(3)
        ),
    )
    assert st.EnvironmentStatus.from_json(backing_off.to_json()) == backing_off
    assert st.EnvironmentStatus.from_json(st.initial_status("x", T0).to_json()) == st.initial_status("x", T0)
