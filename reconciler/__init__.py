"""Schema Reconciler: keep PostgreSQL schemas in line with desired-state SQL, Kubernetes style."""

__version__ = "0.1.0"
