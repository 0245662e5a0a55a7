"""A versioned SQL migration file from a source schema to the desired state, for teams that keep migrations.

The source is an environment (its schema as it is), a folder of versioned migrations replayed in a scratch
database, or an empty database. migra's difference is classified by the hazard engine as for a plan: each
statement carries its hazards as comments, and runs of statements PostgreSQL allows in a transaction are wrapped
in ``BEGIN``/``COMMIT``; steps it forbids there (``CREATE INDEX CONCURRENTLY`` ...) stand in sections of their own,
in plan order. The file is only written: nothing is applied.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from .config import EnvironmentConfig
from .desired import load_desired
from .diff import diff
from .errors import PlanError
from .inspect import Inspection, inspect_database
from .model import DesiredState, ExecStep, Statement, fields_json
from .planning import classify, inspect_target, read_plan_figures
from .sandbox import check_desired
from .scratch import ScratchServer, run_checked
from .target import Target

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,79}$")


@dataclass(frozen=True)
class MigrationFile:
    path: str
    source: str
    desired_revision: str
    statements: int
    concurrent_steps: int

    def to_json(self) -> dict[str, Any]:
        return fields_json(self)


def source_statements(
    scratch: ScratchServer, desired: DesiredState, *, target: Target | None = None, from_dir: str | None = None
) -> tuple[str, list[Statement]]:
    """A label of the source and the classified statements that take it to ``desired``."""
    want = scratch.build_desired(desired).inspection
    if target is not None:
        sqls = diff(inspect_target(scratch, target), want)
        return f"environment {target.name}", classify(sqls, target.env, figures=read_plan_figures(target, sqls))
    label = f"migrations folder {from_dir}" if from_dir else "an empty database"
    sqls = diff(_replayed(scratch, from_dir), want)
    return label, classify(sqls, EnvironmentConfig(dsn="-"))  # figures unknown: every table counts as large


def _replayed(scratch: ScratchServer, from_dir: str | None) -> Inspection:
    """The schema an empty scratch database holds after the folder's migrations ran in order."""
    with scratch.temporary_database() as (name, dsn):
        if from_dir:  # migration files are untrusted like desired-state files: the same allow-list and build role
            statements = check_desired(load_desired(from_dir), scratch.sandbox.extensions_allowed)
            admin = scratch.admin_dsn_in(name)
            run_checked(dsn, statements, scratch.sandbox, connect_timeout=scratch.connect_timeout, admin_dsn=admin)
        return inspect_database(dsn, what="inspecting the replayed migrations")


def write_migration(
    name: str, out_dir: str | Path, source: str, desired: DesiredState, statements: Sequence[Statement], now: datetime
) -> MigrationFile:
    """Write ``<UTC timestamp>_<name>.sql`` into ``out_dir``; refuses to overwrite a file."""
    if not _NAME.match(name):
        raise PlanError(f"writing a migration: name {name!r} must be letters, digits, '_' or '-' (at most 80)")
    path = Path(out_dir) / f"{now.strftime('%Y%m%d%H%M%S')}_{name}.sql"
    if path.exists():
        raise PlanError(f"writing a migration: {path} exists already")
    header = [
        f"-- Migration {name}: from {source} to desired revision {desired.short_revision}.",
        "-- Written by `reconciler migration`; hazards are noted above each statement.",
        "",
    ]
    body = list(_sections(statements)) if statements else ["-- Nothing to do: the source matches the desired state."]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(header + body) + "\n", encoding="utf-8")
    concurrent = sum(1 for s in statements for e in s.steps if not e.transactional)
    return MigrationFile(str(path), source, desired.revision, len(statements), concurrent)


def _comments(s: Statement) -> list[str]:
    lines = [f"-- {h.code} {h.kind.value} {h.severity.value}: {h.message}" for h in s.hazards]
    if s.rewritten:
        lines.append(f"-- online-safe form of: {s.sql}")
    return [" ".join(line.split()) for line in lines]  # one line each


def _sections(statements: Sequence[Statement]) -> Iterator[str]:
    """Runs of transactional steps in BEGIN/COMMIT; each non-transactional step in a section of its own."""
    open_tx = False
    for s in statements:
        for i, step in enumerate(s.steps):
            if step.transactional and not open_tx:
                yield "BEGIN;"
                yield ""
                open_tx = True
            if not step.transactional and open_tx:
                yield "COMMIT;"
                yield ""
                open_tx = False
            yield from _step(s, step, first=i == 0)
    if open_tx:
        yield "COMMIT;"


def _step(s: Statement, step: ExecStep, *, first: bool) -> Iterator[str]:
    if not step.transactional:
        yield "-- Concurrent step: PostgreSQL does not allow it in a transaction; it runs on its own."
    if first:
        yield from _comments(s)
    yield f"{step.sql};"
    yield ""
