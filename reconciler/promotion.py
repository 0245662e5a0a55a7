"""Promotion: a desired revision reaches an environment only after every earlier one converged on it.

``promotion: [dev, staging, prod]`` orders environments. An environment has converged on a revision when its
persisted status (:class:`~reconciler.status.EnvironmentStatus`, written by every daemon pass and CLI apply)
records it as ``last_applied_revision``: the revision it was last in sync with. ``reconciler promote`` and the
daemon ask the same gate, :func:`waiting_for`.
"""

from __future__ import annotations

from .applier import ApplyResult
from .config import Config
from .errors import PromotionError
from .service import Reconciler
from .status import StatusStore


def waiting_for(config: Config, store: StatusStore, environment: str, revision: str) -> str | None:
    """Why ``revision`` may not be applied to ``environment`` yet (None: it may)."""
    if environment not in config.promotion:
        return None
    for earlier in config.promotion[: config.promotion.index(environment)]:
        status = store.load_status(earlier)
        if status is None or status.last_applied_revision != revision:
            return f"environment {earlier!r} has not converged on revision {revision[:12]} yet"
    return None


def promote(reconciler: Reconciler, revision: str, to: str) -> ApplyResult:
    """Apply the desired state to ``to`` if it is ``revision`` and every earlier environment converged on it."""
    desired = reconciler.load_desired()
    doing = f"promoting revision {revision[:12]} to environment {to!r}"
    reconciler.target(to)  # an unknown environment is a configuration error
    if len(revision) < 7 or not desired.revision.startswith(revision):
        raise PromotionError(
            f"{doing}: refused, the desired state is revision {desired.short_revision}; nothing was applied"
        )
    why = waiting_for(reconciler.config, reconciler.store, to, desired.revision)
    if why is not None:
        raise PromotionError(f"{doing}: refused, {why}; nothing was applied")
    return reconciler.apply(to)
