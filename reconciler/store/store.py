"""The state store: plans and their lifecycle, approvals, plan progress, environment status, and a hash-chained
append-only audit trail. The same SQLAlchemy Core schema runs on SQLite (default) and PostgreSQL (shared by
several reconciler replicas).

Concurrency: every write runs in one transaction that first takes the lock it needs (on SQLite ``BEGIN
IMMEDIATE``, one writer at a time; on PostgreSQL row locks and a transaction-level advisory lock that keeps the
audit chain linear), so two processes never fork the chain, approve past the required count, or queue two live
plans for one environment (a partial unique index backs the last one up on both backends).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import sqlalchemy as sa
import structlog
from sqlalchemy import event as sa_event
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.pool import NullPool

from .. import signing
from ..db import redact
from ..errors import PlanError, StoreError
from ..model import LIVE_PLAN_STATUSES, Plan, PlanKey, PlanStatus, Statement, fields_json, steps_digest
from ..status import EnvironmentStatus, initial_status
from .schema import (
    LIVE_STATUSES,
    STORE_VERSION,
    approvals,
    audit,
    audit_by_environment,
    environment_status,
    live_plan_per_environment,
    meta,
    metadata,
    plans,
    progress,
    statuses,
)

log = structlog.get_logger("reconciler")

GENESIS = "0" * 64
_AUDIT_LOCK = 7294001  # pg_advisory_xact_lock key: one audit writer at a time on a PostgreSQL store
_MIGRATE_LOCK = 7294002  # pg_advisory_xact_lock key: one store upgrade at a time
_QUEUE_LOCK = 7294003  # pg_advisory_xact_lock(key, hashtext(environment)): one queue writer per environment


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is None:
        return None
    # SQLite drops the zone (everything is stored in UTC); PostgreSQL returns the session's zone.
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


def sql_hash(sql: str) -> str:
    return hashlib.sha256(sql.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class ApprovalRecord:
    """One approval or rejection of a plan: who, when, and what it was bound to.

    ``authenticated``: the approver proved the identity with a token (else the name was only claimed).
    ``verified``: its signature checks out against the plan as stored now (a row written behind the store's back,
    or a plan row changed after it was approved, does not)."""

    plan_id: int
    actor: str
    decision: str  # approve | reject
    at: datetime
    reason: str | None = None
    authenticated: bool = False
    verified: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "by": self.actor,
            "decision": self.decision,
            "at": _iso(self.at),
            "reason": self.reason,
            "authenticated": self.authenticated,
            "verified": self.verified,
        }


@dataclass(frozen=True)
class ProgressRecord:
    """One committed step of a plan."""

    plan_id: int
    step_index: int
    statement_hash: str
    fingerprint_after: str
    attempts: int
    completed_at: datetime


@dataclass(frozen=True)
class PlanRecord:
    id: int
    environment: str
    status: PlanStatus
    desired_revision: str
    statements_hash: str
    fingerprint: str
    statements: tuple[Statement, ...]
    created_at: datetime
    updated_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    applied_at: datetime | None
    error: str | None
    resumable: bool = False
    approvals: tuple[ApprovalRecord, ...] = ()
    completed_steps: tuple[int, ...] = ()
    database: str = ""

    @property
    def sqls(self) -> list[str]:
        return [s.sql for s in self.statements]

    @property
    def approvers(self) -> tuple[str, ...]:
        return tuple(a.actor for a in self.approvals if a.decision == "approve")

    @property
    def key(self) -> PlanKey:
        return PlanKey(
            self.desired_revision, self.statements_hash, self.fingerprint, self.database, steps_digest(self.statements)
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "environment": self.environment,
            "status": self.status.value,
            "desired_revision": self.desired_revision,
            "statements_hash": self.statements_hash,
            "fingerprint": self.fingerprint,
            "database": self.database,
            "statements": [s.to_json() for s in self.statements],
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "decided_by": self.decided_by,
            "decided_at": _iso(self.decided_at),
            "reason": self.reason,
            "applied_at": _iso(self.applied_at),
            "error": self.error,
            "resumable": self.resumable,
            "approvals": [a.to_json() for a in self.approvals],
            "completed_steps": list(self.completed_steps),
        }


@dataclass(frozen=True)
class Queued:
    """What :meth:`Store.queue_plan` did: the live plan now (new or the same one kept), or why none was queued."""

    plan_id: int | None
    created: bool = False
    rejected_id: int | None = None  # the same plan was rejected before: not queued again
    approved_id: int | None = None  # an approved plan waits to run: nothing queued beside it


@dataclass(frozen=True)
class AuditRecord:
    id: int
    at: datetime
    environment: str | None
    event: str
    plan_id: int | None
    actor: str | None
    payload: dict[str, Any]
    prev_hash: str
    hash: str

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": _iso(self.at),
            "environment": self.environment,
            "event": self.event,
            "plan_id": self.plan_id,
            "actor": self.actor,
            "payload": self.payload,
            "prev_hash": self.prev_hash,
            "hash": self.hash,
        }


@dataclass(frozen=True)
class AuditVerification:
    """The outcome of checking the audit chain; ``head`` is the hash of its last record (kept elsewhere, it shows
    a chain later rewritten or truncated), ``head_id`` that record's id."""

    ok: bool
    records: int
    first_broken_id: int | None
    message: str
    head: str | None = None
    head_id: int | None = None

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


@dataclass(frozen=True)
class AuditHead:
    """The last record of the audit chain (its id and keyed hash) and how many records the chain holds."""

    records: int
    head_id: int | None
    head: str | None


@dataclass(frozen=True)
class ApplyStatusRow:
    """A version-2 status row (``reconciler_environment_status``): read only to seed the persisted
    :class:`reconciler.status.EnvironmentStatus` when a store is upgraded."""

    environment: str
    last_attempted_revision: str | None
    last_applied_revision: str | None
    converged: bool | None
    fingerprint: str | None
    last_plan_id: int | None
    last_apply_at: datetime | None
    last_error: str | None
    updated_at: datetime

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


class AuditFields(NamedTuple):
    """What the hash of one audit record covers: every field and the previous record's hash."""

    prev_hash: str
    at: datetime
    environment: str | None
    event: str
    plan_id: int | None
    actor: str | None
    payload: str

    @classmethod
    def of_row(cls, r: Any, prev_hash: str) -> AuditFields:
        return cls(prev_hash, _utc(r.at), r.environment, r.event, r.plan_id, r.actor, r.payload)

    def body(self) -> bytes:
        body = json.dumps(
            [
                self.prev_hash,
                _iso(_aware(self.at)),
                self.environment,
                self.event,
                self.plan_id,
                self.actor,
                self.payload,
            ],
            separators=(",", ":"),
            ensure_ascii=False,
        )
        return body.encode("utf-8")


def audit_hash(fields: AuditFields) -> str:
    """The unkeyed hash of one audit record (store versions before 4). Anyone can recompute it; :func:`audit_mac`
    cannot be recomputed without the secret."""
    return hashlib.sha256(fields.body()).hexdigest()


def audit_mac(key: bytes, fields: AuditFields) -> str:
    """The keyed hash of one audit record (HMAC-SHA256 with the audit key derived from the installation's
    secret)."""
    return signing.mac(key, fields.body())


def _row_mac(key: bytes, r: Any, prev_hash: str) -> str:
    return audit_mac(key, AuditFields.of_row(r, prev_hash))


def _plan_from_row(row: Any, approvals_: Sequence[ApprovalRecord] = (), completed: Sequence[int] = ()) -> PlanRecord:
    return PlanRecord(
        id=row.id,
        environment=row.environment,
        status=PlanStatus(row.status),
        desired_revision=row.desired_revision,
        statements_hash=row.statements_hash,
        fingerprint=row.fingerprint,
        statements=tuple(Statement.from_record(d) for d in json.loads(row.statements)),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        decided_by=row.decided_by,
        decided_at=_aware(row.decided_at),
        reason=row.reason,
        applied_at=_aware(row.applied_at),
        error=row.error,
        resumable=bool(row.resumable),
        approvals=tuple(approvals_),
        completed_steps=tuple(completed),
        database=row.database or "",
    )


def _row_statements(row: Any) -> tuple[Statement, ...]:
    return tuple(Statement.from_record(d) for d in json.loads(row.statements))


def _row_key(row: Any) -> PlanKey:
    return PlanKey(
        row.desired_revision,
        row.statements_hash,
        row.fingerprint,
        row.database or "",
        steps_digest(_row_statements(row)),
    )


def _signed_fields(
    plan_row: Any, actor: str, decision: str, at: datetime, reason: str | None, auth: bool
) -> dict[str, Any]:
    """What an approval's signature covers: the decision and exactly the plan it decides, as stored."""
    return {
        "plan_id": plan_row.id,
        "environment": plan_row.environment,
        "actor": actor,
        "decision": decision,
        "at": _iso(_utc(at)),
        "reason": reason,
        "authenticated": bool(auth),
        "desired_revision": plan_row.desired_revision,
        "fingerprint": plan_row.fingerprint,
        "statements_hash": plan_row.statements_hash,
        "database": plan_row.database or "",
        "steps": steps_digest(_row_statements(plan_row)),
    }


def _superseded_by(plan: Plan) -> Callable[[Any], str]:
    def why(old: Any) -> str:
        if old.desired_revision != plan.desired_revision:
            return f"a plan for newer desired revision {plan.desired_revision[:12]} replaces it"
        return "a newer plan replaces it: the environment changed"

    return why


def _status_from_row(r: Any) -> ApplyStatusRow:
    return ApplyStatusRow(
        environment=r.environment,
        last_attempted_revision=r.last_attempted_revision,
        last_applied_revision=r.last_applied_revision,
        converged=None if r.converged is None else bool(r.converged),
        fingerprint=r.fingerprint,
        last_plan_id=r.last_plan_id,
        last_apply_at=_aware(r.last_apply_at),
        last_error=r.last_error,
        updated_at=_utc(r.updated_at),
    )


# -- upgrades -------------------------------------------------------------------------------------------------


def _upgrade_1_to_2(store: Store, conn: sa.Connection) -> None:
    false = "false" if conn.dialect.name == "postgresql" else "0"
    conn.exec_driver_sql(f"alter table reconciler_plans add column resumable boolean not null default {false}")
    # Version 1 did not enforce one live plan per environment: keep the newest, supersede the others.
    live = conn.execute(
        sa.select(plans.c.id, plans.c.environment)
        .where(plans.c.status.in_(LIVE_STATUSES))
        .order_by(plans.c.environment, plans.c.id.desc())
    ).all()
    seen: set[str] = set()
    for row in live:
        if row.environment in seen:
            store._set_status(
                conn,
                row.id,
                PlanStatus.SUPERSEDED,
                event="plan_superseded",
                reason="store upgrade: a newer live plan of the same environment exists",
            )
        seen.add(row.environment)
    for table in (approvals, progress, environment_status):
        table.create(conn, checkfirst=True)
    live_plan_per_environment.create(conn, checkfirst=True)
    audit_by_environment.create(conn, checkfirst=True)


def _upgrade_2_to_3(store: Store, conn: sa.Connection) -> None:
    """Plans are bound to the database they were computed on (empty for plans stored before); the persisted
    status table, seeded with what the version-2 status rows knew (revisions, fingerprint)."""
    if "database" not in {c["name"] for c in sa.inspect(conn).get_columns("reconciler_plans")}:
        conn.exec_driver_sql("alter table reconciler_plans add column database varchar(255) not null default ''")
    statuses.create(conn, checkfirst=True)
    for row in conn.execute(sa.select(environment_status)):
        old = _status_from_row(row)
        seeded = replace(
            initial_status(old.environment, old.updated_at),
            last_attempted_revision=old.last_attempted_revision,
            last_applied_revision=old.last_applied_revision,
            last_error=old.last_error,
            fingerprint=old.fingerprint if old.converged else None,
            last_plan_id=old.last_plan_id,
        )
        _put_status(conn, seeded)


def _upgrade_3_to_4(store: Store, conn: sa.Connection) -> None:
    """Approvals gain their signature (those recorded before have none, so they no longer count: a plan approved
    before the upgrade is approved again); the audit chain is verified unkeyed, then re-keyed."""
    have = {c["name"] for c in sa.inspect(conn).get_columns("reconciler_approvals")}
    false = "false" if conn.dialect.name == "postgresql" else "0"
    for name, ddl in (
        ("database", "varchar(255) not null default ''"),
        ("steps", "varchar(64) not null default ''"),
        ("authenticated", f"boolean not null default {false}"),
        ("signature", "varchar(64) not null default ''"),
    ):
        if name not in have:
            conn.exec_driver_sql(f"alter table reconciler_approvals add column {name} {ddl}")
    outcome = store._rekey_audit(conn)
    store._audit(conn, "audit_rekeyed", environment=None, plan_id=None, payload=outcome)


UPGRADES: dict[int, Callable[[Store, sa.Connection], None]] = {
    1: _upgrade_1_to_2,
    2: _upgrade_2_to_3,
    3: _upgrade_3_to_4,
}


def _put_status(conn: sa.Connection, status: EnvironmentStatus) -> None:
    """Insert or replace an environment's persisted status (one statement on both backends)."""
    values = {
        "environment": status.environment,
        "document": json.dumps(status.to_json(), separators=(",", ":"), ensure_ascii=False),
        "updated_at": _now(),
    }
    insert = (sqlite_insert if conn.dialect.name == "sqlite" else pg_insert)(statuses).values(**values)
    conn.execute(
        insert.on_conflict_do_update(
            index_elements=[statuses.c.environment],
            set_={"document": insert.excluded.document, "updated_at": insert.excluded.updated_at},
        )
    )


def _loaded_status(document: str) -> EnvironmentStatus:
    return EnvironmentStatus.from_json(json.loads(document))


def _verify_chain(rows: Iterable[Any], expected: Callable[[Any, str], str]) -> AuditVerification:
    """Walk audit rows in id order: each must follow its predecessor and carry ``expected(row, prev_hash)``."""
    prev_hash = GENESIS
    prev_id: int | None = None
    count = 0
    for r in rows:
        count += 1
        if r.prev_hash != prev_hash:
            after = f"record {prev_id}" if prev_id is not None else "the start of the trail"
            return AuditVerification(
                False,
                count,
                r.id,
                f"record {r.id} ({r.event}) does not follow {after}: a record before it was altered, "
                "removed or inserted (chain broken)",
            )
        if not hmac.compare_digest(str(r.hash), expected(r, r.prev_hash)):
            return AuditVerification(
                False,
                count,
                r.id,
                f"record {r.id} ({r.event}, {_iso(_utc(r.at))}) was altered after it was written, or written "
                "without the installation's signing key (hash mismatch)",
            )
        prev_hash = r.hash
        prev_id = r.id
    head = f"; head {prev_hash} (record {prev_id})" if prev_id is not None else ""
    return AuditVerification(True, count, None, f"{count} records, chain intact{head}", prev_hash, prev_id)


class Store:
    """All reads and writes of the reconciler's own state."""

    def __init__(self, engine: sa.Engine, key: bytes) -> None:
        self.engine = engine
        # Derived from the installation's secret, which lives outside the store: approvals are signed and the audit
        # chain keyed with them, so rows written behind the store's back do not verify.
        self._approval_key = signing.derive(key, signing.APPROVALS)
        self._audit_key = signing.derive(key, signing.AUDIT)
        # Connections from this engine begin with BEGIN IMMEDIATE on SQLite (see open_store).
        self._writer = engine.execution_options(store_write=True)

    @property
    def backend(self) -> str:
        return self.engine.dialect.name

    def _write(self) -> Any:
        return self._writer.begin()

    # -- lifecycle --------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Create the tables, or upgrade them from an older store version; refuse a newer store version."""
        with self._write() as conn:
            if conn.dialect.name == "postgresql":
                conn.execute(sa.text(f"select pg_advisory_xact_lock({_MIGRATE_LOCK})"))
            if not sa.inspect(conn).has_table(meta.name):
                metadata.create_all(conn)
                conn.execute(sa.insert(meta).values(key="store_version", value=str(STORE_VERSION)))
                return
            row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "store_version")).first()
            version = int(row.value) if row is not None else None
            if version is not None and version > STORE_VERSION:
                raise StoreError(
                    f"the state store is at version {version}, newer than this reconciler knows "
                    f"({STORE_VERSION}); upgrade the reconciler"
                )
            if version is None:
                metadata.create_all(conn)
                conn.execute(sa.insert(meta).values(key="store_version", value=str(STORE_VERSION)))
                return
            for v in range(version, STORE_VERSION):
                UPGRADES[v](self, conn)
                conn.execute(sa.update(meta).where(meta.c.key == "store_version").values(value=str(v + 1)))
                self._audit(conn, "store_upgraded", environment=None, plan_id=None, payload={"to_version": v + 1})
            metadata.create_all(conn)

    def version(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(sa.select(meta.c.value).where(meta.c.key == "store_version")).scalar_one())

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("select 1"))

    def close(self) -> None:
        self.engine.dispose()

    # -- plans ------------------------------------------------------------------------------------
    def queue_plan(self, plan: Plan, *, status: PlanStatus = PlanStatus.PENDING) -> Queued:
        """Queue ``plan`` as the environment's live plan, in one transaction.

        The same plan (equal :class:`~reconciler.model.PlanKey`) already pending is kept; another pending plan is
        superseded; an approved plan is left to run (nothing is queued beside it); a plan rejected before for the
        same revision and fingerprint is not queued again. The queue never holds two live plans.
        """
        try:
            with self._write() as conn:
                self._lock_queue(conn, plan.environment)
                live = self._live_rows(conn, plan.environment)
                same = next((r for r in live if _row_key(r) == plan.key and r.status == status.value), None)
                if same is not None:
                    return Queued(same.id)
                approved = next((r for r in live if r.status == PlanStatus.APPROVED.value), None)
                if approved is not None:
                    return Queued(None, approved_id=approved.id)
                self._supersede(conn, live, _superseded_by(plan))
                rejected = self._rejected_row(conn, plan)
                if rejected is not None:
                    return Queued(None, rejected_id=rejected.id)
                return Queued(self._insert_plan(conn, plan, status, [r.id for r in live]), created=True)
        except sa.exc.IntegrityError as exc:
            raise PlanError(
                f"queueing a plan for environment {plan.environment!r}: another live plan was queued at the same time"
            ) from exc

    def settle(self, environment: str, reason: str, *, approved_too: bool = False) -> list[int]:
        """Supersede the environment's pending plan (and, with ``approved_too``, an approved one): the environment
        is in sync, or was recreated. Returns the ids superseded."""
        with self._write() as conn:
            self._lock_queue(conn, environment)
            live = self._live_rows(conn, environment)
            if not approved_too:
                live = [r for r in live if r.status == PlanStatus.PENDING.value]
            self._supersede(conn, live, reason)
        return [r.id for r in live]

    @staticmethod
    def _lock_queue(conn: sa.Connection, environment: str) -> None:
        if conn.dialect.name == "postgresql":
            conn.execute(
                sa.text("select pg_advisory_xact_lock(:k, hashtext(:e))"), {"k": _QUEUE_LOCK, "e": environment}
            )

    @staticmethod
    def _live_rows(conn: sa.Connection, environment: str) -> list[Any]:
        return list(
            conn.execute(
                sa.select(plans)
                .where(plans.c.environment == environment, plans.c.status.in_(LIVE_STATUSES))
                .with_for_update()
            ).all()
        )

    def _supersede(self, conn: sa.Connection, rows: Sequence[Any], reason: str | Callable[[Any], str]) -> None:
        """The one place a plan becomes superseded."""
        for row in rows:
            why = reason(row) if callable(reason) else reason
            self._set_status(conn, row.id, PlanStatus.SUPERSEDED, event="plan_superseded", reason=why)

    @staticmethod
    def _rejected_row(conn: sa.Connection, plan: Plan) -> Any:
        return conn.execute(
            sa.select(plans.c.id)
            .where(
                plans.c.environment == plan.environment,
                plans.c.status == PlanStatus.REJECTED.value,
                plans.c.desired_revision == plan.desired_revision,
                plans.c.fingerprint == plan.fingerprint,
            )
            .order_by(plans.c.id.desc())
            .limit(1)
        ).first()

    def _insert_plan(self, conn: sa.Connection, plan: Plan, status: PlanStatus, supersedes: list[int]) -> int:
        now = _now()
        pid = int(
            conn.execute(  # type: ignore[index]
                sa.insert(plans).values(
                    environment=plan.environment,
                    status=status.value,
                    desired_revision=plan.desired_revision,
                    statements_hash=plan.hash,
                    fingerprint=plan.fingerprint,
                    database=plan.database,
                    statements=json.dumps([s.to_record() for s in plan.statements]),
                    created_at=now,
                    updated_at=now,
                )
            ).inserted_primary_key[0]
        )
        payload = {
            "status": status.value,
            "desired_revision": plan.desired_revision,
            "statements_hash": plan.hash,
            "fingerprint": plan.fingerprint,
            "database": plan.database,
            "statements": list(plan.sqls),
            "supersedes": supersedes,
        }
        self._audit(conn, "plan_queued", environment=plan.environment, plan_id=pid, payload=payload)
        return pid

    def _approval_of(self, plan_row: Any, r: Any) -> ApprovalRecord:
        """An approvals row, its signature checked against the plan row as it is now."""
        at = _utc(r.at)
        fields = _signed_fields(plan_row, r.actor, r.decision, at, r.reason, bool(r.authenticated))
        ok = signing.verify(self._approval_key, fields, r.signature)
        return ApprovalRecord(r.plan_id, r.actor, r.decision, at, r.reason, bool(r.authenticated), ok)

    def _details(
        self, conn: sa.Connection, rows: Sequence[Any]
    ) -> tuple[dict[int, list[ApprovalRecord]], dict[int, list[int]]]:
        got: dict[int, list[ApprovalRecord]] = {}
        done: dict[int, list[int]] = {}
        by_id = {r.id: r for r in rows}
        ids = list(by_id)
        if not ids:
            return got, done
        for r in conn.execute(sa.select(approvals).where(approvals.c.plan_id.in_(ids)).order_by(approvals.c.id)):
            got.setdefault(r.plan_id, []).append(self._approval_of(by_id[r.plan_id], r))
        for r in conn.execute(
            sa.select(progress.c.plan_id, progress.c.step_index)
            .where(progress.c.plan_id.in_(ids))
            .order_by(progress.c.step_index)
        ):
            done.setdefault(r.plan_id, []).append(r.step_index)
        return got, done

    def _plans(self, conn: sa.Connection, q: sa.Select[Any]) -> list[PlanRecord]:
        rows = conn.execute(q).all()
        got, done = self._details(conn, rows)
        return [_plan_from_row(r, got.get(r.id, ()), done.get(r.id, ())) for r in rows]

    def get_plan(self, plan_id: int) -> PlanRecord:
        with self.engine.connect() as conn:
            found = self._plans(conn, sa.select(plans).where(plans.c.id == plan_id))
        if not found:
            raise PlanError(f"plan {plan_id} does not exist")
        return found[0]

    def list_plans(self, environment: str | None = None, status: PlanStatus | None = None) -> list[PlanRecord]:
        q = sa.select(plans).order_by(plans.c.id)
        if environment:
            q = q.where(plans.c.environment == environment)
        if status:
            q = q.where(plans.c.status == status.value)
        with self.engine.connect() as conn:
            return self._plans(conn, q)

    def live_plan(self, environment: str) -> PlanRecord | None:
        """The pending or approved plan of an environment (there is at most one)."""
        q = (
            sa.select(plans)
            .where(plans.c.environment == environment, plans.c.status.in_([s.value for s in LIVE_PLAN_STATUSES]))
            .order_by(plans.c.id.desc())
            .limit(1)
        )
        with self.engine.connect() as conn:
            found = self._plans(conn, q)
        return found[0] if found else None

    def approved_plans(self) -> dict[int, str]:
        """Every approved plan's id and environment (one light query: the daemon asks every watch interval, to run
        approvals made by the CLI or by another replica)."""
        q = sa.select(plans.c.id, plans.c.environment).where(plans.c.status == PlanStatus.APPROVED.value)
        with self.engine.connect() as conn:
            return {int(r.id): str(r.environment) for r in conn.execute(q)}

    def resumable_plan(self, environment: str) -> PlanRecord | None:
        """The environment's newest plan if it failed transiently (a later apply resumes it), else None."""
        q = sa.select(plans).where(plans.c.environment == environment).order_by(plans.c.id.desc()).limit(1)
        with self.engine.connect() as conn:
            found = self._plans(conn, q)
        if found and found[0].status is PlanStatus.FAILED and found[0].resumable:
            return found[0]
        return None

    def _lock_plan(self, conn: sa.Connection, plan_id: int) -> Any:
        row = conn.execute(sa.select(plans).where(plans.c.id == plan_id).with_for_update()).first()
        if row is None:
            raise PlanError(f"plan {plan_id} does not exist")
        return row

    def _set_status(
        self,
        conn: sa.Connection,
        plan_id: int,
        to: PlanStatus,
        *,
        event: str,
        actor: str | None = None,
        reason: str | None = None,
        error: str | None = None,
        resumable: bool | None = None,
        decided_by: str | None = None,
        extra: dict[str, Any] | None = None,
    ) -> None:
        now = _now()
        values: dict[str, Any] = {"status": to.value, "updated_at": now}
        if to in (PlanStatus.APPROVED, PlanStatus.REJECTED):
            values.update(decided_by=decided_by or actor, decided_at=now)
        if reason is not None:
            values["reason"] = reason
        if error is not None:
            values["error"] = error
        if to is PlanStatus.APPLIED:
            values["applied_at"] = now
        values["resumable"] = bool(resumable) if to is PlanStatus.FAILED else False
        conn.execute(sa.update(plans).where(plans.c.id == plan_id).values(**values))
        env = conn.execute(sa.select(plans.c.environment).where(plans.c.id == plan_id)).scalar_one()
        payload: dict[str, Any] = {"status": to.value}
        if reason:
            payload["reason"] = reason
        if error:
            payload["error"] = error
        if to is PlanStatus.FAILED:
            payload["resumable"] = bool(resumable)
        payload.update(extra or {})
        self._audit(conn, event, environment=env, plan_id=plan_id, actor=actor, payload=payload)

    def transition(
        self,
        plan_id: int,
        *,
        to: PlanStatus,
        allowed_from: Sequence[PlanStatus],
        event: str,
        actor: str | None = None,
        reason: str | None = None,
        error: str | None = None,
        extra: dict[str, Any] | None = None,
        resumable: bool | None = None,
    ) -> PlanRecord:
        """Move a plan to ``to`` if it is in one of ``allowed_from`` (checked atomically); audit it."""
        try:
            with self._write() as conn:
                row = self._lock_plan(conn, plan_id)
                if row.status not in {s.value for s in allowed_from}:
                    allowed = ", ".join(s.value for s in allowed_from)
                    raise PlanError(
                        f"plan {plan_id} is {row.status}; only a plan that is {allowed} can become {to.value}"
                    )
                self._set_status(
                    conn,
                    plan_id,
                    to,
                    event=event,
                    actor=actor,
                    reason=reason,
                    error=error,
                    resumable=resumable,
                    extra=extra,
                )
        except sa.exc.IntegrityError as exc:
            raise PlanError(
                f"plan {plan_id} cannot become {to.value}: environment already has another live plan"
            ) from exc
        return self.get_plan(plan_id)

    # -- approvals --------------------------------------------------------------------------------
    def approve(self, plan_id: int, actor: str, *, required: int = 1, authenticated: bool = False) -> PlanRecord:
        """Record ``actor``'s signed approval of a pending plan; it becomes approved once ``required`` different
        people approved it (approvals whose signature does not verify do not count). A second approval by the same
        person is refused."""
        with self._write() as conn:
            row = self._lock_plan(conn, plan_id)
            if row.status != PlanStatus.PENDING.value:
                raise PlanError(f"plan {plan_id} is {row.status}; only a pending plan can be approved")
            rows = conn.execute(
                sa.select(approvals)
                .where(approvals.c.plan_id == plan_id, approvals.c.decision == "approve")
                .order_by(approvals.c.id)
            ).all()
            before = [r.actor for r in rows if self._approval_of(row, r).verified]
            if actor in before:
                raise PlanError(
                    f"plan {plan_id} was already approved by {actor}; "
                    + (
                        "another approval must come from someone else"
                        if required > len(before)
                        else "one approval per person"
                    )
                )
            self._record_decision(conn, row, actor, "approve", authenticated=authenticated)
            approvers = [*before, actor]
            self._audit(
                conn,
                "approval_recorded",
                environment=row.environment,
                plan_id=plan_id,
                actor=actor,
                payload={
                    "approvals": len(approvers),
                    "required": required,
                    "authenticated": authenticated,
                    "desired_revision": row.desired_revision,
                    "fingerprint": row.fingerprint,
                    "statements_hash": row.statements_hash,
                    "database": row.database or "",
                },
            )
            if len(approvers) >= required:
                self._set_status(
                    conn,
                    plan_id,
                    PlanStatus.APPROVED,
                    event="plan_approved",
                    actor=actor,
                    decided_by=", ".join(approvers),
                    extra={"approvers": approvers},
                )
        return self.get_plan(plan_id)

    def _record_decision(
        self,
        conn: sa.Connection,
        row: Any,
        actor: str,
        decision: str,
        reason: str | None = None,
        *,
        authenticated: bool = False,
    ) -> None:
        """One signed approvals row: who decided what, when, about exactly which plan (revision, fingerprint,
        statements, database, steps)."""
        at = _now()
        fields = _signed_fields(row, actor, decision, at, reason, authenticated)
        conn.execute(
            sa.insert(approvals).values(
                plan_id=row.id,
                environment=row.environment,
                actor=actor,
                decision=decision,
                at=at,
                reason=reason,
                desired_revision=row.desired_revision,
                fingerprint=row.fingerprint,
                statements_hash=row.statements_hash,
                database=fields["database"],
                steps=fields["steps"],
                authenticated=authenticated,
                signature=signing.sign(self._approval_key, fields),
            )
        )

    def reject(self, plan_id: int, actor: str, reason: str, *, authenticated: bool = False) -> PlanRecord:
        """Reject a pending, approved or resumable failed plan; record who and why."""
        with self._write() as conn:
            row = self._lock_plan(conn, plan_id)
            allowed = {PlanStatus.PENDING.value, PlanStatus.APPROVED.value}
            if row.status not in allowed and not (row.status == PlanStatus.FAILED.value and row.resumable):
                raise PlanError(
                    f"plan {plan_id} is {row.status}; only a pending, approved or resumable failed plan can be rejected"
                )
            self._record_decision(conn, row, actor, "reject", reason, authenticated=authenticated)
            self._set_status(conn, plan_id, PlanStatus.REJECTED, event="plan_rejected", actor=actor, reason=reason)
        return self.get_plan(plan_id)

    def approvals_of(self, plan_id: int) -> list[ApprovalRecord]:
        return list(self.get_plan(plan_id).approvals)

    # -- progress ---------------------------------------------------------------------------------
    def record_applied(
        self,
        *,
        environment: str,
        plan_id: int | None,
        statements: Sequence[dict[str, Any]],
        fingerprint_after: str = "",
    ) -> None:
        """Audit statements that committed together (``statement_applied``, one record each) and, for a stored
        plan, record them as completed steps so that a retry resumes after them. One transaction."""
        now = _now()
        with self._write() as conn:
            for s in statements:
                if plan_id is not None:
                    conn.execute(
                        sa.insert(progress).values(
                            plan_id=plan_id,
                            step_index=int(s["index"]),
                            statement_hash=sql_hash(str(s["sql"])),
                            fingerprint_after=fingerprint_after,
                            attempts=int(s.get("attempts", 1)),
                            completed_at=now,
                        )
                    )
                self._audit(conn, "statement_applied", environment=environment, plan_id=plan_id, payload=dict(s))

    def progress_of(self, plan_id: int) -> list[ProgressRecord]:
        with self.engine.connect() as conn:
            return [
                ProgressRecord(
                    r.plan_id, r.step_index, r.statement_hash, r.fingerprint_after, r.attempts, _utc(r.completed_at)
                )
                for r in conn.execute(
                    sa.select(progress).where(progress.c.plan_id == plan_id).order_by(progress.c.step_index)
                )
            ]

    # -- environment status -----------------------------------------------------------------------
    def save_status(self, status: EnvironmentStatus) -> None:
        """Persist an environment's status (replacing the one stored)."""
        with self._write() as conn:
            _put_status(conn, status)

    def load_status(self, environment: str) -> EnvironmentStatus | None:
        with self.engine.connect() as conn:
            doc = conn.execute(sa.select(statuses.c.document).where(statuses.c.environment == environment)).scalar()
        return _loaded_status(doc) if doc is not None else None

    def load_statuses(self) -> dict[str, EnvironmentStatus]:
        """Every persisted status, by environment."""
        with self.engine.connect() as conn:
            rows = conn.execute(sa.select(statuses.c.environment, statuses.c.document).order_by(statuses.c.environment))
            return {r.environment: _loaded_status(r.document) for r in rows}

    # -- audit ------------------------------------------------------------------------------------
    def record(
        self,
        event: str,
        *,
        environment: str | None = None,
        plan_id: int | None = None,
        actor: str | None = None,
        payload: dict[str, Any] | None = None,
        unless_repeated: bool = False,
    ) -> bool:
        """Append an audit record. With ``unless_repeated``, skip it when the environment's last record of this
        event has the same payload (a level-triggered loop computes the same plan again and again). Returns
        whether a record was written."""
        with self._write() as conn:
            body = payload or {}
            if unless_repeated:
                last = conn.execute(
                    sa.select(audit.c.payload)
                    .where(audit.c.event == event, audit.c.environment == environment)
                    .order_by(audit.c.id.desc())
                    .limit(1)
                ).scalar()
                if last is not None and last == self._payload_text(body):
                    return False
            self._audit(conn, event, environment=environment, plan_id=plan_id, actor=actor, payload=body)
        return True

    @staticmethod
    def _payload_text(payload: dict[str, Any]) -> str:
        return json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)

    def _audit(
        self,
        conn: sa.Connection,
        event: str,
        *,
        environment: str | None,
        plan_id: int | None,
        actor: str | None = None,
        payload: dict[str, Any],
    ) -> None:
        if conn.dialect.name == "postgresql":
            # Serialise writers so that the chain stays linear across replicas.
            conn.execute(sa.text(f"select pg_advisory_xact_lock({_AUDIT_LOCK})"))
        prev = conn.execute(sa.select(audit.c.hash).order_by(audit.c.id.desc()).limit(1)).scalar()
        prev_hash = prev or GENESIS
        at = _now()
        body = self._payload_text(payload)
        fields = AuditFields(prev_hash, at, environment, event, plan_id, actor, body)
        conn.execute(sa.insert(audit).values(**fields._asdict(), hash=audit_mac(self._audit_key, fields)))

    def audit_records(
        self,
        environment: str | None = None,
        *,
        event: str | None = None,
        plan_id: int | None = None,
        limit: int | None = None,
    ) -> list[AuditRecord]:
        """Audit records, oldest first (with ``limit``: the newest ``limit`` of them)."""
        q = sa.select(audit)
        if environment:
            q = q.where(audit.c.environment == environment)
        if event:
            q = q.where(audit.c.event == event)
        if plan_id is not None:
            q = q.where(audit.c.plan_id == plan_id)
        q = q.order_by(audit.c.id.desc()).limit(limit) if limit else q.order_by(audit.c.id)
        with self.engine.connect() as conn:
            out = [
                AuditRecord(
                    r.id,
                    _utc(r.at),
                    r.environment,
                    r.event,
                    r.plan_id,
                    r.actor,
                    json.loads(r.payload),
                    r.prev_hash,
                    r.hash,
                )
                for r in conn.execute(q)
            ]
        return sorted(out, key=lambda a: a.id)

    def verify_audit(self, expect_head: str | None = None) -> AuditVerification:
        """Check the whole keyed chain; name the first record that was altered, removed before, or inserted.
        ``expect_head``: a head exported earlier (log, metric) must still be in the chain, else it was rewritten
        or truncated. Logs the chain's head (``audit_chain_verified``)."""
        hashes: set[str] = set()

        def expected(r: Any, prev: str) -> str:
            hashes.add(str(r.hash))
            return _row_mac(self._audit_key, r, prev)

        with self.engine.connect() as conn:
            check = _verify_chain(conn.execute(sa.select(audit).order_by(audit.c.id)), expected)
        if check.ok and expect_head and expect_head not in hashes:
            check = AuditVerification(
                False,
                check.records,
                None,
                f"the chain no longer holds head {expect_head[:16]} exported earlier: it was rewritten or truncated "
                f"({check.records} records now)",
                check.head,
                check.head_id,
            )
        if check.ok:
            log.info("audit_chain_verified", records=check.records, head_id=check.head_id, head=check.head)
        else:
            log.error("audit_chain_broken", records=check.records, first_broken_id=check.first_broken_id)
        return check

    def audit_head(self) -> AuditHead:
        """How many records the chain holds and its last record (two small queries, no verification)."""
        with self.engine.connect() as conn:
            count = int(conn.execute(sa.select(sa.func.count()).select_from(audit)).scalar_one())
            last = conn.execute(sa.select(audit.c.id, audit.c.hash).order_by(audit.c.id.desc()).limit(1)).first()
        return AuditHead(count, last.id if last else None, last.hash if last else None)

    def _rekey_audit(self, conn: sa.Connection) -> dict[str, Any]:
        """Store upgrade to version 4: verify the unkeyed chain (records this upgrade already wrote are keyed),
        then rewrite every record's hashes with the keyed HMAC. Returns what was found, for the audit record that
        says so: re-keying a broken chain keeps the fact that it was broken, in a record nobody can forge."""
        rows = list(conn.execute(sa.select(audit).order_by(audit.c.id)))

        def either(r: Any, prev: str) -> str:
            legacy = audit_hash(AuditFields.of_row(r, prev))
            return legacy if r.hash == legacy else _row_mac(self._audit_key, r, prev)

        legacy = _verify_chain(rows, either)
        prev = GENESIS
        for r in rows:
            new = _row_mac(self._audit_key, r, prev)
            conn.execute(sa.update(audit).where(audit.c.id == r.id).values(prev_hash=prev, hash=new))
            prev = new
        return {
            "records": len(rows),
            "legacy_chain_intact": legacy.ok,
            "legacy_first_broken_id": legacy.first_broken_id,
            "legacy_head": legacy.head if legacy.ok else (rows[-1].hash if rows else None),
        }

    def iter_events(self) -> Iterator[str]:
        with self.engine.connect() as conn:
            yield from conn.execute(sa.select(audit.c.event).order_by(audit.c.id)).scalars()


def _sqlite_transactions(engine: sa.Engine) -> None:
    """Let SQLite transactions begin where SQLAlchemy begins them: BEGIN IMMEDIATE for writes (one writer at a
    time, and its reads see the latest commit), BEGIN for reads. pysqlite's own handling would start a transaction
    only at the first INSERT, after the reads that decided it."""

    @sa_event.listens_for(engine, "connect")
    def _connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None

    @sa_event.listens_for(engine, "begin")
    def _begin(conn: sa.Connection) -> None:
        write = bool(conn.get_execution_options().get("store_write"))
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def _create_private(db_file: Path) -> None:
    """Create the SQLite store's folder (0700) and file (0600) if they are missing: plans and the audit trail are
    the reconciler's alone. Existing ones keep their modes."""
    folder = db_file.parent
    try:
        if not folder.exists():
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            folder.chmod(0o700)  # mkdir's mode is masked by the umask
    except OSError as exc:
        raise StoreError(f"opening the state store: cannot create folder {folder}: {exc.strerror}") from exc
    try:
        os.close(os.open(db_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # it exists: its mode is the operator's
    except OSError as exc:
        raise StoreError(f"opening the state store: cannot create {db_file}: {exc.strerror}") from exc


def open_store(url: str, *, key: bytes) -> Store:
    """Open (and create or upgrade) the store at an SQLAlchemy URL; ``postgresql://`` uses psycopg 3. ``key`` is
    the installation's secret (:func:`reconciler.signing.load_key`), held by the process, never by the store."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        _create_private(Path(url[len("sqlite:///") :]))
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
            kwargs["poolclass"] = NullPool
        else:
            kwargs["pool_pre_ping"] = True
        engine = sa.create_engine(url, **kwargs)
        if engine.dialect.name == "sqlite":
            _sqlite_transactions(engine)
        store = Store(engine, key)
        store.migrate()
    except sa.exc.SQLAlchemyError as exc:
        detail = getattr(exc, "orig", None) or exc
        raise StoreError(f"opening the state store: {exc.__class__.__name__}: {redact(str(detail))}") from exc
    return store
