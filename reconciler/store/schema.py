"""The store's tables (SQLAlchemy Core), identical on SQLite and PostgreSQL.

Versions (``reconciler_meta.store_version``):

1. plans, audit.
2. plans.resumable; at most one live (pending or approved) plan per environment, enforced by a partial unique
   index; approvals (who approved or rejected what, when); plan progress (which steps of a plan committed);
   environment status (last attempted and applied desired revision, converged or not).
3. status: each environment's :class:`reconciler.status.EnvironmentStatus` as one JSON document (conditions,
   consecutive failures, backoff, Stalled, revisions, fingerprint), so a restarted daemon resumes where it was.
4. approvals are signed (HMAC-SHA256 with the installation's secret, which the store does not hold) over the plan
   they approve: its revision, fingerprint, statements, database identity and the digest of its steps, hazards and
   decisions; each records whether the approver was authenticated by a token. The audit chain is keyed with an
   HMAC of the same secret (the upgrade verifies the unkeyed chain and re-keys it, recording the outcome).
"""

from __future__ import annotations

import sqlalchemy as sa

STORE_VERSION = 4

LIVE_STATUSES = ("pending", "approved")  # reconciler.model.LIVE_PLAN_STATUSES, as stored

metadata = sa.MetaData()

meta = sa.Table(
    "reconciler_meta",
    metadata,
    sa.Column("key", sa.String(64), primary_key=True),
    sa.Column("value", sa.String(256), nullable=False),
)

plans = sa.Table(
    "reconciler_plans",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("environment", sa.String(63), nullable=False, index=True),
    sa.Column("status", sa.String(16), nullable=False, index=True),
    sa.Column("desired_revision", sa.String(64), nullable=False),
    sa.Column("statements_hash", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False, server_default=""),
    sa.Column("database", sa.String(255), nullable=False, server_default=""),  # host:port/dbname planned on
    sa.Column("statements", sa.Text, nullable=False),  # JSON list of Statement.to_record()
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decided_by", sa.String(128)),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    sa.Column("applied_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
    # v2: a failed plan whose failure was transient (lost connection, lock timeouts); a later apply resumes it.
    sa.Column("resumable", sa.Boolean, nullable=False, server_default=sa.false()),
)

# v2: the queue never holds two live plans for one environment (both backends support partial indexes).
live_plan_per_environment = sa.Index(
    "uq_reconciler_plans_live",
    plans.c.environment,
    unique=True,
    sqlite_where=plans.c.status.in_(LIVE_STATUSES),
    postgresql_where=plans.c.status.in_(LIVE_STATUSES),
)

audit = sa.Table(
    "reconciler_audit",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("environment", sa.String(63)),
    sa.Column("event", sa.String(64), nullable=False),
    sa.Column("plan_id", sa.Integer),
    sa.Column("actor", sa.String(128)),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("prev_hash", sa.String(64), nullable=False),
    sa.Column("hash", sa.String(64), nullable=False),
)

audit_by_environment = sa.Index("ix_reconciler_audit_environment", audit.c.environment, audit.c.id)

# v2
approvals = sa.Table(
    "reconciler_approvals",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("plan_id", sa.Integer, sa.ForeignKey("reconciler_plans.id"), nullable=False, index=True),
    sa.Column("environment", sa.String(63), nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("decision", sa.String(16), nullable=False),  # approve | reject
    sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("reason", sa.Text),
    sa.Column("desired_revision", sa.String(64), nullable=False),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("statements_hash", sa.String(64), nullable=False),
    # v4
    sa.Column("database", sa.String(255), nullable=False, server_default=""),
    sa.Column("steps", sa.String(64), nullable=False, server_default=""),
    sa.Column("authenticated", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("signature", sa.String(64), nullable=False, server_default=""),
    sa.UniqueConstraint("plan_id", "actor", "decision", name="uq_reconciler_approvals_once"),
)

# v2
progress = sa.Table(
    "reconciler_plan_progress",
    metadata,
    sa.Column("plan_id", sa.Integer, sa.ForeignKey("reconciler_plans.id"), primary_key=True),
    sa.Column("step_index", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("statement_hash", sa.String(64), nullable=False),
    sa.Column("fingerprint_after", sa.String(64), nullable=False, server_default=""),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
    sa.Column("completed_at", sa.DateTime(timezone=True), nullable=False),
)

# v2
environment_status = sa.Table(
    "reconciler_environment_status",
    metadata,
    sa.Column("environment", sa.String(63), primary_key=True),
    sa.Column("last_attempted_revision", sa.String(64)),
    sa.Column("last_applied_revision", sa.String(64)),
    sa.Column("converged", sa.Boolean),
    sa.Column("fingerprint", sa.String(64)),
    sa.Column("last_plan_id", sa.Integer),
    sa.Column("last_apply_at", sa.DateTime(timezone=True)),
    sa.Column("last_error", sa.Text),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)

# v3: the one persisted status of an environment, exactly as reconciler.status.EnvironmentStatus.to_json() gives it.
statuses = sa.Table(
    "reconciler_status",
    metadata,
    sa.Column("environment", sa.String(63), primary_key=True),
    sa.Column("document", sa.Text, nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
)
