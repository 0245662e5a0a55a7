"""Status of an environment as Kubernetes-style conditions, computed from what one reconcile observed.

Condition types and their reasons (CamelCase, stable; they appear in the API):

* ``Ready``: True/``InSync``; False/``AwaitingApproval``, ``OutsideMaintenanceWindow``, ``Suspended``,
  ``DriftNotResolved``, or the error reason of a failed reconcile; Unknown/``NotYetReconciled``.
* ``Drifted``: True/``DriftDetected``, or ``UnmanagedDrift`` when no statement is left but the catalogs still
  differ (Ready is then False with the same reason); False/``InSync``. Left as it was when a reconcile could not measure.
* ``AwaitingApproval``: True/``PlanPending``; False/``NoPendingPlan``.
* ``Reconciling``: True/``Progressing`` while a reconcile runs; False/``Idle``.
* ``Stalled``: True with a terminal reason (``DesiredStateInvalid``, ``ConfigInvalid``, ``VersionMismatch``,
  ``ApplyFailed``, ``PlanInvalid``, ``StoreUnusable``, ``TerminalError``); False/``NotStalled``.

Retryable error reasons: ``EnvironmentUnreachable``, ``EnvironmentBusy``, ``LockTimeout``, ``ApplyInterrupted``,
``ReconcileFailed``, ``InternalError``.

``last_attempted_revision`` is the desired revision of the latest reconcile; ``last_applied_revision`` the
latest revision the environment was seen to match, and ``fingerprint`` its schema fingerprint then (the two are
set together, so they always describe the same moment).

This module is the one owner of an environment's status: :func:`finish` computes the next status from what one
reconcile (or one ``apply`` of the CLI) observed, the store persists the value as :meth:`EnvironmentStatus.to_json`
gives it, and :func:`record_outcome` does both. It imports only the error tree and the standard library.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, Protocol

from .errors import (
    ApplyError,
    ApplyInterruptedError,
    BusyError,
    ConfigError,
    DesiredStateError,
    LockTimeoutError,
    PlanError,
    StoreError,
    UnreachableError,
    VersionMismatchError,
)


class Outcome(StrEnum):
    """How a reconcile ended; the values are the ``outcome`` label of ``schema_reconciler_reconciles_total``."""

    SUCCESS = "success"  # the environment matches the desired state: next check after the interval
    REQUEUE = "requeue"  # drift remains (awaiting approval, outside a window, suspended): check again later
    ERROR = "error"  # a retryable error: retry after an exponential backoff
    TERMINAL = "terminal"  # retrying will not help: Stalled until the configuration or desired state changes


class ConditionType(StrEnum):
    READY = "Ready"
    DRIFTED = "Drifted"
    AWAITING_APPROVAL = "AwaitingApproval"
    RECONCILING = "Reconciling"
    STALLED = "Stalled"


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Reason(StrEnum):
    NOT_YET_RECONCILED = "NotYetReconciled"
    IN_SYNC = "InSync"
    DRIFT_DETECTED = "DriftDetected"
    AWAITING_APPROVAL = "AwaitingApproval"
    OUTSIDE_MAINTENANCE_WINDOW = "OutsideMaintenanceWindow"
    SUSPENDED = "Suspended"
    AWAITING_PROMOTION = "AwaitingPromotion"
    DRIFT_NOT_RESOLVED = "DriftNotResolved"
    UNMANAGED_DRIFT = "UnmanagedDrift"  # the catalogs differ in what no plan statement resolves
    PLAN_PENDING = "PlanPending"
    NO_PENDING_PLAN = "NoPendingPlan"
    PROGRESSING = "Progressing"
    IDLE = "Idle"
    NOT_STALLED = "NotStalled"
    # retryable errors
    ENVIRONMENT_UNREACHABLE = "EnvironmentUnreachable"
    ENVIRONMENT_BUSY = "EnvironmentBusy"
    APPLY_LOCK_HELD = "ApplyLockHeld"  # busy: someone else has held the apply lock longer than lock_held_alert_after
    LOCK_TIMEOUT = "LockTimeout"
    APPLY_INTERRUPTED = "ApplyInterrupted"
    RECONCILE_FAILED = "ReconcileFailed"
    INTERNAL_ERROR = "InternalError"
    # terminal errors
    DESIRED_STATE_INVALID = "DesiredStateInvalid"
    CONFIG_INVALID = "ConfigInvalid"
    VERSION_MISMATCH = "VersionMismatch"
    APPLY_FAILED = "ApplyFailed"
    PLAN_INVALID = "PlanInvalid"
    STORE_UNUSABLE = "StoreUnusable"
    TERMINAL_ERROR = "TerminalError"


# Most specific first: subclasses before their bases.
_ERROR_REASONS: tuple[tuple[type[BaseException], Reason], ...] = (
    (DesiredStateError, Reason.DESIRED_STATE_INVALID),
    (ConfigError, Reason.CONFIG_INVALID),
    (VersionMismatchError, Reason.VERSION_MISMATCH),
    (ApplyError, Reason.APPLY_FAILED),
    (PlanError, Reason.PLAN_INVALID),
    (StoreError, Reason.STORE_UNUSABLE),
    (UnreachableError, Reason.ENVIRONMENT_UNREACHABLE),
    (BusyError, Reason.ENVIRONMENT_BUSY),
    (LockTimeoutError, Reason.LOCK_TIMEOUT),
    (ApplyInterruptedError, Reason.APPLY_INTERRUPTED),
)


def error_reason(exc: BaseException, *, terminal: bool) -> Reason:
    """The condition reason for an error raised by a reconcile."""
    if isinstance(exc, BusyError) and exc.overdue:
        return Reason.APPLY_LOCK_HELD
    for cls, reason in _ERROR_REASONS:
        if isinstance(exc, cls):
            return reason
    return Reason.TERMINAL_ERROR if terminal else Reason.RECONCILE_FAILED


@dataclass(frozen=True)
class Condition:
    type: ConditionType
    status: ConditionStatus
    reason: Reason
    message: str
    last_transition_time: datetime

    def to_json(self) -> dict[str, str]:
        return {
            "type": self.type.value,
            "status": self.status.value,
            "reason": self.reason.value,
            "message": self.message,
            "last_transition_time": self.last_transition_time.isoformat(),
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Condition:
        return cls(
            ConditionType(doc["type"]),
            ConditionStatus(doc["status"]),
            Reason(doc["reason"]),
            doc["message"],
            datetime.fromisoformat(doc["last_transition_time"]),
        )


def _iso(at: datetime | None) -> str | None:
    return at.isoformat() if at is not None else None


def _time(text: str | None) -> datetime | None:
    return datetime.fromisoformat(text) if text is not None else None


@dataclass(frozen=True)
class EnvironmentStatus:
    """An environment's status: its conditions and what a restart must keep (failures, backoff, revisions).

    ``retry_at`` is when the backoff after the latest retryable error ends (None when not backing off);
    ``fingerprint`` the environment's schema fingerprint when it was last seen in sync at
    ``last_applied_revision`` (None when not known); ``last_plan_id`` the latest plan applied or queued.
    """

    environment: str
    conditions: tuple[Condition, ...]
    last_attempted_revision: str | None = None
    last_applied_revision: str | None = None
    last_error: str | None = None
    observed_at: datetime | None = None
    last_outcome: Outcome | None = None
    consecutive_failures: int = 0
    pending_plan_id: int | None = None
    retry_at: datetime | None = None
    fingerprint: str | None = None
    last_plan_id: int | None = None

    def condition(self, type_: ConditionType) -> Condition:
        return next(c for c in self.conditions if c.type is type_)

    def is_true(self, type_: ConditionType) -> bool:
        return self.condition(type_).status is ConditionStatus.TRUE

    @property
    def stalled(self) -> bool:
        return self.is_true(ConditionType.STALLED)

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "conditions": [c.to_json() for c in self.conditions],
            "last_attempted_revision": self.last_attempted_revision,
            "last_applied_revision": self.last_applied_revision,
            "last_error": self.last_error,
            "observed_at": _iso(self.observed_at),
            "last_outcome": self.last_outcome.value if self.last_outcome else None,
            "consecutive_failures": self.consecutive_failures,
            "pending_plan_id": self.pending_plan_id,
            "retry_at": _iso(self.retry_at),
            "fingerprint": self.fingerprint,
            "last_plan_id": self.last_plan_id,
        }

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> EnvironmentStatus:
        """The status :meth:`to_json` gave (keys added later are optional)."""
        outcome = doc.get("last_outcome")
        return cls(
            environment=doc["environment"],
            conditions=tuple(Condition.from_json(c) for c in doc["conditions"]),
            last_attempted_revision=doc.get("last_attempted_revision"),
            last_applied_revision=doc.get("last_applied_revision"),
            last_error=doc.get("last_error"),
            observed_at=_time(doc.get("observed_at")),
            last_outcome=Outcome(outcome) if outcome else None,
            consecutive_failures=int(doc.get("consecutive_failures", 0)),
            pending_plan_id=doc.get("pending_plan_id"),
            retry_at=_time(doc.get("retry_at")),
            fingerprint=doc.get("fingerprint"),
            last_plan_id=doc.get("last_plan_id"),
        )


def initial_status(environment: str, at: datetime) -> EnvironmentStatus:
    unknown = ConditionStatus.UNKNOWN
    waiting = "the environment has not been reconciled yet"
    return EnvironmentStatus(
        environment,
        (
            Condition(ConditionType.READY, unknown, Reason.NOT_YET_RECONCILED, waiting, at),
            Condition(ConditionType.DRIFTED, unknown, Reason.NOT_YET_RECONCILED, waiting, at),
            Condition(ConditionType.AWAITING_APPROVAL, unknown, Reason.NOT_YET_RECONCILED, waiting, at),
            Condition(ConditionType.RECONCILING, ConditionStatus.FALSE, Reason.IDLE, "", at),
            Condition(ConditionType.STALLED, ConditionStatus.FALSE, Reason.NOT_STALLED, "", at),
        ),
    )


def set_condition(
    status: EnvironmentStatus,
    type_: ConditionType,
    value: bool,
    reason: Reason,
    message: str,
    at: datetime,
) -> EnvironmentStatus:
    """``status`` with one condition replaced; its transition time moves only when True/False flips."""
    new_status = ConditionStatus.TRUE if value else ConditionStatus.FALSE
    conditions = []
    for c in status.conditions:
        if c.type is type_:
            since = c.last_transition_time if c.status is new_status else at
            c = Condition(type_, new_status, reason, message, since)
        conditions.append(c)
    return replace(status, conditions=tuple(conditions))


def begin(status: EnvironmentStatus, revision: str | None, at: datetime) -> EnvironmentStatus:
    """The status while a reconcile runs."""
    msg = f"reconciling towards revision {revision[:12]}" if revision else "reconciling"
    return set_condition(status, ConditionType.RECONCILING, True, Reason.PROGRESSING, msg, at)


@dataclass(frozen=True)
class Observation:
    """What one reconcile found out; :func:`finish` turns it into the next status."""

    outcome: Outcome
    at: datetime
    revision: str | None = None
    drifted: bool | None = None  # None: not measured (the reconcile failed before)
    pending_statements: int = 0
    pending_plan_id: int | None = None
    approved_plan_id: int | None = None
    blocked: Reason | None = None  # Suspended or OutsideMaintenanceWindow: may not apply now
    applied: int = 0
    notes: tuple[str, ...] = field(default_factory=tuple)
    error: str | None = None
    error_reason: Reason | None = None
    retry_after: timedelta | None = None  # the backoff after a retryable error
    fingerprint: str | None = None  # the environment's schema fingerprint, when known at the end of the pass
    plan_id: int | None = None  # the plan applied or queued by the pass
    unmanaged_drift: tuple[tuple[str, int], ...] = ()  # (kind, count) of the differences no statement resolves


def unmanaged_summary(kinds: Iterable[str]) -> tuple[tuple[str, int], ...]:
    """(kind, count) pairs, sorted by kind, of the kinds of unmanaged drift: what status and metrics keep."""
    return tuple(sorted(Counter(kinds).items()))


def _unmanaged_message(obs: Observation) -> str:
    kinds = ", ".join(f"{n} {k}" for k, n in obs.unmanaged_drift)
    return f"the schema differs from revision {(obs.revision or '')[:12]} in what no statement resolves: {kinds}"


def _ready(obs: Observation) -> tuple[bool, Reason, str]:
    if obs.outcome in (Outcome.ERROR, Outcome.TERMINAL):
        return False, obs.error_reason or Reason.RECONCILE_FAILED, obs.error or ""
    if not obs.drifted:
        applied = f"; applied {obs.applied} statement(s)" if obs.applied else ""
        return True, Reason.IN_SYNC, f"the environment matches revision {(obs.revision or '')[:12]}{applied}"
    if obs.pending_plan_id is not None:
        why = "".join(f"; {n}" for n in obs.notes)  # e.g. why vetting refused the unattended part
        return False, Reason.AWAITING_APPROVAL, f"plan {obs.pending_plan_id} awaits approval{why}"
    if obs.blocked is Reason.SUSPENDED:
        return False, Reason.SUSPENDED, "suspended: drift is measured, nothing is applied"
    if obs.blocked is Reason.AWAITING_PROMOTION:
        return False, Reason.AWAITING_PROMOTION, "; ".join(obs.notes) or "waiting for an earlier environment"
    if obs.blocked is Reason.OUTSIDE_MAINTENANCE_WINDOW:
        extra = f"; approved plan {obs.approved_plan_id} waits for it" if obs.approved_plan_id is not None else ""
        return False, Reason.OUTSIDE_MAINTENANCE_WINDOW, f"outside every maintenance window{extra}"
    if obs.unmanaged_drift and not obs.pending_statements:
        return False, Reason.UNMANAGED_DRIFT, _unmanaged_message(obs)
    return False, Reason.DRIFT_NOT_RESOLVED, "; ".join(obs.notes) or "drift remains after applying"


def finish(status: EnvironmentStatus, obs: Observation) -> EnvironmentStatus:
    """The status after a reconcile, written whatever happened (the loop calls this in a ``finally``)."""
    at = obs.at
    failed = obs.outcome in (Outcome.ERROR, Outcome.TERMINAL)
    retrying = obs.outcome is Outcome.ERROR and obs.retry_after is not None
    s = replace(
        status,
        last_attempted_revision=obs.revision or status.last_attempted_revision,
        last_error=obs.error if failed else None,
        observed_at=at,
        last_outcome=obs.outcome,
        consecutive_failures=status.consecutive_failures + 1 if obs.outcome is Outcome.ERROR else 0,
        retry_at=at + obs.retry_after if retrying and obs.retry_after is not None else None,
        last_plan_id=obs.plan_id if obs.plan_id is not None else status.last_plan_id,
    )
    ready, reason, message = _ready(obs)
    s = set_condition(s, ConditionType.READY, ready, reason, message, at)
    if ready:
        s = replace(s, last_applied_revision=obs.revision, fingerprint=obs.fingerprint)
    if obs.drifted is not None:
        s = _measured(s, obs)
    s = set_condition(s, ConditionType.RECONCILING, False, Reason.IDLE, "", at)
    if obs.outcome is Outcome.TERMINAL:
        msg = (obs.error or "") + " (not retried until the configuration or the desired state changes)"
        return set_condition(s, ConditionType.STALLED, True, obs.error_reason or Reason.TERMINAL_ERROR, msg, at)
    return set_condition(s, ConditionType.STALLED, False, Reason.NOT_STALLED, "", at)


def _measured(s: EnvironmentStatus, obs: Observation) -> EnvironmentStatus:
    """The Drifted and AwaitingApproval conditions of a pass that measured the environment."""
    at = obs.at
    if obs.drifted and obs.unmanaged_drift and not obs.pending_statements:
        s = set_condition(s, ConditionType.DRIFTED, True, Reason.UNMANAGED_DRIFT, _unmanaged_message(obs), at)
    elif obs.drifted:
        msg = f"{obs.pending_statements} statement(s) differ from revision {(obs.revision or '')[:12]}"
        s = set_condition(s, ConditionType.DRIFTED, True, Reason.DRIFT_DETECTED, msg, at)
    else:
        s = set_condition(s, ConditionType.DRIFTED, False, Reason.IN_SYNC, "no drift", at)
    if obs.pending_plan_id is not None:
        msg = f"plan {obs.pending_plan_id} awaits approval"
        s = set_condition(s, ConditionType.AWAITING_APPROVAL, True, Reason.PLAN_PENDING, msg, at)
    else:
        s = set_condition(s, ConditionType.AWAITING_APPROVAL, False, Reason.NO_PENDING_PLAN, "", at)
    return replace(s, pending_plan_id=obs.pending_plan_id)


class StatusStore(Protocol):
    """Where statuses persist (:class:`reconciler.store.Store` is one)."""

    def load_status(self, environment: str) -> EnvironmentStatus | None: ...

    def save_status(self, status: EnvironmentStatus) -> None: ...


def record_outcome(store: StatusStore, environment: str, obs: Observation) -> EnvironmentStatus:
    """Turn what a pass or an ``apply`` observed into the environment's next status, persist and return it."""
    previous = store.load_status(environment) or initial_status(environment, obs.at)
    status = finish(previous, obs)
    store.save_status(status)
    return status
