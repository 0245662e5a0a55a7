"""The applier: under the environment's apply lock, run an approved plan that still matches, apply what may run
unattended, and queue the rest. It returns facts (:class:`ApplyResult`); it never decides status or metrics.

One :class:`Applier` serves one apply of one target: it holds the connection with the apply lock and the result
being built, so nothing is shared between concurrent applies of other environments.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from . import approvals, policy
from .apply import AppliedStatement, LockWait, execute_steps
from .drift import describe_options, desired_description
from .errors import ApplyError, ApplyInterruptedError, LockTimeoutError, PlanError, ReconcilerError, TerminalError
from .model import (
    DatabaseIdentity,
    Decision,
    DesiredState,
    Plan,
    PlanStatus,
    Statement,
    UnmanagedDrift,
    fingerprint_changed,
)
from .obs.phases import phase
from .planning import read_fingerprint
from .scratch import ScratchServer
from .status import Observation, Outcome, error_reason, record_outcome, unmanaged_summary
from .steps import Item, StepMap
from .store import PlanRecord, Store
from .target import Target, read_identity
from .vet import VetResult, desired_vetting_fingerprint, vet_plan

log = structlog.get_logger("reconciler")

Planner = Callable[[], Plan]


@dataclass
class ApplyResult:
    """What one apply did: statements applied, the plan queued or run, and what still differs afterwards."""

    environment: str
    desired_revision: str
    applied: list[str] = field(default_factory=list)
    queued_plan_id: int | None = None
    in_sync: bool = False
    messages: list[str] = field(default_factory=list)
    stale_plan_id: int | None = None
    vet: VetResult | None = None
    applied_plan_id: int | None = None  # the approved plan that ran, if any
    executed: list[AppliedStatement] = field(default_factory=list)  # every committed step, with timings
    lock_waits: list[LockWait] = field(default_factory=list)  # every attempt that gave up waiting for a lock
    applied_statements: list[Statement] = field(default_factory=list)
    remaining: tuple[Statement, ...] = ()  # what a plan of the environment still holds afterwards
    planned_fingerprint: str = ""  # the environment's fingerprint when this apply planned (under the lock)
    unmanaged_drift: tuple[UnmanagedDrift, ...] = ()  # what the last plan of this apply left unresolved

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "desired_revision": self.desired_revision,
            "applied": self.applied,
            "queued_plan_id": self.queued_plan_id,
            "in_sync": self.in_sync,
            "stale_plan_id": self.stale_plan_id,
            "messages": self.messages,
            "applied_plan_id": self.applied_plan_id,
            "executed": [a.to_json() for a in self.executed],
            "lock_waits": [w.to_json() for w in self.lock_waits],
            "unmanaged_drift": [d.to_json() for d in self.unmanaged_drift],
        }


@dataclass
class Applier:
    """One apply of ``target`` on ``conn``, the connection that holds its apply lock."""

    store: Store
    scratch: ScratchServer
    pg_dump: Path
    target: Target
    desired: DesiredState
    conn: Any
    replan: Planner
    needs_auth: bool = False  # only authenticated approvals count (approvals.needs_token)
    result: ApplyResult = field(init=False)

    def run(self) -> ApplyResult:
        plan = self.replan()
        self.result = ApplyResult(self.target.name, self.desired.revision, planned_fingerprint=plan.fingerprint)
        self._audit_plan(plan)
        live = self.store.live_plan(self.target.name) or self.store.resumable_plan(self.target.name)
        if live is not None and live.status in (PlanStatus.APPROVED, PlanStatus.FAILED):
            why = approvals.mismatch(self.store, self.target, live, plan, needs_auth=self.needs_auth)
            if why is None:
                return self._run_approved(plan, live)
            self._stale(live, why)
            live = None
        if not plan.statements:
            return self._settled(plan, live)
        return self._apply_unattended(plan, live)

    # -- unattended ---------------------------------------------------------------------------------
    def _apply_unattended(self, plan: Plan, live: PlanRecord | None) -> ApplyResult:
        """``live`` is the environment's pending plan, if any."""
        safe = [s for s in plan.statements if s.decision is Decision.AUTO]
        rest = [s for s in plan.statements if s.decision is not Decision.AUTO]
        if not safe and live is not None and live.key == plan.key:
            # Nothing may run unattended and the queued plan is exactly this one: it was vetted when it was
            # queued, and is vetted again before it runs.
            return self._queued(plan, live.id)
        vet = self._vet(plan, safe, rest, whole=plan.statements)
        if vet.failed:
            return self._vet_failed(plan, vet)  # nothing of it runs, not even the unattended part
        if safe and (not rest or vet.safe_stands_alone):
            self.result.applied = self._execute(safe)
            self.result.applied_statements = safe
        elif safe:
            self.result.messages.append(
                "the unattended statements depend on statements that need approval; the whole plan waits"
            )
            rest = list(plan.statements)
        after = self.replan() if self.result.applied else _with(plan, rest)
        if not after.statements:
            return self._settled(after, live)
        return self._queued(after, self._queue(after))

    def _settled(self, plan: Plan, live: PlanRecord | None) -> ApplyResult:
        """The environment matches the desired state: a pending plan is no longer needed."""
        if live is not None:
            self.store.settle(self.target.name, "the environment is in sync")
        self.result.in_sync = plan.in_sync  # no statements; unmanaged drift may remain
        self.result.unmanaged_drift = plan.unmanaged_drift
        self.result.remaining = plan.statements
        return self.result

    def _queued(self, plan: Plan, plan_id: int | None) -> ApplyResult:
        self.result.remaining = plan.statements
        self.result.unmanaged_drift = plan.unmanaged_drift
        self.result.queued_plan_id = plan_id
        return self.result

    def _queue(self, plan: Plan) -> int | None:
        got = self.store.queue_plan(plan)
        if got.rejected_id is not None:
            self.result.messages.append(
                f"the same plan was rejected before (plan {got.rejected_id}, for this desired revision and this "
                "schema of the environment); not queued again"
            )
        if got.approved_id is not None:
            self.result.messages.append(f"approved plan {got.approved_id} waits to run; nothing queued beside it")
        if got.created:
            log.info("plan_queued", environment=plan.environment, plan_id=got.plan_id, statements=len(plan.statements))
        return got.plan_id

    def _vet(
        self, plan: Plan, safe: Sequence[Statement], rest: Sequence[Statement], whole: Sequence[Statement] | None
    ) -> VetResult:
        with phase("vet"):
            built = self.scratch.build_desired(self.desired)
            env = self.target.env
            wanted = desired_description(built.dsn, built.revision, describe_options(env), env.connect_timeout)
            fingerprint = None
            if not plan.unmanaged_drift and not env.privileges:
                # Only then can a converged clone fingerprint like the desired build: drift the plan leaves stays
                # in the clone, and the clone's grants name its own build role. Otherwise the re-diff decides.
                fingerprint = desired_vetting_fingerprint(
                    built.dsn, built.revision, describe_options(env), env.connect_timeout
                )
            vet = vet_plan(
                self.scratch,
                self.target.dsn,
                env,
                built.inspection,
                safe,
                rest,
                self.pg_dump,
                whole=whole,
                wanted=wanted,
                desired_fingerprint=fingerprint,
            )
        self.result.vet = vet
        return vet

    def _vet_failed(self, plan: Plan, vet: VetResult) -> ApplyResult:
        """The failure is audited, and the whole plan waits for a human as a pending plan whose ``error`` names the
        statement and the PostgreSQL error."""
        err = f"vetting on a scratch clone failed: {vet.describe()}"
        self.result.messages.append(f"plan not applied: {err}")
        log.error("vet_failed", environment=plan.environment, error=vet.error, statement=vet.failed_statement)
        payload = {
            "error": vet.error,
            "statement": vet.failed_statement,
            "step": vet.failed_step,
            "phase": vet.phase,
            "residue": list(vet.residue),
            "statements_hash": plan.hash,
        }
        self.store.record("vet_failed", environment=plan.environment, payload=payload, unless_repeated=True)
        pid = self._queue(plan)
        if pid is not None and self.store.get_plan(pid).error != err:
            self.store.transition(
                pid, to=PlanStatus.PENDING, allowed_from=[PlanStatus.PENDING], event="plan_vet_failed", error=err
            )
        return self._queued(plan, pid)

    # -- approved -----------------------------------------------------------------------------------
    def _run_approved(self, plan: Plan, live: PlanRecord) -> ApplyResult:
        vet = self._vet(plan, [], plan.statements, whole=None)
        refused = policy.denial_reason(plan.statements, self.target.env)
        if not vet.ok or refused:
            err = refused or f"vetting on a scratch clone failed: {vet.describe()}"
            allowed = [PlanStatus.APPROVED, PlanStatus.FAILED]
            self.store.transition(
                live.id, to=PlanStatus.FAILED, allowed_from=allowed, event="plan_failed", error=err, resumable=False
            )
            self.result.messages.append(f"approved plan {live.id} not applied: {err}")
            return self._queued(plan, None)
        bound = self._bind(plan, live)
        if bound is None:
            return self._queued(plan, None)
        return self._execute_approved(plan, bound)

    def _bind(self, plan: Plan, live: PlanRecord) -> PlanRecord | None:
        """Just before running, on the connection that holds the apply lock: it must be connected to the database
        the plan is bound to, whose schema must still have the plan's fingerprint. Returns the plan, now approved,
        or None (marked stale)."""
        moved = DatabaseIdentity.parse(live.database).changed(read_identity(self.target, self.conn))
        if live.database and moved is not None:
            self._stale(live, moved)
            return None
        now = read_fingerprint(self.target, self.conn)
        if plan.fingerprint and now != plan.fingerprint:
            why = fingerprint_changed(plan.fingerprint, now) + " while the plan was being vetted"
            self._stale(live, why)
            return None
        if live.status is PlanStatus.FAILED:
            done = len(live.completed_steps)
            live = self.store.transition(
                live.id,
                to=PlanStatus.APPROVED,
                allowed_from=[PlanStatus.FAILED],
                event="plan_resumed",
                reason=f"resuming after {done} completed step(s); it failed with: {live.error}",
            )
            self.result.messages.append(f"resuming plan {live.id} after {done} completed step(s)")
            log.info("plan_resumed", environment=self.target.name, plan_id=live.id, completed=done)
        return live

    def _execute_approved(self, plan: Plan, live: PlanRecord) -> ApplyResult:
        # Steps of the stored plan; those still to run take their steps from the fresh plan.
        done = set(live.completed_steps)
        todo = [i for i in range(len(live.statements)) if i not in done]
        fresh = dict(zip(todo, plan.statements, strict=True))
        items: list[Item] = [fresh.get(i, s) for i, s in enumerate(live.statements)]
        self.result.applied_plan_id = live.id
        try:
            self.result.applied = self._execute(items, plan_id=live.id, skip=done)
        except ReconcilerError as exc:
            self._approved_failed(live, exc)
            raise
        self.store.transition(
            live.id,
            to=PlanStatus.APPLIED,
            allowed_from=[PlanStatus.APPROVED],
            event="plan_applied",
            actor=live.decided_by,
        )
        self.result.applied_statements = list(fresh.values())
        after = self.replan()
        self.result.remaining = after.statements
        self.result.unmanaged_drift = after.unmanaged_drift
        self.result.in_sync = after.in_sync
        return self.result

    def _approved_failed(self, live: PlanRecord, exc: ReconcilerError) -> None:
        if self.store.get_plan(live.id).status is not PlanStatus.APPROVED:
            return  # rejected while it was being applied: it stays rejected; nothing more of it ran
        self.store.transition(
            live.id,
            to=PlanStatus.FAILED,
            allowed_from=[PlanStatus.APPROVED],
            event="plan_failed",
            error=str(exc),
            resumable=isinstance(exc, ApplyInterruptedError | LockTimeoutError),
            extra={
                "statement": getattr(exc, "statement", None),
                "sqlstate": getattr(exc, "sqlstate", None),
                "completed_steps": sorted(self.store.get_plan(live.id).completed_steps),
            },
        )

    def _stale(self, live: PlanRecord, why: str) -> None:
        """An approved (or resumable failed) plan that no longer matches: marked stale, reported, not run."""
        approvals.mark_stale(self.store, live, why)
        self.result.stale_plan_id = live.id
        self.result.messages.append(f"{live.status.value} plan {live.id} is stale and was not run: {why}")

    def _audit_plan(self, plan: Plan) -> None:
        """Audit a computed plan (not again while the same plan is computed over and over)."""
        payload = {
            "desired_revision": plan.desired_revision,
            "fingerprint": plan.fingerprint,
            "statements_hash": plan.hash,
            "statements": len(plan.statements),
            "decisions": {d.value: sum(1 for s in plan.statements if s.decision is d) for d in Decision},
        }
        self.store.record("plan_computed", environment=plan.environment, payload=payload, unless_repeated=True)

    # -- executing ----------------------------------------------------------------------------------
    def _execute(self, items: Sequence[Item], *, plan_id: int | None = None, skip: Collection[int] = ()) -> list[str]:
        """Run ``items`` (but not the indexes in ``skip``) on the locked connection. Each committed unit is audited
        and, for a stored plan, recorded as progress with the fingerprint after it, so that a retry resumes."""
        steps = StepMap.build(items)
        run = _Run(self, steps, plan_id)
        try:
            with phase("apply"):
                committed = execute_steps(
                    self.conn,
                    steps.steps,
                    self.target.env,
                    skip=steps.skip(skip),
                    on_commit=run.committed,
                    on_lock_wait=run.waited,
                    before_attempt=run.still_approved,
                )
        except ReconcilerError as exc:
            run.failed(exc)
            raise
        done = steps.finished(committed)
        log.info("statements_applied", environment=self.target.name, count=len(done))
        return [d.sql for d in done]


@dataclass
class _Run:
    """The callbacks of one execution: progress, audit and the approval re-check before every attempt."""

    applier: Applier
    steps: StepMap
    plan_id: int | None

    def committed(self, batch: list[AppliedStatement]) -> None:
        a = self.applier
        a.result.executed.extend(batch)  # what ran (online-safe steps included)
        finished = self.steps.finished(batch)
        if not finished:
            return
        fingerprint = read_fingerprint(a.target, a.conn) if self.plan_id is not None else ""
        a.store.record_applied(
            environment=a.target.name,
            plan_id=self.plan_id,
            statements=[s.to_json() for s in finished],
            fingerprint_after=fingerprint,
        )

    def waited(self, wait: LockWait) -> None:
        a = self.applier
        a.store.record("lock_timeout", environment=a.target.name, plan_id=self.plan_id, payload=wait.to_json())
        a.result.lock_waits.append(wait)

    def still_approved(self) -> None:
        """The plan may have been rejected (e.g. while this apply waited for a lock): never run it then."""
        if self.plan_id is None:
            return
        status = self.applier.store.get_plan(self.plan_id).status
        if status is not PlanStatus.APPROVED:
            raise PlanError(
                f"applying plan {self.plan_id} to environment {self.applier.target.name!r}: stopped, "
                f"the plan is {status.value} now"
            )

    def failed(self, exc: ReconcilerError) -> None:
        a = self.applier
        payload: dict[str, Any] = {"error": str(exc)}
        if isinstance(exc, ApplyError | ApplyInterruptedError | LockTimeoutError):
            payload.update(statement=exc.statement, index=exc.index, sqlstate=exc.sqlstate)
        if isinstance(exc, LockTimeoutError):
            payload["attempts"] = exc.attempts
        a.store.record("apply_failed", environment=a.target.name, plan_id=self.plan_id, payload=payload)
        log.error("apply_failed", environment=a.target.name, error=str(exc))


def _with(plan: Plan, statements: Sequence[Statement]) -> Plan:
    return Plan(
        plan.environment,
        plan.desired_revision,
        tuple(statements),
        plan.fingerprint,
        plan.notes,
        plan.database,
        unmanaged_drift=plan.unmanaged_drift,
    )


def record_apply(
    store: Store,
    target: Target,
    result: ApplyResult | None,
    error: ReconcilerError | None,
    conn: Any = None,
    *,
    status: bool = True,
) -> None:
    """Record an apply's outcome: an ``apply_finished`` audit record (repeats are skipped) and, with ``status``, the
    environment's status through the one :func:`~reconciler.status.finish` (the daemon's pass records its own)."""
    now = datetime.now(UTC)
    if result is None:
        if not status:
            return
        failed = Observation(
            Outcome.TERMINAL if isinstance(error, TerminalError) else Outcome.ERROR,
            now,
            error=str(error),
            error_reason=error_reason(error, terminal=isinstance(error, TerminalError)) if error else None,
        )
        try:
            record_outcome(store, target.name, failed)
        except Exception as exc:  # never hide the error being reported behind a store failure
            log.error("status_not_recorded", environment=target.name, error=str(exc))
        return
    fingerprint = _fingerprint_after(target, result, conn)
    if status:
        record_outcome(store, target.name, _observed(result, now, fingerprint))
    payload = {
        "desired_revision": result.desired_revision,
        "converged": result.in_sync,
        "applied": len(result.applied),
        "queued_plan_id": result.queued_plan_id,
        "stale_plan_id": result.stale_plan_id,
        "fingerprint": fingerprint,
    }
    unless_repeated = not result.applied
    store.record(
        "apply_finished",
        environment=target.name,
        plan_id=result.applied_plan_id,
        payload=payload,
        unless_repeated=unless_repeated,
    )


def _fingerprint_after(target: Target, result: ApplyResult, conn: Any) -> str | None:
    if result.planned_fingerprint and not result.applied:
        return result.planned_fingerprint  # nothing ran since the plan read it, under the lock
    try:
        return read_fingerprint(target, conn)
    except ReconcilerError:
        return None


def _observed(result: ApplyResult, at: datetime, fingerprint: str | None) -> Observation:
    """What an apply found, as the status machinery reads a reconcile pass."""
    vet_error = f"vetting failed: {result.vet.describe()}" if result.vet and result.vet.failed else None
    return Observation(
        Outcome.SUCCESS if result.in_sync else Outcome.REQUEUE,
        at,
        revision=result.desired_revision,
        drifted=not result.in_sync,
        pending_statements=len(result.remaining),
        pending_plan_id=result.queued_plan_id,
        applied=len(result.applied),
        notes=tuple(result.messages) + ((vet_error,) if vet_error else ()),
        fingerprint=fingerprint if result.in_sync else None,
        plan_id=result.applied_plan_id or result.queued_plan_id,
        unmanaged_drift=unmanaged_summary(d.kind for d in result.unmanaged_drift),
    )
