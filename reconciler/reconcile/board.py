"""The latest status of every environment, kept in memory for the workers and the API.

The board is a cache of the store: the daemon loads it at start (:meth:`StatusBoard.load`), :meth:`put` changes
the cache only (the short-lived ``Reconciling`` status while a pass runs), and :meth:`save` writes a finished
status through to the store, so a restart resumes backoff and Stalled where they were.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from datetime import datetime

from ..status import EnvironmentStatus, initial_status

SaveFn = Callable[[EnvironmentStatus], None]


class StatusBoard:
    """Thread-safe; without ``save`` it is memory only (tests, benchmarks)."""

    def __init__(self, save: SaveFn | None = None) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, EnvironmentStatus] = {}
        self._save = save

    def load(self, statuses: Mapping[str, EnvironmentStatus]) -> None:
        """Take over persisted statuses (replacing what the cache holds for those environments)."""
        with self._lock:
            self._items.update(statuses)

    def ensure(self, environment: str, at: datetime) -> EnvironmentStatus:
        with self._lock:
            return self._items.setdefault(environment, initial_status(environment, at))

    def get(self, environment: str) -> EnvironmentStatus | None:
        with self._lock:
            return self._items.get(environment)

    def put(self, status: EnvironmentStatus) -> None:
        """Change the cache only."""
        with self._lock:
            self._items[status.environment] = status

    def save(self, status: EnvironmentStatus) -> None:
        """Change the cache and write the status through to the store (raises what the store raises)."""
        self.put(status)
        if self._save is not None:
            self._save(status)

    def remove(self, environment: str) -> None:
        with self._lock:
            self._items.pop(environment, None)

    def all(self) -> dict[str, EnvironmentStatus]:
        with self._lock:
            return dict(self._items)
