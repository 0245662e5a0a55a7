"""Old import path of :mod:`reconciler.windows`, kept only while ``service.py`` still imports it from here."""

from __future__ import annotations

from ..windows import next_window_start, window_open

__all__ = ["next_window_start", "window_open"]
