"""Plans, approvals and the audit trail, kept with SQLAlchemy Core (SQLite by default, PostgreSQL for HA)."""

from .store import AuditHead, AuditRecord, PlanRecord, Store, open_store

__all__ = ["AuditHead", "AuditRecord", "PlanRecord", "Store", "open_store"]
