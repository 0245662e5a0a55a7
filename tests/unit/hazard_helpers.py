"""Shared data for the table-driven hazard tests: figures of tables, and running the engine on a plan."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta

from reconciler.hazards import Examined, LargeTable, StepTimeouts, examine
from reconciler.model import QualifiedName, TableStats

# The timeouts the engine gives steps in these tests (the configuration's defaults).
TIMEOUTS = StepTimeouts(
    statement=timedelta(minutes=15), concurrent_statement=timedelta(hours=2), lock=timedelta(seconds=5)
)

EMPTY = TableStats(rows=0, bytes=8192, heap_bytes=0)
SMALL = TableStats(rows=200, bytes=48 * 1024, heap_bytes=16 * 1024)
LARGE = TableStats(rows=5_000_000, bytes=2 * 1024**3, heap_bytes=1800 * 1024**2)
UNANALYZED = TableStats(rows=None, bytes=8192, heap_bytes=8192)  # rows, never analyzed


def table(base: TableStats, **changes: object) -> TableStats:
    """``base`` with some fields changed (columns, kind, indexes ...)."""
    fields = {
        "rows": base.rows,
        "bytes": base.bytes,
        "heap_bytes": base.heap_bytes,
        "kind": base.kind,
        "columns": dict(base.columns),
        "indexes": base.indexes,
        "invalid_indexes": base.invalid_indexes,
        "dependants": base.dependants,
        "has_grants": base.has_grants,
    }
    fields.update(changes)
    return TableStats(**fields)  # type: ignore[arg-type]


Stats = Mapping[str, TableStats] | Mapping[QualifiedName, TableStats]


def keyed(stats: Stats | None) -> dict[QualifiedName, TableStats]:
    """Figures keyed as the engine keys them; a test's ``"schema.name"`` key is a plain (schema, name) pair."""
    out: dict[QualifiedName, TableStats] = {}
    for key, st in (stats or {}).items():
        out[key if isinstance(key, QualifiedName) else QualifiedName(*key.rsplit(".", 1))] = st
    return out


def codes(
    sqls: Sequence[str],
    stats: Stats | None = None,
    prefix: str = "",
    *,
    online: bool = True,
) -> list[tuple[str, ...]]:
    """Per statement, the hazard codes starting with ``prefix``."""
    return [tuple(h.code for h in e.hazards if h.code.startswith(prefix)) for e in run(sqls, stats, online=online)]


def messages(sqls: Sequence[str], stats: Stats | None = None, prefix: str = "") -> str:
    """Every hazard message starting with ``prefix`` of a plan, one per line."""
    return "\n".join(f"{h.code} {h.message}" for e in run(sqls, stats) for h in e.hazards if h.code.startswith(prefix))


def run(
    sqls: Sequence[str],
    stats: Stats | None = None,
    *,
    large: LargeTable | None = None,
    online: bool = True,
) -> list[Examined]:
    """The engine on a plan, with the test timeouts."""
    return examine(sqls, keyed(stats), timeouts=TIMEOUTS, large=large or LargeTable(), online_rewrites=online)
