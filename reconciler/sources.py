"""Where the desired state comes from: a folder of SQL files, a command that prints SQL, or an SQLAlchemy MetaData.

Whatever the source, the result is a :class:`~reconciler.model.DesiredState`. For a command or a MetaData it holds
one file (named after its source) with the SQL produced, and the revision is the sha256 of that SQL, so two runs
that print the same schema are the same revision. Nothing is built or applied here.

The command and the module are named by the configuration file, whose author is trusted like the operator; what
they print is desired-state SQL and is treated like any desired-state file (checked by the parser here, built only
in a scratch database).
"""

from __future__ import annotations

import hashlib
import importlib
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql
from sqlalchemy.dialects.postgresql.named_types import CreateEnumType

from .config import CommandSource, DesiredSource, SqlAlchemySource
from .desired import check_syntax, load_desired
from .errors import DesiredStateError
from .model import DesiredState, SqlFile


def load_source(source: DesiredSource, known_good: Callable[[str], bool] | None = None) -> DesiredState:
    """The desired state that ``source`` (a folder path, a command or an SQLAlchemy MetaData) gives (a folder's
    syntax is not checked again for a revision that ``known_good`` accepts: :func:`.desired.load_desired`)."""
    if isinstance(source, str):
        return load_desired(source, known_good)
    if isinstance(source, CommandSource):
        return from_sql(command_label(source), run_command(source))
    return from_sql(f"sqlalchemy:{source.sqlalchemy}", render_metadata(source))


def command_label(source: CommandSource) -> str:
    return "command:" + " ".join(source.command)


def from_sql(label: str, sql: str) -> DesiredState:
    """A desired state of one SQL text; its syntax is checked, its revision is the sha256 of the text."""
    check_syntax(sql, label, f"in the output of {label} at line ")
    if not sql.strip():
        raise DesiredStateError(f"reading desired state: {label} produced no SQL")
    revision = hashlib.sha256(sql.encode()).hexdigest()
    return DesiredState(root=label, files=(SqlFile(path=label, text=sql),), revision=revision)


def run_command(source: CommandSource) -> str:
    """The standard output of the source's command; a failure names the command and its exit status."""
    shown = " ".join(source.command)
    try:
        done = subprocess.run(
            list(source.command),
            cwd=source.cwd,
            capture_output=True,
            text=True,
            timeout=source.timeout.total_seconds(),
            check=False,
        )
    except FileNotFoundError:
        raise DesiredStateError(f"reading desired state: command {shown!r} not found") from None
    except subprocess.TimeoutExpired:
        raise DesiredStateError(
            f"reading desired state: command {shown!r} did not finish within {source.timeout.total_seconds():g}s"
        ) from None
    except OSError as exc:
        raise DesiredStateError(f"reading desired state: command {shown!r} cannot run: {exc.strerror}") from exc
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] if done.stderr.strip() else []
        detail = f": {tail[0]}" if tail else ""
        raise DesiredStateError(
            f"reading desired state: command {shown!r} failed with exit status {done.returncode}{detail}"
        )
    return done.stdout


def _import_metadata(source: SqlAlchemySource) -> sa.MetaData:
    module_name, _, attribute = source.sqlalchemy.partition(":")
    if source.path and source.path not in sys.path:
        sys.path.insert(0, source.path)
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except Exception as exc:
        raise DesiredStateError(
            f"reading desired state: cannot load {source.sqlalchemy}: {type(exc).__name__}: {exc}"
        ) from exc
    if not isinstance(obj, sa.MetaData):
        raise DesiredStateError(
            f"reading desired state: {source.sqlalchemy} is a {type(obj).__name__}, not an SQLAlchemy MetaData"
        )
    return obj


def render_metadata(source: SqlAlchemySource) -> str:
    """DDL of the MetaData, compiled by SQLAlchemy for PostgreSQL: schemas, enum types, tables, indexes."""
    metadata = _import_metadata(source)
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    parts: list[str] = []
    schemas = sorted({t.schema for t in metadata.sorted_tables if t.schema and t.schema != "public"})
    parts += [f"create schema if not exists {dialect.identifier_preparer.quote_schema(s)}" for s in schemas]
    enums: dict[str, Any] = {}
    for table in metadata.sorted_tables:
        for column in table.columns:
            if isinstance(column.type, sa.Enum) and column.type.name:
                enums.setdefault(column.type.name, column.type)
    parts += [str(CreateEnumType(e).compile(dialect=dialect)).strip() for _, e in sorted(enums.items())]
    for table in metadata.sorted_tables:
        parts.append(str(sa.schema.CreateTable(table).compile(dialect=dialect)).strip())
        for index in sorted(table.indexes, key=lambda i: str(i.name)):
            parts.append(str(sa.schema.CreateIndex(index).compile(dialect=dialect)).strip())
    return "".join(f"{p};\n\n" for p in parts)
