"""Approvals: approve or reject a queued plan, and decide whether a stored plan still matches a fresh one.

A plan is bound to its :class:`~reconciler.model.PlanKey` (desired revision, statements, the environment's schema
fingerprint, the database). An approval is refused, and the plan marked stale, once any of them changed.
"""

from __future__ import annotations

from collections.abc import Callable

import structlog

from . import policy
from .errors import PlanError, StalePlanError, UnreachableError
from .locks import environment_lock
from .model import Plan, PlanKey, PlanStatus, statements_hash
from .store import PlanRecord, Store
from .target import Target

log = structlog.get_logger("reconciler")


def check_approver(target: Target, rec: PlanRecord, by: str, what: str) -> None:
    """Refuse ``by`` unless the environment lists no approvers or lists ``by``."""
    approvers = target.env.approvers
    if approvers and by not in approvers:
        raise PlanError(
            f"{what} plan {rec.id}: {by!r} is not an approver of environment {rec.environment!r} "
            f"(approvers: {', '.join(approvers)})"
        )


def approve(store: Store, target: Target, rec: PlanRecord, by: str, fresh: Callable[[], PlanKey]) -> PlanRecord:
    """Record ``by``'s approval of pending plan ``rec``; it becomes approved once ``approvals_required`` different
    approvers approved it. ``fresh()`` gives the key a plan computed now would have (revision, fingerprint and
    database; the statements are not compared here): a pending plan whose key no longer matches is marked stale
    and the approval refused."""
    if not by.strip():
        raise PlanError("an approval needs the approver's name (--by)")
    check_approver(target, rec, by, "approve")
    denied = [s.sql for s in policy.denied(rec.statements)]
    if denied:
        raise PlanError(
            f"approving plan {rec.id}: refused, environment {rec.environment!r}'s policy denies "
            f"{len(denied)} of its statements even with approval: {'; '.join(denied)}"
        )
    if rec.status is PlanStatus.PENDING:
        now = fresh()
        why = rec.key.mismatch(PlanKey(now.revision, rec.statements_hash, now.fingerprint, now.database))
        if why is not None:
            mark_stale(store, rec, why)
            raise StalePlanError(
                f"approving plan {rec.id}: refused, the plan is stale: {why}; "
                f"`reconciler apply {rec.environment}` computes a new plan"
            )
    required = target.env.approvals_required
    rec = store.approve(rec.id, by, required=required)
    event = "plan_approved" if rec.status is PlanStatus.APPROVED else "approval_recorded"
    log.info(event, environment=rec.environment, plan_id=rec.id, by=by, approvals=len(rec.approvers), required=required)
    return rec


def reject(store: Store, target: Target, rec: PlanRecord, by: str, reason: str) -> PlanRecord:
    """Reject ``rec``. While an apply holds the environment's lock it may be running this very plan: refuse (busy)
    rather than record a rejection that comes too late. An environment that cannot be reached is not being applied
    to from here; the applier also re-reads the plan's status before every attempt."""
    if not by.strip():
        raise PlanError("a rejection needs the name of who rejects it (--by)")
    if not reason.strip():
        raise PlanError("a rejection needs a reason (--reason)")
    check_approver(target, rec, by, "reject")
    try:
        with environment_lock(target.dsn, environment=target.name, connect_timeout=target.env.connect_timeout):
            rec = store.reject(rec.id, by, reason)
    except UnreachableError:
        rec = store.reject(rec.id, by, reason)
    log.info("plan_rejected", environment=rec.environment, plan_id=rec.id, by=by)
    return rec


def mark_stale(store: Store, rec: PlanRecord, why: str) -> None:
    """A pending, approved or resumable failed plan that no longer matches: marked stale (and logged)."""
    allowed = [PlanStatus.PENDING, PlanStatus.APPROVED, PlanStatus.FAILED]
    store.transition(rec.id, to=PlanStatus.STALE, allowed_from=allowed, event="plan_stale", reason=why)
    log.warning("plan_stale", environment=rec.environment, plan_id=rec.id, reason=why)


def expected_key(store: Store, rec: PlanRecord) -> PlanKey:
    """The key a fresh plan must have for ``rec`` to run: after completed steps, the remaining statements and the
    fingerprint recorded after the last of them."""
    done = set(rec.completed_steps)
    if not done:
        return rec.key
    remaining = [sql for i, sql in enumerate(rec.sqls) if i not in done]
    after = max(store.progress_of(rec.id), key=lambda p: p.step_index).fingerprint_after
    return PlanKey(rec.desired_revision, statements_hash(remaining), after, rec.database)


def mismatch(store: Store, target: Target, rec: PlanRecord, fresh: Plan) -> str | None:
    """Why approved (or resumable) plan ``rec`` may not run now that a fresh diff yields ``fresh`` (None: it may)."""
    if rec.environment != fresh.environment:
        return f"the plan is for environment {rec.environment!r}, not {fresh.environment!r}"
    why = expected_key(store, rec).mismatch(fresh.key)
    if why is not None:
        done = len(rec.completed_steps)
        return why + (f" (after its {done} completed step(s))" if done and "statements" in why else "")
    env = target.env
    valid = {a for a in rec.approvers if not env.approvers or a in env.approvers}
    if len(valid) < env.approvals_required:
        return (
            f"it has {len(valid)} approval(s) by current approvers; environment {rec.environment!r} "
            f"requires {env.approvals_required}"
        )
    return None
