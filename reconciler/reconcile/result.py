"""The request and result of one reconcile (controller-runtime's ``reconcile.Request`` and ``reconcile.Result``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from ..status import Outcome

__all__ = ["Outcome", "Request", "Result"]


@dataclass(frozen=True)
class Request:
    """What to reconcile: an environment's name, never a cached plan (the loop is level-triggered)."""

    environment: str


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    requeue_after: timedelta | None  # None: do not requeue (terminal)
    error: str | None = None
