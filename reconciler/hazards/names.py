"""Helpers that turn pglast nodes into readable qualified names.

Lookups are keyed by :class:`~reconciler.model.QualifiedName` (schema, name), never by a dotted string; its text
quotes what needs quoting. An unqualified name is taken to be in ``public`` (migra qualifies every name it writes,
so this only matters for hand-written statements).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from pglast import ast, enums

from ..model import QualifiedName

DEFAULT_SCHEMA = "public"
UNKNOWN = QualifiedName("?", "?")  # a name the parse tree does not carry


def relname(rv: Any) -> str:
    """``schema.name`` of a RangeVar (``name`` alone when unqualified), as written."""
    if rv is None:
        return "?"
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


def qualified(rv: Any) -> QualifiedName:
    """(schema, name) of a RangeVar, with ``public`` for an unqualified name."""
    if rv is None:
        return UNKNOWN
    return QualifiedName(str(rv.schemaname or DEFAULT_SCHEMA), str(rv.relname))


def strings(names: Sequence[Any] | None) -> list[str]:
    """The ``sval`` of each String node in ``names``."""
    return [str(n.sval) for n in names or () if isinstance(n, ast.String)]


def qualified_name(names: Sequence[Any] | None) -> QualifiedName:
    """(schema, name) from a list of String nodes (``[name]`` or ``[schema, name]``)."""
    parts = strings(names)
    if not parts:
        return UNKNOWN
    if len(parts) == 1:
        return QualifiedName(DEFAULT_SCHEMA, parts[0])
    return QualifiedName(parts[-2], parts[-1])


def qualified_child(names: Sequence[Any] | None) -> tuple[QualifiedName, str]:
    """``((schema, table), name)`` from ``[schema, table, name]`` or ``[table, name]`` (triggers, policies, rules)."""
    parts = strings(names)
    if len(parts) < 2:
        return UNKNOWN, parts[0] if parts else "?"
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


def dropped_key(obj: Any) -> QualifiedName | None:
    """(schema, name) of one item of ``DropStmt.objects`` that lives in a schema (relations, types, functions);
    None for a schema, an extension and the like."""
    if isinstance(obj, ast.TypeName):
        return qualified_name(obj.names)
    if isinstance(obj, ast.ObjectWithArgs):
        return qualified_name(obj.objname)
    if isinstance(obj, tuple | list):
        return qualified_name(obj)
    return None


def dropped_name(obj: Any) -> str:
    """The text of one item of ``DropStmt.objects`` (relations, types, functions, schemas ...): the quoting text of
    its (schema, name), or the bare name of an object outside schemas."""
    key = dropped_key(obj)
    if key is not None:
        return str(key)
    return str(obj.sval) if isinstance(obj, ast.String) else str(obj)


def quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def quote_qualified(name: QualifiedName) -> str:
    """``"schema"."name"`` of ``name``."""
    return f"{quote_ident(name.schema)}.{quote_ident(name.name)}"


def added_constraint(cmd: Any) -> Any | None:
    """The Constraint an ``ALTER TABLE ... ADD CONSTRAINT`` command adds, or None for any other command."""
    if cmd.subtype == enums.AlterTableType.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        return cmd.def_
    return None


def validated_constraint(cmd: Any, contype: Any) -> Any | None:
    """The constraint of type ``contype`` that an ``ADD CONSTRAINT`` command adds and validates at once (no NOT VALID)."""
    con = added_constraint(cmd)
    return con if con is not None and con.contype == contype and not con.skip_validation else None


def validated_constraints(
    commands: Iterable[tuple[QualifiedName, Any]], contype: Any
) -> Iterator[tuple[QualifiedName, Any]]:
    """(table, constraint) for each of the (table, command) pairs that adds and validates a ``contype`` constraint."""
    for table, cmd in commands:
        con = validated_constraint(cmd, contype)
        if con is not None:
            yield table, con


def alter_commands(node: Any, *subtypes: Any) -> Iterator[Any]:
    """The commands of an ALTER TABLE ``node`` of one of ``subtypes``."""
    return (cmd for cmd in node.cmds or () if cmd.subtype in subtypes)


def subcommands(commands: Iterable[tuple[QualifiedName, Any]], *subtypes: Any) -> Iterator[tuple[QualifiedName, Any]]:
    """The (table, command) pairs whose command is of one of ``subtypes``."""
    return ((table, cmd) for table, cmd in commands if cmd.subtype in subtypes)
