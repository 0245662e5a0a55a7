"""Exponential backoff after retryable errors, and jitter for requeues. Pure functions."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta


def backoff_delay(failures: int, base: timedelta, cap: timedelta) -> timedelta:
    """The wait after the ``failures``-th consecutive retryable error: ``base * 2**(failures-1)``, at most ``cap``."""
    if failures <= 0:
        return timedelta(0)
    # Beyond 2**30 the product only overflows; the cap has long been reached.
    factor = 2 ** min(failures - 1, 30)
    delay: timedelta = base * factor
    return min(cap, delay)


def jittered(delay: timedelta, ratio: float, random: Callable[[], float]) -> timedelta:
    """``delay`` stretched by up to ``ratio`` of itself (``random()`` in [0, 1)), so environments spread out."""
    if ratio <= 0 or delay <= timedelta(0):
        return delay
    return delay * (1.0 + ratio * random())
