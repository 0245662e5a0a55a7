"""The state store: plans and their lifecycle, and a hash-chained append-only audit trail."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from ..errors import PlanError, StoreError
from ..model import LIVE_PLAN_STATUSES, PlanStatus
from .schema import STORE_VERSION, audit, meta, metadata, plans

GENESIS = "0" * 64


def _now() -> datetime:
    return datetime.now(UTC)


def _aware(dt: datetime | None) -> datetime | None:
    if dt is not None and dt.tzinfo is None:
        return dt.replace(tzinfo=UTC)  # SQLite drops the zone; everything is stored in UTC
    return dt


def _utc(dt: datetime) -> datetime:
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt


def _iso(dt: datetime | None) -> str | None:
    return dt.isoformat() if dt is not None else None


@dataclass(frozen=True)
class PlanRecord:
    id: int
    environment: str
    status: PlanStatus
    desired_revision: str
    statements_hash: str
    fingerprint: str
    statements: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    decided_by: str | None
    decided_at: datetime | None
    reason: str | None
    applied_at: datetime | None
    error: str | None

    @property
    def sqls(self) -> list[str]:
        return [s["sql"] for s in self.statements]

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "environment": self.environment,
            "status": self.status.value,
            "desired_revision": self.desired_revision,
            "statements_hash": self.statements_hash,
            "fingerprint": self.fingerprint,
            "statements": self.statements,
            "created_at": _iso(self.created_at),
            "updated_at": _iso(self.updated_at),
            "decided_by": self.decided_by,
            "decided_at": _iso(self.decided_at),
            "reason": self.reason,
            "applied_at": _iso(self.applied_at),
            "error": self.error,
        }


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


def audit_hash(
    prev_hash: str,
    at: datetime,
    environment: str | None,
    event: str,
    plan_id: int | None,
    actor: str | None,
    payload: str,
) -> str:
    """The hash of one audit record: it covers every field and the previous record's hash."""
    body = json.dumps(
        [prev_hash, _iso(_aware(at)), environment, event, plan_id, actor, payload],
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(body.encode("utf-8")).hexdigest()


def _plan_from_row(row: Any) -> PlanRecord:
    return PlanRecord(
        id=row.id,
        environment=row.environment,
        status=PlanStatus(row.status),
        desired_revision=row.desired_revision,
        statements_hash=row.statements_hash,
        fingerprint=row.fingerprint,
        statements=json.loads(row.statements),
        created_at=_utc(row.created_at),
        updated_at=_utc(row.updated_at),
        decided_by=row.decided_by,
        decided_at=_aware(row.decided_at),
        reason=row.reason,
        applied_at=_aware(row.applied_at),
        error=row.error,
    )


class Store:
    """All reads and writes of the reconciler's own state."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- lifecycle --------------------------------------------------------------------------------
    def migrate(self) -> None:
        """Create the tables if needed; refuse a store written by a newer version."""
        metadata.create_all(self.engine)
        with self.engine.begin() as conn:
            row = conn.execute(sa.select(meta.c.value).where(meta.c.key == "store_version")).first()
            if row is None:
                conn.execute(sa.insert(meta).values(key="store_version", value=str(STORE_VERSION)))
            elif int(row.value) > STORE_VERSION:
                raise StoreError(
                    f"the state store is at version {row.value}, newer than this reconciler knows "
                    f"({STORE_VERSION}); upgrade the reconciler"
                )

    def ping(self) -> None:
        with self.engine.connect() as conn:
            conn.execute(sa.text("select 1"))

    def close(self) -> None:
        self.engine.dispose()

    # -- plans ------------------------------------------------------------------------------------
    def create_plan(
        self,
        *,
        environment: str,
        desired_revision: str,
        statements_hash: str,
        fingerprint: str,
        statements: Sequence[dict[str, Any]],
        status: PlanStatus = PlanStatus.PENDING,
    ) -> PlanRecord:
        now = _now()
        with self.engine.begin() as conn:
            pid = conn.execute(
                sa.insert(plans).values(
                    environment=environment,
                    status=status.value,
                    desired_revision=desired_revision,
                    statements_hash=statements_hash,
                    fingerprint=fingerprint,
                    statements=json.dumps(list(statements)),
                    created_at=now,
                    updated_at=now,
                )
            ).inserted_primary_key[0]  # type: ignore[index]
            self._audit(
                conn,
                "plan_queued",
                environment=environment,
                plan_id=pid,
                payload={
                    "desired_revision": desired_revision,
                    "statements_hash": statements_hash,
                    "statements": [s["sql"] for s in statements],
                },
            )
        return self.get_plan(int(pid))

    def get_plan(self, plan_id: int) -> PlanRecord:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(plans).where(plans.c.id == plan_id)).first()
        if row is None:
            raise PlanError(f"plan {plan_id} does not exist")
        return _plan_from_row(row)

    def list_plans(self, environment: str | None = None, status: PlanStatus | None = None) -> list[PlanRecord]:
        q = sa.select(plans).order_by(plans.c.id)
        if environment:
            q = q.where(plans.c.environment == environment)
        if status:
            q = q.where(plans.c.status == status.value)
        with self.engine.connect() as conn:
            return [_plan_from_row(r) for r in conn.execute(q)]

    def live_plan(self, environment: str) -> PlanRecord | None:
        """The pending or approved plan of an environment (there is at most one)."""
        q = (
            sa.select(plans)
            .where(plans.c.environment == environment, plans.c.status.in_([s.value for s in LIVE_PLAN_STATUSES]))
            .order_by(plans.c.id.desc())
        )
        with self.engine.connect() as conn:
            row = conn.execute(q).first()
        return _plan_from_row(row) if row is not None else None

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
    ) -> PlanRecord:
        """Move a plan to ``to`` if it is in one of ``allowed_from`` (checked atomically); audit it."""
        now = _now()
        values: dict[str, Any] = {"status": to.value, "updated_at": now}
        if to in (PlanStatus.APPROVED, PlanStatus.REJECTED):
            values.update(decided_by=actor, decided_at=now)
        if reason is not None:
            values["reason"] = reason
        if error is not None:
            values["error"] = error
        if to is PlanStatus.APPLIED:
            values["applied_at"] = now
        with self.engine.begin() as conn:
            res = conn.execute(
                sa.update(plans)
                .where(plans.c.id == plan_id, plans.c.status.in_([s.value for s in allowed_from]))
                .values(**values)
            )
            if res.rowcount != 1:
                row = conn.execute(sa.select(plans.c.status, plans.c.environment).where(plans.c.id == plan_id)).first()
                if row is None:
                    raise PlanError(f"plan {plan_id} does not exist")
                allowed = ", ".join(s.value for s in allowed_from)
                raise PlanError(f"plan {plan_id} is {row.status}; only a plan that is {allowed} can become {to.value}")
            env = conn.execute(sa.select(plans.c.environment).where(plans.c.id == plan_id)).scalar_one()
            payload: dict[str, Any] = {"status": to.value}
            if reason:
                payload["reason"] = reason
            if error:
                payload["error"] = error
            payload.update(extra or {})
            self._audit(conn, event, environment=env, plan_id=plan_id, actor=actor, payload=payload)
        return self.get_plan(plan_id)

    # -- audit ------------------------------------------------------------------------------------
    def record(
        self,
        event: str,
        *,
        environment: str | None = None,
        plan_id: int | None = None,
        actor: str | None = None,
        payload: dict[str, Any] | None = None,
    ) -> None:
        with self.engine.begin() as conn:
            self._audit(conn, event, environment=environment, plan_id=plan_id, actor=actor, payload=payload or {})

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
            conn.execute(sa.text("select pg_advisory_xact_lock(7294001)"))
        prev = conn.execute(sa.select(audit.c.hash).order_by(audit.c.id.desc()).limit(1)).scalar()
        prev_hash = prev or GENESIS
        at = _now()
        body = json.dumps(payload, sort_keys=True, ensure_ascii=False, default=str)
        conn.execute(
            sa.insert(audit).values(
                at=at,
                environment=environment,
                event=event,
                plan_id=plan_id,
                actor=actor,
                payload=body,
                prev_hash=prev_hash,
                hash=audit_hash(prev_hash, at, environment, event, plan_id, actor, body),
            )
        )

    def audit_records(self, environment: str | None = None) -> list[AuditRecord]:
        q = sa.select(audit).order_by(audit.c.id)
        if environment:
            q = q.where(audit.c.environment == environment)
        with self.engine.connect() as conn:
            return [
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

    def verify_audit(self) -> tuple[bool, int | None, str]:
        """Check the whole chain; return (ok, first broken record id, explanation)."""
        prev_hash = GENESIS
        count = 0
        with self.engine.connect() as conn:
            for r in conn.execute(sa.select(audit).order_by(audit.c.id)):
                count += 1
                if r.prev_hash != prev_hash:
                    return False, r.id, f"record {r.id} does not follow the record before it (chain broken)"
                expect = audit_hash(
                    r.prev_hash,
                    _utc(r.at),
                    r.environment,
                    r.event,
                    r.plan_id,
                    r.actor,
                    r.payload,
                )
                if r.hash != expect:
                    return False, r.id, f"record {r.id} was altered after it was written (hash mismatch)"
                prev_hash = r.hash
        return True, None, f"{count} records, chain intact"

    def iter_events(self) -> Iterator[str]:
        with self.engine.connect() as conn:
            yield from conn.execute(sa.select(audit.c.event).order_by(audit.c.id)).scalars()


def open_store(url: str) -> Store:
    """Open (and create or upgrade) the store at an SQLAlchemy URL; ``postgresql://`` uses psycopg 3."""
    if url.startswith("sqlite:///") and url != "sqlite:///:memory:":
        Path(url[len("sqlite:///") :]).parent.mkdir(parents=True, exist_ok=True)
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    try:
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
            kwargs["poolclass"] = NullPool
        engine = sa.create_engine(url, **kwargs)
        store = Store(engine)
        store.migrate()
    except sa.exc.SQLAlchemyError as exc:
        raise StoreError(
            f"opening the state store: {exc.__class__.__name__}: {exc.orig if hasattr(exc, 'orig') else exc}"
        ) from exc
    return store
