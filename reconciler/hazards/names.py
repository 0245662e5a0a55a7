"""Helpers that turn pglast nodes into readable qualified names.

Names are ``schema.name`` without quotes; an unqualified name is taken to be in ``public`` (migra qualifies every
name it writes, so this only matters for hand-written statements).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pglast import ast, enums

DEFAULT_SCHEMA = "public"


def relname(rv: Any) -> str:
    """``schema.name`` of a RangeVar (``name`` alone when unqualified), as written."""
    if rv is None:
        return "?"
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


def qualified(rv: Any) -> str:
    """``schema.name`` of a RangeVar, with ``public`` for an unqualified name."""
    if rv is None:
        return "?"
    return f"{rv.schemaname or DEFAULT_SCHEMA}.{rv.relname}"


def strings(names: Sequence[Any] | None) -> list[str]:
    """The ``sval`` of each String node in ``names``."""
    return [str(n.sval) for n in names or () if isinstance(n, ast.String)]


def qualified_name(names: Sequence[Any] | None) -> str:
    """``schema.name`` from a list of String nodes (``[name]`` or ``[schema, name]``)."""
    parts = strings(names)
    if not parts:
        return "?"
    if len(parts) == 1:
        return f"{DEFAULT_SCHEMA}.{parts[0]}"
    return ".".join(parts[-2:])


def qualified_child(names: Sequence[Any] | None) -> tuple[str, str]:
    """``(schema.table, name)`` from ``[schema, table, name]`` or ``[table, name]`` (triggers, policies, rules)."""
    parts = strings(names)
    if len(parts) < 2:
        return "?", parts[0] if parts else "?"
    return qualified_name([ast.String(p) for p in parts[:-1]]), parts[-1]


def object_name(obj: Any) -> str:
    """A readable name for one item of ``DropStmt.objects``."""
    if isinstance(obj, ast.TypeName):
        return ".".join(n.sval for n in obj.names or ())
    if isinstance(obj, ast.String):
        return str(obj.sval)
    if isinstance(obj, tuple | list):
        return ".".join(object_name(o) for o in obj)
    if isinstance(obj, ast.ObjectWithArgs):
        return ".".join(n.sval for n in obj.objname or ()) + "(...)"
    return str(obj)


def dropped_name(obj: Any) -> str:
    """``schema.name`` of one item of ``DropStmt.objects`` (relations, types, functions, schemas ...)."""
    if isinstance(obj, ast.TypeName):
        return qualified_name(obj.names)
    if isinstance(obj, ast.ObjectWithArgs):
        return qualified_name(obj.objname)
    if isinstance(obj, ast.String):
        return str(obj.sval)
    if isinstance(obj, tuple | list):
        return qualified_name(obj)
    return str(obj)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(name: str) -> str:
    """``"schema"."name"`` from ``schema.name``."""
    schema, _, rel = name.partition(".")
    return f"{quote_ident(schema)}.{quote_ident(rel)}" if rel else quote_ident(schema)


def added_constraint(cmd: Any) -> Any | None:
    """The Constraint an ``ALTER TABLE ... ADD CONSTRAINT`` command adds, or None for any other command."""
    if cmd.subtype == enums.AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        return cmd.def_
    return None


def validated_constraint(cmd: Any, contype: Any) -> Any | None:
    """The constraint of type ``contype`` that an ``ADD CONSTRAINT`` command adds and validates at once (no NOT VALID)."""
    con = added_constraint(cmd)
    return con if con is not None and con.contype == contype and not con.skip_validation else None


def validated_constraints(commands: Iterable[tuple[str, Any]], contype: Any) -> Iterator[tuple[str, Any]]:
    """(table, constraint) for each of the (table, command) pairs that adds and validates a ``contype`` constraint."""
    for table, cmd in commands:
        con = validated_constraint(cmd, contype)
        if con is not None:
            yield table, con


def alter_commands(node: Any, *subtypes: Any) -> Iterator[Any]:
    """The commands of an ALTER TABLE ``node`` of one of ``subtypes``."""
    return (cmd for cmd in node.cmds or () if cmd.subtype in subtypes)


def subcommands(commands: Iterable[tuple[str, Any]], *subtypes: Any) -> Iterator[tuple[str, Any]]:
    """The (table, command) pairs whose command is of one of ``subtypes``."""
    return ((table, cmd) for table, cmd in commands if cmd.subtype in subtypes)
