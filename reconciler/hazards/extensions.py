"""EX1xx: extensions installed, updated or moved. Their scripts run with elevated rights and may change anything."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, enums

from ..model import HazardKind, Severity
from .context import ParsedStatement, PlanContext
from .registry import check


def _option(node: Any, name: str) -> str | None:
    for opt in node.options or ():
        if isinstance(opt, ast.DefElem) and opt.defname == name and opt.arg is not None:
            return str(getattr(opt.arg, "sval", opt.arg))
    return None


@check("EX101", HazardKind.EXTENSION, Severity.WARNING, "extension version changed", nodes=["AlterExtensionStmt"])
def extension_updated(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    version = _option(node, "new_version")
    yield (
        f"updates extension {node.extname} to version {version or 'the default'}: its update script runs "
        "(it may rewrite or lock the objects it owns); the server must have that version installed"
    )


@check("EX102", HazardKind.EXTENSION, Severity.INFO, "extension created", nodes=["CreateExtensionStmt"])
def extension_created(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    version = _option(node, "new_version")
    schema = _option(node, "schema")
    where = f" in schema {schema}" if schema else ""
    yield (
        f"installs extension {node.extname}{' version ' + version if version else ''}{where}: its script runs, "
        "and the server must have the extension's files"
    )


@check(
    "EX103",
    HazardKind.EXTENSION,
    Severity.WARNING,
    "extension moved to another schema",
    nodes=["AlterObjectSchemaStmt"],
)
def extension_moved(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if node.objectType == enums.ObjectType.OBJECT_EXTENSION:
        name = getattr(node.object, "sval", "?")
        yield f"moves extension {name} and its objects to schema {node.newschema}: unqualified references may break"
