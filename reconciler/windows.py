"""Maintenance windows: may an environment be changed at a given time, and when does the next window open."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from .config import MaintenanceWindow
from .cron import CronSpec, next_start_after, parse_cron, window_open_at


@functools.lru_cache(maxsize=256)
def _spec(expr: str) -> CronSpec:
    return parse_cron(expr)


@functools.lru_cache(maxsize=64)
def _zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def window_open(windows: Sequence[MaintenanceWindow], at: datetime) -> bool:
    """True inside any window; an environment without windows may be changed at any time."""
    if not windows:
        return True
    return any(window_open_at(_spec(w.cron), w.duration, at, _zone(w.timezone)) for w in windows)


def next_window_start(windows: Sequence[MaintenanceWindow], at: datetime, within: timedelta) -> datetime | None:
    """The earliest window start after ``at`` and within ``within`` of it, or None."""
    starts = [s for w in windows if (s := next_start_after(_spec(w.cron), at, _zone(w.timezone), within))]
    return min(starts) if starts else None
