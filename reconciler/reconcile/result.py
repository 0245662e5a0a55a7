"""The request and result of one reconcile (controller-runtime's ``reconcile.Request`` and ``reconcile.Result``)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum


@dataclass(frozen=True)
class Request:
    """What to reconcile: an environment's name, never a cached plan (the loop is level-triggered)."""

    environment: str


class Outcome(StrEnum):
    """How a reconcile ended; the values are the ``outcome`` label of ``schema_reconciler_reconciles_total``."""

    SUCCESS = "success"  # the environment matches the desired state: next check after the interval
    REQUEUE = "requeue"  # drift remains (awaiting approval, outside a window, suspended): check again later
    ERROR = "error"  # a retryable error: retry after an exponential backoff
    TERMINAL = "terminal"  # retrying will not help: Stalled until the configuration or desired state changes


@dataclass(frozen=True)
class Result:
    outcome: Outcome
    requeue_after: timedelta | None  # None: do not requeue (terminal)
    error: str | None = None
