"""The reconciler's library surface: plan, apply, approve and reject, for one environment at a time.

The CLI and the daemon are thin layers over :class:`Reconciler`. It owns the outside world: the embedded
PostgreSQL (if used), the scratch server and the state store.
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import structlog

from . import hazards, policy
from .apply import AppliedStatement, LockWait, execute_steps
from .config import Config, EnvironmentConfig
from .db import connect, database_errors, server_major, with_session_timeouts
from .desired import load_desired
from .diff import diff
from .errors import (
    ApplyError,
    ApplyInterruptedError,
    LockTimeoutError,
    PlanError,
    ReconcilerError,
    StalePlanError,
    UnreachableError,
)
from .inspect import Inspection, filtered, inspect_database, schema_fingerprint
from .locks import environment_lock
from .model import Decision, DesiredState, Plan, PlanStatus, Statement, statements_hash
from .obs.phases import phase
from .pgembedded import EmbeddedPostgres, find_bin_dir
from .scratch import ScratchServer
from .stats import invalid_indexes, read_table_stats, without_indexes
from .steps import Item, StepMap
from .store import PlanRecord, Store, open_store
from .vet import VetResult, vet_plan

log = structlog.get_logger("reconciler")

EMBEDDED_SCHEME = "embedded:"


@dataclass
class ApplyResult:
    environment: str
    desired_revision: str
    applied: list[str] = field(default_factory=list)
    queued_plan_id: int | None = None
    in_sync: bool = False
    messages: list[str] = field(default_factory=list)
    stale_plan_id: int | None = None
    vet: VetResult | None = None
    # Issue 4: the approved plan that ran (if any), every committed statement with its duration, attempts and
    # lock waits, and every attempt that gave up waiting for a lock.
    applied_plan_id: int | None = None
    executed: list[AppliedStatement] = field(default_factory=list)
    lock_waits: list[LockWait] = field(default_factory=list)
    # The classified statements that were applied, and what a plan of the environment still holds afterwards
    # (None: not known without planning again), so callers need not classify or plan a second time.
    applied_statements: list[Statement] = field(default_factory=list)
    remaining: tuple[Statement, ...] | None = None
    # The environment's schema fingerprint when this apply planned (under the apply lock).
    planned_fingerprint: str = ""

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
        }


def plan_to_json(plan: Plan) -> dict[str, Any]:
    return {
        "environment": plan.environment,
        "desired_revision": plan.desired_revision,
        "in_sync": plan.in_sync,
        "statements_hash": plan.hash,
        "statements": [statement_to_json(s) for s in plan.statements],
    }


def statement_to_json(s: Statement) -> dict[str, Any]:
    hazards_json = [h.to_json() for h in s.hazards]
    return {
        "sql": s.sql,
        "destructive": s.destructive,
        "hazards": hazards_json,
        "hazard_codes": [h.code for h in s.hazards],
        "hazard_details": hazards_json,  # deprecated alias of "hazards"
        "decision": s.decision.value,
        "tables": {name: st.to_json() for name, st in s.tables.items()},
        "steps": [e.to_json() for e in s.execution()],
    }


class Reconciler:
    """Plan and apply desired state to configured environments."""

    def __init__(self, config: Config, *, store: Store | None = None) -> None:
        self.config = config
        self._store = store
        self._embedded: EmbeddedPostgres | None = None
        self._scratch: ScratchServer | None = None
        # The connection holding an environment's apply lock while apply() runs; statements run on it.
        self._lock_conns: dict[str, Any] = {}
        self._results: dict[str, ApplyResult] = {}

    # -- resources --------------------------------------------------------------------------------
    def __enter__(self) -> Reconciler:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._scratch is not None:
            self._scratch.close()
            self._scratch = None
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
        if self._store is not None:
            self._store.close()
            self._store = None

    @property
    def store(self) -> Store:
        if self._store is None:
            self._store = open_store(self.config.state)
        return self._store

    @property
    def embedded(self) -> EmbeddedPostgres:
        if self._embedded is None:
            self._embedded = EmbeddedPostgres(self.config.embedded.data_dir, self.config.embedded.bin_dir).start()
        return self._embedded

    @property
    def scratch(self) -> ScratchServer:
        if self._scratch is None:
            admin = self.config.scratch or self.embedded.dsn("postgres")
            self._scratch = ScratchServer(admin)
        return self._scratch

    def env_config(self, name: str) -> EnvironmentConfig:
        return self.config.environment(name)

    def env_dsn(self, name: str) -> str:
        """The environment's DSN, with its ``lock_timeout`` and ``statement_timeout`` as session defaults, so
        that every connection to it (inspection, fingerprint, figures, the apply lock) is bounded."""
        env = self.env_config(name)
        dsn = env.dsn
        if dsn.startswith(EMBEDDED_SCHEME):
            dbname = dsn[len(EMBEDDED_SCHEME) :].strip("/") or name
            dsn = self.embedded.dsn(dbname)
        return with_session_timeouts(dsn, lock_timeout=env.lock_timeout, statement_timeout=env.statement_timeout)

    def pg_dump(self) -> Path:
        return find_bin_dir(self.config.embedded.bin_dir) / "pg_dump"

    # -- planning ---------------------------------------------------------------------------------
    def load_desired(self) -> DesiredState:
        return load_desired(self.config.desired_state)

    def desired_inspection(self, desired: DesiredState) -> Inspection:
        return self.scratch.build_desired(desired).inspection

    def inspect_env(self, name: str) -> Inspection:
        env = self.env_config(name)
        dsn = self.env_dsn(name)
        what = f"inspecting environment {name!r}"
        with database_errors(what), connect(dsn, what=what, connect_timeout=env.connect_timeout) as conn:
            major = server_major(conn)
            invalid = invalid_indexes(conn)  # left by failed concurrent builds: not indexes, to be built again
        self.scratch.check_same_major(name, major)
        got = inspect_database(dsn, what=f"inspecting environment {name!r}", connect_timeout=env.connect_timeout)
        return filtered(without_indexes(got, invalid), env.schemas, env.exclude_schemas)

    def plan(self, name: str, desired: DesiredState | None = None) -> Plan:
        """What it takes to make environment ``name`` match the desired state, with hazards and decisions."""
        env = self.env_config(name)
        desired = desired or self.load_desired()
        with phase("inspect"):
            want = filtered(self.desired_inspection(desired), env.schemas, env.exclude_schemas)
            fingerprint = self.env_fingerprint(name)  # before inspecting: a change in between makes it stale
            current = self.inspect_env(name)
        with phase("diff"):
            sqls = diff(current, want, privileges=env.privileges)
        with phase("classify"):
            stats = self.table_stats(name, sqls)
            statements = tuple(self.classify(sqls, env, stats))
        plan = Plan(name, desired.revision, statements, fingerprint=fingerprint)
        log.info(
            "plan_computed",
            environment=name,
            revision=desired.short_revision,
            statements=len(plan.statements),
            destructive=plan.destructive,
        )
        return plan

    def env_fingerprint(self, name: str, conn: Any = None) -> str:
        """The fingerprint of environment ``name``'s managed schemas (one catalog query)."""
        env = self.env_config(name)
        return schema_fingerprint(
            conn if conn is not None else self.env_dsn(name),
            env.schemas,
            env.exclude_schemas,
            privileges=env.privileges,
            connect_timeout=env.connect_timeout,
            what=f"reading the schema fingerprint of environment {name!r}",
        )

    def table_stats(self, name: str, sqls: Sequence[str]) -> dict[str, hazards.TableStats]:
        """Figures of the tables that ``sqls`` touch in environment ``name`` (one catalog query)."""
        if not sqls:
            return {}
        env = self.env_config(name)
        return read_table_stats(
            self.env_dsn(name),
            hazards.affected_relations(hazards.parse_plan(sqls)),
            what=f"reading table figures of environment {name!r}",
            connect_timeout=env.connect_timeout,
        )

    def classify(
        self, sqls: Sequence[str], env: EnvironmentConfig, table_stats: dict[str, hazards.TableStats] | None = None
    ) -> list[Statement]:
        """Hazards (data-aware when ``table_stats`` are given), online-safe steps and the policy's decision."""
        found = hazards.examine(
            sqls,
            table_stats,
            timeouts=hazards.StepTimeouts.for_env(env),
            large=hazards.LargeTable(env.large_table.bytes, env.large_table.rows),
            online_rewrites=env.online_rewrites,
        )
        return [
            Statement(e.sql, e.hazards, policy.decide(e.hazards, env), steps=e.steps, tables=e.tables) for e in found
        ]

    # -- approvals --------------------------------------------------------------------------------
    def approve(self, plan_id: int, by: str) -> PlanRecord:
        """Record ``by``'s approval of a pending plan. It becomes approved once the environment's
        ``approvals_required`` different approvers approved it, and only while the desired revision and the
        environment's schema fingerprint are the ones the plan was computed on (else the plan is marked stale and
        the approval refused)."""
        if not by.strip():
            raise PlanError("an approval needs the approver's name (--by)")
        rec = self.store.get_plan(plan_id)
        env = self._check_approver(rec, by, "approve")
        denied = policy.denied_in_record(rec.statements)
        if denied:
            raise PlanError(
                f"approving plan {plan_id}: refused, environment {rec.environment!r}'s policy denies "
                f"{len(denied)} of its statements even with approval: {'; '.join(denied)}"
            )
        if rec.status is PlanStatus.PENDING:
            why = None
            revision = self.load_desired().revision
            if revision != rec.desired_revision:
                why = self._revision_changed(rec.desired_revision, revision)
            elif rec.fingerprint and (now := self.env_fingerprint(rec.environment)) != rec.fingerprint:
                why = self._fingerprint_changed(rec.fingerprint, now)
            if why is not None:
                self.store.transition(
                    plan_id, to=PlanStatus.STALE, allowed_from=[PlanStatus.PENDING], event="plan_stale", reason=why
                )
                log.warning("plan_stale", environment=rec.environment, plan_id=plan_id, reason=why)
                raise StalePlanError(
                    f"approving plan {plan_id}: refused, the plan is stale: {why}; "
                    f"`reconciler apply {rec.environment}` computes a new plan"
                )
        rec = self.store.approve(plan_id, by, required=env.approvals_required)
        log.info(
            "plan_approved" if rec.status is PlanStatus.APPROVED else "approval_recorded",
            environment=rec.environment,
            plan_id=plan_id,
            by=by,
            approvals=len(rec.approvers),
            required=env.approvals_required,
        )
        return rec

    def reject(self, plan_id: int, by: str, reason: str) -> PlanRecord:
        if not by.strip():
            raise PlanError("a rejection needs the name of who rejects it (--by)")
        if not reason.strip():
            raise PlanError("a rejection needs a reason (--reason)")
        current = self.store.get_plan(plan_id)
        env = self._check_approver(current, by, "reject")
        # While an apply holds the environment's lock it may be running this very plan: refuse (busy) rather than
        # record a rejection that comes too late. An environment that cannot be reached is not being applied to
        # from here; the applier also re-reads the plan's status before every attempt.
        try:
            with environment_lock(
                self.env_dsn(current.environment), environment=current.environment, connect_timeout=env.connect_timeout
            ):
                rec = self.store.reject(plan_id, by, reason)
        except UnreachableError:
            rec = self.store.reject(plan_id, by, reason)
        log.info("plan_rejected", environment=rec.environment, plan_id=plan_id, by=by)
        return rec

    def _check_approver(self, rec: PlanRecord, by: str, what: str) -> EnvironmentConfig:
        env = self.env_config(rec.environment)
        if env.approvers and by not in env.approvers:
            raise PlanError(
                f"{what} plan {rec.id}: {by!r} is not an approver of environment {rec.environment!r} "
                f"(approvers: {', '.join(env.approvers)})"
            )
        return env

    @staticmethod
    def _revision_changed(then: str, now: str) -> str:
        return f"the desired state changed (plan was for revision {then[:12]}, now {now[:12]})"

    @staticmethod
    def _fingerprint_changed(then: str, now: str) -> str:
        return f"the environment's schema changed since the plan was computed (fingerprint {then[:12]}, now {now[:12]})"

    # -- applying ---------------------------------------------------------------------------------
    def apply(self, name: str, *, force: bool = False) -> ApplyResult:
        """Apply what may run unattended, run an approved plan that still matches, queue the rest.

        Refused (PlanError, nothing done) while the environment is suspended or outside its maintenance windows,
        unless ``force``. Holds the environment's apply lock throughout (a second applier gets BusyError and
        changes nothing); afterwards records the environment's status (attempted and applied revision, converged).
        """
        env = self.env_config(name)
        if not force:
            from .reconcile.windows import window_open  # the windows module imports config only

            if env.suspend:
                raise PlanError(
                    f"applying to environment {name!r}: refused, the environment is suspended (suspend: true); "
                    "nothing was applied (--force applies anyway)"
                )
            if not window_open(env.maintenance_windows, datetime.now(UTC)):
                raise PlanError(
                    f"applying to environment {name!r}: refused, outside its maintenance windows; nothing was "
                    "applied (--force applies anyway)"
                )
        with environment_lock(self.env_dsn(name), environment=name, connect_timeout=env.connect_timeout) as conn:
            self._lock_conns[name] = conn
            try:
                result = self._apply_locked(name)
            except ReconcilerError as exc:
                self._record_outcome(name, None, exc)
                raise
            finally:
                self._lock_conns.pop(name, None)
                self._results.pop(name, None)
            self._record_outcome(name, result, None, conn)
        return result

    def _record_outcome(
        self, name: str, result: ApplyResult | None, error: ReconcilerError | None, conn: Any = None
    ) -> None:
        """Write the environment's status row and an ``apply_finished`` audit record (repeats are skipped)."""
        if result is None:
            try:
                revision: str | None = self.load_desired().revision
            except ReconcilerError:
                revision = None
            try:
                self.store.set_status(name, last_attempted_revision=revision, converged=False, last_error=str(error))
            except Exception as exc:  # never hide the error being reported behind a store failure
                log.error("status_not_recorded", environment=name, error=str(exc))
            return
        fields: dict[str, Any] = {
            "last_attempted_revision": result.desired_revision,
            "converged": result.in_sync,
            # A plan that failed vetting: which statement, and PostgreSQL's error.
            "last_error": f"vetting failed: {result.vet.describe()}" if result.vet and result.vet.failed else None,
            "last_plan_id": result.applied_plan_id or result.queued_plan_id,
        }
        if result.in_sync:
            fields["last_applied_revision"] = result.desired_revision
        if result.applied:
            fields["last_apply_at"] = datetime.now(UTC)
        if result.planned_fingerprint and not result.applied:
            fields["fingerprint"] = result.planned_fingerprint  # nothing ran since the plan read it, under the lock
        else:
            with contextlib.suppress(ReconcilerError):
                fields["fingerprint"] = self.env_fingerprint(name, conn)
        self.store.set_status(name, **fields)
        self.store.record(
            "apply_finished",
            environment=name,
            plan_id=result.applied_plan_id,
            payload={
                "desired_revision": result.desired_revision,
                "converged": result.in_sync,
                "applied": len(result.applied),
                "queued_plan_id": result.queued_plan_id,
                "stale_plan_id": result.stale_plan_id,
                "fingerprint": fields.get("fingerprint"),
            },
            unless_repeated=not result.applied,
        )

    def _apply_locked(self, name: str) -> ApplyResult:
        env = self.env_config(name)
        desired = self.load_desired()
        plan = self.plan(name, desired)
        result = ApplyResult(name, desired.revision, planned_fingerprint=plan.fingerprint)
        self._results[name] = result
        self._audit_plan(plan)
        # A plan that failed on a transient error (lost connection, lock timeouts) resumes like an approved one.
        live = self.store.live_plan(name) or self.store.resumable_plan(name)

        if live is not None and live.status in (PlanStatus.APPROVED, PlanStatus.FAILED):
            why = self._mismatch(live, plan)
            if why is None:
                return self._run_approved(name, env, desired, plan, live, result)
            self._mark_stale(name, live, why, result)
            live = None

        if plan.in_sync:
            if live is not None:
                self.store.transition(
                    live.id,
                    to=PlanStatus.SUPERSEDED,
                    allowed_from=[PlanStatus.PENDING],
                    event="plan_superseded",
                    reason="the environment is already in sync",
                )
            result.in_sync = True
            result.remaining = ()
            return result

        safe = [s for s in plan.statements if s.decision is Decision.AUTO]
        rest = [s for s in plan.statements if s.decision is not Decision.AUTO]
        if not safe and live is not None and self._same_plan(live, plan):
            # Nothing may run unattended and the queued plan is exactly this one (same revision, statements and
            # schema fingerprint): it was vetted when it was queued, and is vetted again before it runs.
            result.queued_plan_id = live.id
            result.remaining = plan.statements
            return result
        with phase("vet"):
            vet = vet_plan(
                self.scratch,
                self.env_dsn(name),
                env,
                self.desired_inspection(desired),
                safe,
                rest,
                self.pg_dump(),
                whole=plan.statements,
            )
        result.vet = vet
        if vet.failed:
            # The plan cannot work as it is: nothing of it runs, not even the unattended part.
            return self._vet_failed(name, desired, plan, live, result, vet)
        if safe and (not rest or vet.safe_stands_alone):
            result.applied = self._apply(name, env, safe)
            result.applied_statements = safe
        elif safe:
            result.messages.append(
                "the unattended statements depend on statements that need approval; the whole plan waits"
            )
            rest = list(plan.statements)

        # Queue what is left, computed afresh from the environment as it now is.
        after = (
            self.plan(name, desired)
            if result.applied
            else Plan(name, desired.revision, tuple(rest), fingerprint=plan.fingerprint)
        )
        result.remaining = after.statements
        if after.in_sync:
            result.in_sync = True
            if live is not None:
                self.store.transition(
                    live.id,
                    to=PlanStatus.SUPERSEDED,
                    allowed_from=[PlanStatus.PENDING],
                    event="plan_superseded",
                    reason="the environment is in sync",
                )
            return result
        result.queued_plan_id = self._queue(name, desired, after, live, result)
        return result

    @staticmethod
    def _same_plan(rec: PlanRecord, plan: Plan) -> bool:
        return (
            rec.status is PlanStatus.PENDING
            and rec.desired_revision == plan.desired_revision
            and rec.statements_hash == plan.hash
            and rec.fingerprint == plan.fingerprint
        )

    def _vet_failed(
        self,
        name: str,
        desired: DesiredState,
        plan: Plan,
        live: PlanRecord | None,
        result: ApplyResult,
        vet: VetResult,
    ) -> ApplyResult:
        """Nothing of a plan that fails vetting is applied; the failure is audited, and the whole plan waits for a
        human as a pending plan whose ``error`` names the statement and the PostgreSQL error."""
        err = f"vetting on a scratch clone failed: {vet.describe()}"
        result.messages.append(f"plan not applied: {err}")
        log.error("vet_failed", environment=name, error=vet.error, statement=vet.failed_statement, phase=vet.phase)
        self.store.record(
            "vet_failed",
            environment=name,
            payload={
                "error": vet.error,
                "statement": vet.failed_statement,
                "step": vet.failed_step,
                "phase": vet.phase,
                "residue": list(vet.residue),
                "statements_hash": plan.hash,
            },
            unless_repeated=True,
        )
        result.remaining = plan.statements
        pid = self._queue(name, desired, plan, live, result)
        result.queued_plan_id = pid
        if pid is not None and self.store.get_plan(pid).error != err:
            self.store.transition(
                pid, to=PlanStatus.PENDING, allowed_from=[PlanStatus.PENDING], event="plan_vet_failed", error=err
            )
        return result

    def _mismatch(self, rec: PlanRecord, fresh: Plan) -> str | None:
        if rec.desired_revision != fresh.desired_revision:
            return self._revision_changed(rec.desired_revision, fresh.desired_revision)
        done = set(rec.completed_steps)
        remaining = [sql for i, sql in enumerate(rec.sqls) if i not in done]
        if (rec.statements_hash if not done else statements_hash(remaining)) != fresh.hash:
            return "a fresh diff no longer yields exactly the approved statements" + (
                f" (after its {len(done)} completed step(s))" if done else ""
            )
        expected = rec.fingerprint
        if done:
            expected = max(self.store.progress_of(rec.id), key=lambda p: p.step_index).fingerprint_after
        if expected and fresh.fingerprint and expected != fresh.fingerprint:
            return self._fingerprint_changed(expected, fresh.fingerprint)
        if rec.environment != fresh.environment:
            return f"the plan is for environment {rec.environment!r}, not {fresh.environment!r}"
        env = self.env_config(rec.environment)
        valid = [a for a in rec.approvers if not env.approvers or a in env.approvers]
        if len(set(valid)) < env.approvals_required:
            return (
                f"it has {len(set(valid))} approval(s) by current approvers; environment {rec.environment!r} "
                f"requires {env.approvals_required}"
            )
        return None

    def _audit_plan(self, plan: Plan) -> None:
        """Audit a computed plan (not again while the same plan is computed over and over)."""
        self.store.record(
            "plan_computed",
            environment=plan.environment,
            payload={
                "desired_revision": plan.desired_revision,
                "fingerprint": plan.fingerprint,
                "statements_hash": plan.hash,
                "statements": len(plan.statements),
                "decisions": {d.value: sum(1 for s in plan.statements if s.decision is d) for d in Decision},
            },
            unless_repeated=True,
        )

    def _queue(
        self, name: str, desired: DesiredState, plan: Plan, live: PlanRecord | None, result: ApplyResult
    ) -> int | None:
        if live is not None:
            if (
                live.statements_hash == plan.hash
                and live.desired_revision == desired.revision
                and live.fingerprint == plan.fingerprint
            ):
                return live.id
            self.store.transition(
                live.id,
                to=PlanStatus.SUPERSEDED,
                allowed_from=[PlanStatus.PENDING],
                event="plan_superseded",
                reason=(
                    f"a plan for newer desired revision {desired.short_revision} replaces it"
                    if live.desired_revision != desired.revision
                    else "a newer plan replaces it: the environment changed"
                ),
            )
        old = self.store.rejected_plan(name, desired.revision, plan.fingerprint)
        if old is not None:
            result.messages.append(
                f"the same plan was rejected before (plan {old.id}, for this desired revision and this schema of "
                "the environment); not queued again"
            )
            return None
        rec = self.store.create_plan(
            environment=name,
            desired_revision=desired.revision,
            statements_hash=plan.hash,
            fingerprint=plan.fingerprint,
            statements=[statement_to_json(s) for s in plan.statements],
        )
        log.info("plan_queued", environment=name, plan_id=rec.id, statements=len(plan.statements))
        return rec.id

    def _run_approved(
        self,
        name: str,
        env: EnvironmentConfig,
        desired: DesiredState,
        plan: Plan,
        live: PlanRecord,
        result: ApplyResult,
    ) -> ApplyResult:
        with phase("vet"):
            vet = vet_plan(
                self.scratch,
                self.env_dsn(name),
                env,
                self.desired_inspection(desired),
                [],
                plan.statements,
                self.pg_dump(),
            )
        result.vet = vet
        refused = policy.denial_reason(plan.statements, env)
        if not vet.ok or refused:
            err = refused or f"vetting on a scratch clone failed: {vet.describe()}"
            self.store.transition(
                live.id,
                to=PlanStatus.FAILED,
                allowed_from=[PlanStatus.APPROVED, PlanStatus.FAILED],
                event="plan_failed",
                error=err,
                resumable=False,
            )
            result.messages.append(f"approved plan {live.id} not applied: {err}")
            return result
        bound = self._bind_check(name, plan, live, result)
        if bound is None:
            return result
        live = bound
        # Steps of the stored plan; those still to run take their transactional flag from the fresh plan.
        done = set(live.completed_steps)
        todo = [i for i in range(len(live.statements)) if i not in done]
        fresh = dict(zip(todo, plan.statements, strict=True))
        steps: list[Item] = [fresh.get(i, Statement(sql)) for i, sql in enumerate(live.sqls)]
        result.applied_plan_id = live.id
        try:
            result.applied = self._apply(name, env, steps, plan_id=live.id, skip=done)
        except ReconcilerError as exc:
            if self.store.get_plan(live.id).status is not PlanStatus.APPROVED:
                raise  # rejected while it was being applied: it stays rejected; nothing more of it ran
            resumable = isinstance(exc, ApplyInterruptedError | LockTimeoutError)
            self.store.transition(
                live.id,
                to=PlanStatus.FAILED,
                allowed_from=[PlanStatus.APPROVED],
                event="plan_failed",
                error=str(exc),
                resumable=resumable,
                extra={
                    "statement": getattr(exc, "statement", None),
                    "sqlstate": getattr(exc, "sqlstate", None),
                    "completed_steps": sorted(self.store.get_plan(live.id).completed_steps),
                },
            )
            raise
        self.store.transition(
            live.id,
            to=PlanStatus.APPLIED,
            allowed_from=[PlanStatus.APPROVED],
            event="plan_applied",
            actor=live.decided_by,
        )
        result.applied_statements = list(fresh.values())
        result.remaining = self.plan(name, desired).statements
        result.in_sync = not result.remaining
        return result

    def _mark_stale(self, name: str, live: PlanRecord, why: str, result: ApplyResult) -> None:
        """An approved (or resumable failed) plan that no longer matches: marked stale, reported, not run."""
        self.store.transition(
            live.id,
            to=PlanStatus.STALE,
            allowed_from=[PlanStatus.APPROVED, PlanStatus.FAILED],
            event="plan_stale",
            reason=why,
        )
        result.stale_plan_id = live.id
        result.messages.append(f"{live.status.value} plan {live.id} is stale and was not run: {why}")
        log.warning("plan_stale", environment=name, plan_id=live.id, reason=why)

    def _bind_check(self, name: str, plan: Plan, live: PlanRecord, result: ApplyResult) -> PlanRecord | None:
        """Just before running an approved (or resumed) plan, on the connection that holds the apply lock: the
        environment's schema must still have the fingerprint the plan is bound to. Returns the plan, now
        approved, or None (marked stale) if not."""
        conn = self._lock_conns.get(name)
        now = self.env_fingerprint(name, conn)
        if plan.fingerprint and now != plan.fingerprint:
            why = self._fingerprint_changed(plan.fingerprint, now) + " while the plan was being vetted"
            self._mark_stale(name, live, why, result)
            return None
        if live.status is PlanStatus.FAILED:
            live = self.store.transition(
                live.id,
                to=PlanStatus.APPROVED,
                allowed_from=[PlanStatus.FAILED],
                event="plan_resumed",
                reason=f"resuming after {len(live.completed_steps)} completed step(s); it failed with: {live.error}",
            )
            result.messages.append(f"resuming plan {live.id} after {len(live.completed_steps)} completed step(s)")
            log.info("plan_resumed", environment=name, plan_id=live.id, completed=len(live.completed_steps))
        return live

    def _apply(
        self,
        name: str,
        env: EnvironmentConfig,
        items: Sequence[Item],
        *,
        plan_id: int | None = None,
        skip: Collection[int] = (),
    ) -> list[str]:
        """Run ``items`` (but not the indexes in ``skip``) on the connection holding the apply lock. Each committed
        unit is audited (``statement_applied`` with duration, attempts and waits) and, for a stored plan, recorded
        as progress with the fingerprint after it, so that a retry resumes after it."""
        conn = self._lock_conns.get(name)
        if conn is None:
            raise PlanError(f"applying to environment {name!r}: the environment's apply lock is not held")
        result = self._results.get(name)
        # Statements run as their steps (online-safe rewrites); progress and audit count statements.
        steps = StepMap.build(items)

        def committed(step_batch: list[AppliedStatement]) -> None:
            if result is not None:
                result.executed.extend(step_batch)  # what ran (online-safe steps included)
            batch = steps.finished(step_batch)
            if not batch:
                return
            fingerprint = self.env_fingerprint(name, conn) if plan_id is not None else ""
            self.store.record_applied(
                environment=name,
                plan_id=plan_id,
                statements=[a.to_json() for a in batch],
                fingerprint_after=fingerprint,
            )

        def waited(wait: LockWait) -> None:
            self.store.record("lock_timeout", environment=name, plan_id=plan_id, payload=wait.to_json())
            if result is not None:
                result.lock_waits.append(wait)

        def still_approved() -> None:
            # The plan may have been rejected (e.g. while this apply waited for a lock): never run it then.
            if plan_id is not None and (status := self.store.get_plan(plan_id).status) is not PlanStatus.APPROVED:
                raise PlanError(
                    f"applying plan {plan_id} to environment {name!r}: stopped, the plan is {status.value} now"
                )

        try:
            with phase("apply"):
                done = steps.finished(
                    execute_steps(
                        conn,
                        steps.steps,
                        env,
                        skip=steps.skip(skip),
                        on_commit=committed,
                        on_lock_wait=waited,
                        before_attempt=still_approved,
                    )
                )
        except ReconcilerError as exc:
            payload: dict[str, Any] = {"error": str(exc)}
            if isinstance(exc, ApplyError | ApplyInterruptedError | LockTimeoutError):
                payload.update(statement=exc.statement, index=exc.index, sqlstate=exc.sqlstate)
            if isinstance(exc, LockTimeoutError):
                payload["attempts"] = exc.attempts
            self.store.record("apply_failed", environment=name, plan_id=plan_id, payload=payload)
            log.error("apply_failed", environment=name, error=str(exc))
            raise
        log.info("statements_applied", environment=name, count=len(done))
        return [d.sql for d in done]
