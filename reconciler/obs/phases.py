"""Timing of the phases of a reconcile (inspect, diff, vet, apply) without coupling the library to metrics.

The library marks its phases with ``with phase("diff"): ...``; that costs nothing unless a caller has installed
an observer for the current context (thread) with :func:`observing`. The daemon installs one per reconcile that
feeds a histogram.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar

PhaseObserver = Callable[[str, float], None]

_observer: ContextVar[PhaseObserver | None] = ContextVar("reconciler_phase_observer", default=None)


@contextlib.contextmanager
def phase(name: str) -> Iterator[None]:
    """Time the block and report ``(name, seconds)`` to the current observer, if any (also when it raises)."""
    observer = _observer.get()
    if observer is None:
        yield
        return
    started = time.perf_counter()
    try:
        yield
    finally:
        observer(name, time.perf_counter() - started)


@contextlib.contextmanager
def observing(observer: PhaseObserver) -> Iterator[None]:
    """Install ``observer`` for phases run in this context until the block ends."""
    token = _observer.set(observer)
    try:
        yield
    finally:
        _observer.reset(token)
