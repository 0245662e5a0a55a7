"""The store's tables (SQLAlchemy Core), identical on SQLite and PostgreSQL."""

from __future__ import annotations

import sqlalchemy as sa

STORE_VERSION = 1

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
    sa.Column("statements", sa.Text, nullable=False),  # JSON list of {sql, hazards, decision}
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("decided_by", sa.String(128)),
    sa.Column("decided_at", sa.DateTime(timezone=True)),
    sa.Column("reason", sa.Text),
    sa.Column("applied_at", sa.DateTime(timezone=True)),
    sa.Column("error", sa.Text),
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
