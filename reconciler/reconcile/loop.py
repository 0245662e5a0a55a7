"""``reconcile(request) -> result``: one level-triggered, idempotent pass over one environment.

A pass reads the desired state, measures the environment (plan), applies what policy allows when the
environment is neither suspended nor outside its maintenance windows (``Reconciler.apply`` also runs an approved
plan that still matches and queues the rest), and records status and metrics in a ``finally`` whatever happened.
It never raises: errors become results. Retryable errors requeue after an exponential backoff, terminal errors
stall the environment, anything unexpected is an ``InternalError`` of this environment only.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog

from .. import status as st
from ..db import connect, redact
from ..desired import desired_signature
from ..errors import BusyError, ReconcilerError, TerminalError, UnreachableError
from ..model import DesiredState, PlanStatus, Severity, Statement
from ..obs.metrics import NO_HAZARD, Metrics
from ..obs.phases import observing
from ..promotion import waiting_for
from ..service import Reconciler
from ..store import PlanRecord
from ..target import Target
from ..windows import next_window_start, window_open
from .backoff import backoff_delay
from .board import StatusBoard
from .result import Outcome, Request, Result

log = structlog.get_logger("reconciler.loop")

_SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.DANGER: 2}


def utcnow() -> datetime:
    return datetime.now(UTC)


def primary_kind(statement: Statement) -> str:
    """The kind of a statement's most severe hazard (the first of equals), or ``NONE``: a metric label."""
    if not statement.hazards:
        return NO_HAZARD
    return max(statement.hazards, key=lambda h: _SEVERITY_RANK.get(h.severity, 0)).kind.value


def kinds(statements: Iterable[Statement]) -> Counter[str]:
    return Counter(primary_kind(s) for s in statements)


@dataclass
class ReconcileContext:
    """What a reconcile needs. ``reconciler`` is shared by all workers: its store, scratch server and embedded
    server are created before the workers start (see the daemon) and are safe to share."""

    reconciler: Reconciler
    metrics: Metrics
    status: StatusBoard
    clock: Callable[[], datetime] = field(default=utcnow)
    _desired: tuple[tuple[tuple[str, int, int, int], ...], DesiredState] | None = field(default=None, repr=False)
    _desired_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def load_desired(self) -> DesiredState:
        """The desired state, read and syntax-checked again only when its files changed (path, inode, size or
        modification time): a pass over an unchanged desired state does not parse it again."""
        folder = self.reconciler.config.desired_state
        if not isinstance(folder, str):  # a command or SQLAlchemy source: produced afresh each time
            return self.reconciler.load_desired()
        signature = desired_signature(folder)
        with self._desired_lock:
            if self._desired is not None and self._desired[0] == signature:
                return self._desired[1]
        desired = self.reconciler.load_desired()
        with self._desired_lock:
            self._desired = (signature, desired)
        return desired


@dataclass
class _Seen:
    """Facts gathered during a pass, turned into status and metrics in the ``finally``."""

    revision: str | None = None
    drifted: bool | None = None
    pending: Counter[str] = field(default_factory=Counter)  # statements not applied, by primary hazard kind
    blocked: st.Reason | None = None
    applied: int = 0
    notes: tuple[str, ...] = ()
    reachable: bool | None = None
    awaiting: int | None = None
    oldest_awaiting: datetime | None = None
    pending_plan_id: int | None = None
    approved_plan_id: int | None = None
    fingerprint: str | None = None  # the environment's, when known without another catalog query
    lock_blocked: float | None = None  # seconds another session has held the apply lock (0: the pass took it)
    plan_id: int | None = None  # the plan this pass applied or queued
    unmanaged: tuple[tuple[str, int], ...] | None = None  # (kind, count) of unmanaged drift, when measured


def reconcile(request: Request, ctx: ReconcileContext) -> Result:
    """Bring one environment towards the desired state as far as policy, windows and approvals allow."""
    name = request.environment
    reconciler = ctx.reconciler
    started = time.perf_counter()
    at = ctx.clock()
    prev = ctx.status.ensure(name, at)
    seen = _Seen()
    result = Result(Outcome.ERROR, reconciler.config.daemon.backoff_base, "the reconcile did not finish")
    reason: st.Reason | None = None

    def on_phase(phase: str, seconds: float) -> None:
        ctx.metrics.observe_phase(name, phase, seconds)

    with (
        structlog.contextvars.bound_contextvars(
            environment=name,
            reconcile_id=uuid.uuid4().hex[:12],
            # Until the desired state is read: the revision of the previous pass (rebound below).
            revision=prev.last_attempted_revision[:12] if prev.last_attempted_revision else None,
        ),
        observing(on_phase),
    ):
        try:
            ctx.status.put(st.begin(prev, prev.last_attempted_revision, at))
            result = _reconcile(name, ctx, prev, seen, at)
        except TerminalError as exc:
            reason = st.error_reason(exc, terminal=True)
            result = Result(Outcome.TERMINAL, None, redact(str(exc)))
            log.error("reconcile_stalled", reason=reason.value, error=result.error)
        except ReconcilerError as exc:
            reason = st.error_reason(exc, terminal=False)
            result = _retry(reconciler, prev, redact(str(exc)))
            if isinstance(exc, UnreachableError):
                seen.reachable = _probe(reconciler, name)
            if isinstance(exc, BusyError):
                seen.lock_blocked = exc.blocked_seconds
            log.warning("reconcile_failed", reason=reason.value, error=result.error, retry_in=_secs(result))
        except Exception as exc:
            reason = st.Reason.INTERNAL_ERROR
            result = _retry(reconciler, prev, f"internal error: {type(exc).__name__}: {redact(str(exc))}")
            log.exception("reconcile_crashed", error=result.error, retry_in=_secs(result))
        finally:
            done = ctx.clock()
            # Metrics first: whoever sees the new status (the API) then also sees the metrics of the same pass.
            _record_metrics(ctx.metrics, name, result, seen, done, time.perf_counter() - started)
            _save_status(ctx, st.finish(ctx.status.get(name) or prev, _observation(result, seen, reason, done)))
            _export_audit_head(ctx)
    return result


def _export_audit_head(ctx: ReconcileContext) -> None:
    """The audit chain's length and head as metrics: kept by the monitoring, a rewrite or truncation shows."""
    try:
        head = ctx.reconciler.store.audit_head()
    except Exception as exc:
        log.error("audit_head_not_read", error=redact(str(exc)))
        return
    ctx.metrics.set_audit_head(head.records, head.head_id, head.head)


def _observation(result: Result, seen: _Seen, reason: st.Reason | None, at: datetime) -> st.Observation:
    return st.Observation(
        outcome=result.outcome,
        at=at,
        revision=seen.revision,
        drifted=seen.drifted,
        pending_statements=seen.pending.total(),
        pending_plan_id=seen.pending_plan_id,
        approved_plan_id=seen.approved_plan_id,
        blocked=seen.blocked,
        applied=seen.applied,
        notes=seen.notes,
        error=result.error,
        error_reason=reason,
        retry_after=result.requeue_after if result.outcome is Outcome.ERROR else None,
        fingerprint=seen.fingerprint,
        plan_id=seen.plan_id,
        unmanaged_drift=seen.unmanaged or (),
    )


def _save_status(ctx: ReconcileContext, status: st.EnvironmentStatus) -> None:
    """Cache and persist the finished status; a store that cannot take it leaves the cached one in force."""
    try:
        ctx.status.save(status)
    except Exception as exc:
        log.error("status_not_persisted", error=redact(str(exc)))


def _reconcile(name: str, ctx: ReconcileContext, prev: st.EnvironmentStatus, seen: _Seen, at: datetime) -> Result:
    reconciler = ctx.reconciler
    target = reconciler.target(name)  # resolved once for the pass
    env = target.env
    desired = ctx.load_desired()
    seen.revision = desired.revision
    structlog.contextvars.bind_contextvars(revision=desired.short_revision)
    ctx.metrics.set_desired_revision(desired.revision)
    if prev.last_attempted_revision and prev.last_attempted_revision != desired.revision:
        log.info("desired_revision_changed", previous=prev.last_attempted_revision[:12])

    open_now = window_open(env.maintenance_windows, at)
    ctx.metrics.set_window_open(name, open_now)
    ctx.metrics.set_suspended(name, env.suspend)
    if env.suspend:
        seen.blocked = st.Reason.SUSPENDED
    elif not open_now:
        seen.blocked = st.Reason.OUTSIDE_MAINTENANCE_WINDOW
    waiting = waiting_for(reconciler.config, reconciler.store, name, desired.revision)
    ctx.metrics.set_promotion_waiting(name, waiting is not None)
    if waiting is not None and seen.blocked is None:
        seen.blocked = st.Reason.AWAITING_PROMOTION
        seen.notes = (waiting,)

    remaining: tuple[Statement, ...] = ()
    pending: list[PlanRecord] = []
    approved: list[PlanRecord] = []
    if not _unchanged_since_in_sync(target, ctx, desired, prev, seen):
        remaining = _measure(target, ctx, desired, seen)
        pending = reconciler.store.list_plans(name, PlanStatus.PENDING)
        approved = reconciler.store.list_plans(name, PlanStatus.APPROVED)
    seen.drifted = bool(remaining) or bool(seen.unmanaged)
    seen.pending = kinds(remaining)
    seen.awaiting = len(pending)
    seen.oldest_awaiting = min((p.created_at for p in pending), default=None)
    seen.pending_plan_id = pending[-1].id if pending else None
    seen.approved_plan_id = approved[-1].id if approved else None

    requeue = env.interval
    if seen.drifted and seen.blocked is st.Reason.OUTSIDE_MAINTENANCE_WINDOW:
        opens = next_window_start(env.maintenance_windows, at, env.interval)
        if opens is not None:
            requeue = max(timedelta(seconds=1), opens - ctx.clock())
    outcome = Outcome.REQUEUE if seen.drifted else Outcome.SUCCESS
    log.info(
        "reconciled",
        outcome=outcome.value,
        drifted=seen.drifted,
        pending_statements=len(remaining),
        applied=seen.applied,
        pending_plan_id=seen.pending_plan_id,
        blocked=seen.blocked.value if seen.blocked else None,
    )
    return Result(outcome, requeue)


def _unchanged_since_in_sync(
    target: Target, ctx: ReconcileContext, desired: DesiredState, prev: st.EnvironmentStatus, seen: _Seen
) -> bool:
    """The fast path: the environment's schema fingerprint is the one it last converged with, for this desired
    revision, and no plan of it waits or is approved: it is in sync, without inspecting or diffing (and no plan
    waits, so the pass need not list them again). The fingerprint covers every managed object (see
    :mod:`reconciler.inspect`), so any change to the schema, by anyone, takes the full pass; it is read in full only
    when the catalog stamp (one cheaper query) moved since the last read (:func:`~reconciler.planning.read_fingerprint_stamped`)."""
    if not prev.fingerprint or prev.last_applied_revision != desired.revision:
        return False
    if ctx.reconciler.store.live_plan(target.name) is not None:
        return False
    now = ctx.reconciler.warm_fingerprint(target)
    seen.reachable = True
    if now != prev.fingerprint:
        return False
    seen.fingerprint = now
    ctx.metrics.count_fast_path(target.name)
    return True


def _measure(target: Target, ctx: ReconcileContext, desired: DesiredState, seen: _Seen) -> tuple[Statement, ...]:
    """Apply what may run now (unless blocked); return what still differs from the desired state."""
    reconciler = ctx.reconciler
    name = target.name
    if seen.blocked is None:
        # Suspension and windows were decided above, on our clock; the pass records its own status.
        applied = reconciler.apply(target, force=True, record_status=False)
        seen.revision = applied.desired_revision
        seen.reachable = True
        seen.lock_blocked = 0.0
        seen.applied = len(applied.applied)
        seen.notes = tuple(redact(m) for m in applied.messages)
        seen.plan_id = applied.applied_plan_id or applied.queued_plan_id
        if applied.applied_statements:
            ctx.metrics.count_applied(name, kinds(applied.applied_statements).elements())
        # What the apply planned under its lock still describes the environment when nothing ran.
        seen.fingerprint = None if applied.applied else applied.planned_fingerprint or None
        seen.unmanaged = st.unmanaged_summary(d.kind for d in applied.unmanaged_drift)
        return tuple(applied.remaining)
    plan = reconciler.plan(target, desired)
    seen.reachable = True
    seen.fingerprint = plan.fingerprint or None
    seen.unmanaged = st.unmanaged_summary(d.kind for d in plan.unmanaged_drift)
    return tuple(plan.statements)


def _retry(reconciler: Reconciler, prev: st.EnvironmentStatus, error: str) -> Result:
    d = reconciler.config.daemon
    return Result(Outcome.ERROR, backoff_delay(prev.consecutive_failures + 1, d.backoff_base, d.backoff_max), error)


def _secs(result: Result) -> float | None:
    return result.requeue_after.total_seconds() if result.requeue_after is not None else None


def _probe(reconciler: Reconciler, name: str) -> bool:
    """After an UnreachableError: was it the environment (not the scratch server) that could not be reached?"""
    try:
        target = reconciler.target(name)
        with connect(target.dsn, what=target.doing("probing"), connect_timeout=target.env.connect_timeout):
            return True
    except ReconcilerError:
        return False


def _record_metrics(metrics: Metrics, name: str, result: Result, seen: _Seen, at: datetime, seconds: float) -> None:
    metrics.observe_reconcile(name, result.outcome.value, seconds)
    metrics.set_stalled(name, result.outcome is Outcome.TERMINAL)
    if seen.reachable is not None:
        metrics.set_reachable(name, seen.reachable)
    if seen.drifted is not None:
        metrics.set_drift(name, seen.drifted, seen.pending)
    if seen.unmanaged is not None:
        metrics.set_unmanaged_drift(name, dict(seen.unmanaged))
    if seen.awaiting is not None:
        metrics.set_awaiting(name, seen.awaiting, seen.oldest_awaiting)
    if result.outcome in (Outcome.SUCCESS, Outcome.REQUEUE):
        metrics.set_success(name, at.timestamp())
    if seen.lock_blocked is not None:
        metrics.set_lock_blocked(name, seen.lock_blocked)
