"""Helpers that turn pglast nodes into readable qualified names."""

from __future__ import annotations

from typing import Any

from pglast import ast


def relname(rv: Any) -> str:
    """``schema.name`` of a RangeVar (``name`` alone when unqualified)."""
    if rv is None:
        return "?"
    return f"{rv.schemaname}.{rv.relname}" if rv.schemaname else str(rv.relname)


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
