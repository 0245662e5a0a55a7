"""The reconciler's library surface: plan, apply, approve and reject, for one environment at a time.

The CLI and the daemon are thin layers over :class:`Reconciler`. It owns the outside world: the embedded
PostgreSQL (if used), the scratch server and the state store.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from . import hazards, policy
from .apply import AppliedStatement, apply_statements
from .config import Config, EnvironmentConfig
from .db import connect, server_major
from .desired import load_desired
from .diff import diff
from .errors import ConfigError, PlanError, ReconcilerError
from .inspect import Inspection, filtered, inspect_database
from .model import Decision, DesiredState, Plan, PlanStatus, Statement
from .pgembedded import EmbeddedPostgres, find_bin_dir
from .scratch import ScratchServer
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

    def to_json(self) -> dict[str, Any]:
        return {
            "environment": self.environment,
            "desired_revision": self.desired_revision,
            "applied": self.applied,
            "queued_plan_id": self.queued_plan_id,
            "in_sync": self.in_sync,
            "stale_plan_id": self.stale_plan_id,
            "messages": self.messages,
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
    return {
        "sql": s.sql,
        "destructive": s.destructive,
        "hazards": [h.code for h in s.hazards],
        "hazard_details": [h.to_json() for h in s.hazards],
        "decision": s.decision.value,
    }


class Reconciler:
    """Plan and apply desired state to configured environments."""

    def __init__(self, config: Config, *, store: Store | None = None) -> None:
        self.config = config
        self._store = store
        self._embedded: EmbeddedPostgres | None = None
        self._scratch: ScratchServer | None = None

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
        dsn = self.env_config(name).dsn
        if dsn.startswith(EMBEDDED_SCHEME):
            dbname = dsn[len(EMBEDDED_SCHEME) :].strip("/") or name
            return self.embedded.dsn(dbname)
        return dsn

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
        with connect(dsn, what=f"inspecting environment {name!r}", connect_timeout=env.connect_timeout) as conn:
            major = server_major(conn)
        self.scratch.check_same_major(name, major)
        got = inspect_database(dsn, what=f"inspecting environment {name!r}", connect_timeout=env.connect_timeout)
        return filtered(got, env.schemas, env.exclude_schemas)

    def plan(self, name: str, desired: DesiredState | None = None) -> Plan:
        """What it takes to make environment ``name`` match the desired state, with hazards and decisions."""
        env = self.env_config(name)
        desired = desired or self.load_desired()
        want = filtered(self.desired_inspection(desired), env.schemas, env.exclude_schemas)
        current = self.inspect_env(name)
        sqls = diff(current, want, privileges=env.privileges)
        plan = Plan(name, desired.revision, tuple(self.classify(sqls, env)))
        log.info(
            "plan_computed",
            environment=name,
            revision=desired.short_revision,
            statements=len(plan.statements),
            destructive=plan.destructive,
        )
        return plan

    def classify(self, sqls: Sequence[str], env: EnvironmentConfig) -> list[Statement]:
        found = hazards.analyze(sqls)
        return [Statement(sql, hz, policy.decide(hz, env)) for sql, hz in zip(sqls, found, strict=True)]

    # -- approvals --------------------------------------------------------------------------------
    def approve(self, plan_id: int, by: str) -> PlanRecord:
        if not by.strip():
            raise PlanError("an approval needs the approver's name (--by)")
        rec = self.store.transition(
            plan_id,
            to=PlanStatus.APPROVED,
            allowed_from=[PlanStatus.PENDING],
            event="plan_approved",
            actor=by,
        )
        log.info("plan_approved", environment=rec.environment, plan_id=plan_id, by=by)
        return rec

    def reject(self, plan_id: int, by: str, reason: str) -> PlanRecord:
        if not by.strip():
            raise PlanError("a rejection needs the name of who rejects it (--by)")
        if not reason.strip():
            raise PlanError("a rejection needs a reason (--reason)")
        rec = self.store.transition(
            plan_id,
            to=PlanStatus.REJECTED,
            allowed_from=[PlanStatus.PENDING, PlanStatus.APPROVED],
            event="plan_rejected",
            actor=by,
            reason=reason,
        )
        log.info("plan_rejected", environment=rec.environment, plan_id=plan_id, by=by)
        return rec

    # -- applying ---------------------------------------------------------------------------------
    def apply(self, name: str) -> ApplyResult:
        """Apply what may run unattended, run an approved plan that still matches, queue the rest."""
        env = self.env_config(name)
        desired = self.load_desired()
        plan = self.plan(name, desired)
        result = ApplyResult(name, desired.revision)
        live = self.store.live_plan(name)

        if live is not None and live.status is PlanStatus.APPROVED:
            why = self._mismatch(live, plan)
            if why is None:
                return self._run_approved(name, env, desired, plan, live, result)
            self.store.transition(
                live.id,
                to=PlanStatus.STALE,
                allowed_from=[PlanStatus.APPROVED],
                event="plan_stale",
                reason=why,
            )
            result.stale_plan_id = live.id
            result.messages.append(f"approved plan {live.id} is stale and was not run: {why}")
            log.warning("plan_stale", environment=name, plan_id=live.id, reason=why)
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
            return result

        safe = [s.sql for s in plan.statements if s.decision is Decision.AUTO]
        rest = [s for s in plan.statements if s.decision is not Decision.AUTO]
        vet = vet_plan(
            self.scratch,
            self.env_dsn(name),
            env,
            self.desired_inspection(desired),
            safe,
            [s.sql for s in rest],
            self.pg_dump(),
        )
        result.vet = vet
        if not rest:
            if not vet.ok:
                result.messages.append(f"plan not applied: vetting on a scratch clone failed: {vet.error}")
                log.error("vet_failed", environment=name, error=vet.error, statement=vet.failed_statement)
                self.store.record(
                    "vet_failed",
                    environment=name,
                    payload={"error": vet.error, "statement": vet.failed_statement},
                )
                return result
            result.applied = self._apply(name, env, safe)
        elif vet.safe_stands_alone and safe:
            result.applied = self._apply(name, env, safe)
        elif safe:
            result.messages.append(
                "the unattended statements depend on statements that need approval; the whole plan waits"
            )
            rest = list(plan.statements)

        # Queue what is left, computed afresh from the environment as it now is.
        after = self.plan(name, desired) if result.applied else Plan(name, desired.revision, tuple(rest))
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

    def _mismatch(self, rec: PlanRecord, fresh: Plan) -> str | None:
        if rec.desired_revision != fresh.desired_revision:
            return (
                f"the desired state changed (plan was for revision {rec.desired_revision[:12]}, "
                f"now {fresh.desired_revision[:12]})"
            )
        if rec.statements_hash != fresh.hash:
            return "a fresh diff no longer yields exactly the approved statements"
        return None

    def _queue(
        self, name: str, desired: DesiredState, plan: Plan, live: PlanRecord | None, result: ApplyResult
    ) -> int | None:
        if live is not None:
            if live.statements_hash == plan.hash and live.desired_revision == desired.revision:
                return live.id
            self.store.transition(
                live.id,
                to=PlanStatus.SUPERSEDED,
                allowed_from=[PlanStatus.PENDING],
                event="plan_superseded",
                reason="a newer plan replaces it",
            )
        for old in self.store.list_plans(name, PlanStatus.REJECTED):
            if old.statements_hash == plan.hash and old.desired_revision == desired.revision:
                result.messages.append(f"the same plan was rejected before (plan {old.id}); not queued again")
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
        vet = vet_plan(
            self.scratch,
            self.env_dsn(name),
            env,
            self.desired_inspection(desired),
            [],
            list(plan.sqls),
            self.pg_dump(),
        )
        result.vet = vet
        if not vet.ok:
            err = f"vetting on a scratch clone failed: {vet.error}"
            self.store.transition(
                live.id,
                to=PlanStatus.FAILED,
                allowed_from=[PlanStatus.APPROVED],
                event="plan_failed",
                error=err,
            )
            result.messages.append(f"approved plan {live.id} not applied: {err}")
            return result
        try:
            result.applied = self._apply(name, env, list(plan.sqls))
        except ReconcilerError as exc:
            self.store.transition(
                live.id,
                to=PlanStatus.FAILED,
                allowed_from=[PlanStatus.APPROVED],
                event="plan_failed",
                error=str(exc),
            )
            raise
        self.store.transition(
            live.id,
            to=PlanStatus.APPLIED,
            allowed_from=[PlanStatus.APPROVED],
            event="plan_applied",
            actor=live.decided_by,
        )
        result.in_sync = self.plan(name, desired).in_sync
        return result

    def _apply(self, name: str, env: EnvironmentConfig, sqls: list[str]) -> list[str]:
        try:
            done: list[AppliedStatement] = apply_statements(
                self.env_dsn(name), sqls, env, what=f"applying to environment {name!r}"
            )
        except ReconcilerError as exc:
            self.store.record("apply_failed", environment=name, payload={"error": str(exc)})
            log.error("apply_failed", environment=name, error=str(exc))
            raise
        for d in done:
            self.store.record(
                "statement_applied",
                environment=name,
                payload={"sql": d.sql, "duration_seconds": round(d.duration.total_seconds(), 6)},
            )
        log.info("statements_applied", environment=name, count=len(done))
        return [d.sql for d in done]


def require_environment(config: Config, name: str) -> None:
    if name not in config.environments:
        raise ConfigError(f"unknown environment {name!r}", path=config.source)
