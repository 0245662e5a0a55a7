"""The only module that imports migra: turn two inspections into an ordered list of SQL statements."""

from __future__ import annotations

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", UserWarning)
    from migra import Migration

from .inspect import Inspection
from .sqltext import split_statements


def diff(current: Inspection, desired: Inspection, *, privileges: bool = False) -> list[str]:
    """Statements that take ``current`` to ``desired``, one SQL statement per item, without trailing ``;``."""
    m = Migration(current, desired)
    m.set_safety(False)
    m.add_all_changes(privileges=privileges)
    out: list[str] = []
    for chunk in m.statements:
        text = chunk.strip()
        if not text:
            continue
        out.extend(s.sql for s in split_statements(text))
    return out
