"""Policy: decide, per environment, which statements may run unattended."""

from __future__ import annotations

from collections.abc import Iterable

from .config import EnvironmentConfig
from .model import Decision, Hazard, HazardKind

# Without configuration, these never run unattended anywhere.
NEEDS_APPROVAL_BY_DEFAULT = frozenset({HazardKind.DESTRUCTIVE, HazardKind.UNPARSEABLE})


def decide(hazards: Iterable[Hazard], env: EnvironmentConfig) -> Decision:
    """The decision for one statement with ``hazards`` in environment ``env``."""
    for h in hazards:
        if h.kind in NEEDS_APPROVAL_BY_DEFAULT:
            return Decision.NEEDS_APPROVAL
    return Decision.AUTO
