"""What a desired-state file may contain: an allow-list of statement types, checked with pglast before anything runs.

Desired-state authors are not trusted (``plan`` runs on pull-request branches in CI). Their files are parsed with
PostgreSQL's own parser and every statement, and every statement nested in one (``CREATE SCHEMA ... CREATE
TABLE``, a function's ``SET`` clause), must be of a type on :data:`ALLOWED`: schema DDL, comments, grants,
policies, functions in trusted languages. Anything else is refused with a :class:`DesiredStateError` naming the
file and the line, before the first statement of the build runs. The list is default-deny: a statement type not
named here (``COPY``, ``DO``, ``CALL``, DML, ``SELECT``, role, database and system statements, ``LOAD``, event
triggers, foreign servers ...) is refused.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from pglast import ast, enums, parser

from .errors import DesiredStateError
from .model import DesiredState
from .sqltext import SourceStatement, parse_statements

DEFAULT_EXTENSIONS: tuple[str, ...] = ("pgcrypto", "citext", "uuid-ossp", "pg_trgm", "btree_gist")
"""Extensions a desired file may create unless the configuration says otherwise (all trusted in PostgreSQL 13+)."""

TRUSTED_LANGUAGES = frozenset({"sql", "plpgsql"})
"""Languages a desired function or procedure may be written in: neither reaches the host."""

SETTINGS_ALLOWED = frozenset({"search_path", "check_function_bodies", "client_min_messages"})
"""Settings a desired file (or a desired function's ``SET`` clause) may change. Not the timeouts, not the role."""

ALLOWED: frozenset[type[ast.Node]] = frozenset(
    {
        # schemas, tables, indexes, views, sequences, types, statistics
        ast.CreateSchemaStmt,
        ast.CreateStmt,
        ast.AlterTableStmt,
        ast.IndexStmt,
        ast.ViewStmt,
        ast.CreateTableAsStmt,  # materialized views only (checked below)
        ast.CreateSeqStmt,
        ast.AlterSeqStmt,
        ast.CreateEnumStmt,
        ast.AlterEnumStmt,
        ast.CompositeTypeStmt,
        ast.CreateRangeStmt,
        ast.CreateDomainStmt,
        ast.AlterDomainStmt,
        ast.DefineStmt,  # aggregates, operators, base types, collations, text search objects
        ast.CreateCastStmt,
        ast.CreateStatsStmt,
        ast.AlterStatsStmt,
        # functions, procedures and triggers (trusted languages only: checked below)
        ast.CreateFunctionStmt,
        ast.AlterFunctionStmt,
        ast.CreateTrigStmt,
        # comments, grants, policies
        ast.CommentStmt,
        ast.GrantStmt,
        ast.AlterDefaultPrivilegesStmt,
        ast.CreatePolicyStmt,
        ast.AlterPolicyStmt,
        # extensions on the allow-list (checked below)
        ast.CreateExtensionStmt,
        # renames, moves, drops of the file's own objects
        ast.RenameStmt,
        ast.AlterObjectSchemaStmt,
        ast.AlterOwnerStmt,
        ast.DropStmt,
        # session settings on SETTINGS_ALLOWED, and transaction brackets
        ast.VariableSetStmt,
        ast.TransactionStmt,
    }
)

ALLOWED_SUMMARY = (
    "desired-state files may hold schema DDL (schemas, tables, indexes, views, materialized views, sequences, "
    "types, domains), functions and procedures in sql or plpgsql, triggers, comments, grants, policies, "
    "extensions on the allow-list and SET of search_path, check_function_bodies or client_min_messages"
)


@dataclass(frozen=True)
class CheckedStatement:
    """A desired-state statement that passed the allow-list: the only kind the build executes."""

    file: str
    line: int
    sql: str
    as_admin: bool = False
    """A CREATE EXTENSION of an allowed extension and nothing else: the scratch admin runs it (untrusted extensions
    such as postgres_fdw need a superuser); every other statement runs as the build role."""
    batchable: bool = False
    """May run in one multi-statement execution with its neighbours (an implicit transaction): not a transaction
    bracket nor a SET (whose effect a surrounding transaction would change), not run as the admin."""


def _label(node: ast.Node) -> str:
    """A statement type for people: ``CopyStmt`` -> ``COPY``-like names where they are obvious."""
    names = {
        ast.CopyStmt: "COPY",
        ast.DoStmt: "DO",
        ast.CallStmt: "CALL",
        ast.LoadStmt: "LOAD",
        ast.InsertStmt: "INSERT",
        ast.UpdateStmt: "UPDATE",
        ast.DeleteStmt: "DELETE",
        ast.MergeStmt: "MERGE",
        ast.TruncateStmt: "TRUNCATE",
        ast.SelectStmt: "SELECT",
        ast.CreateRoleStmt: "CREATE ROLE",
        ast.AlterRoleStmt: "ALTER ROLE",
        ast.AlterSystemStmt: "ALTER SYSTEM",
        ast.CreatedbStmt: "CREATE DATABASE",
        ast.CreateEventTrigStmt: "CREATE EVENT TRIGGER",
        ast.GrantRoleStmt: "GRANT role",
    }
    return names.get(type(node), type(node).__name__.removesuffix("Stmt"))


def _function_language(node: ast.CreateFunctionStmt) -> str:
    for opt in node.options or ():
        if isinstance(opt, ast.DefElem) and opt.defname == "language" and isinstance(opt.arg, ast.String):
            return str(opt.arg.sval).lower()
    return "sql"  # a body written as RETURN ... or BEGIN ATOMIC ... END, which PostgreSQL requires to be SQL


def _refusal(node: ast.Node, extensions: frozenset[str]) -> str | None:
    """Why ``node`` may not run in a desired-state build, or None if it may."""
    if type(node) not in ALLOWED:
        return f"{_label(node)} is not allowed"
    if isinstance(node, ast.CreateTableAsStmt) and node.objtype != enums.ObjectType.OBJECT_MATVIEW:
        return "CREATE TABLE ... AS (rows, not schema) is not allowed"
    if isinstance(node, ast.CreateFunctionStmt) and (lang := _function_language(node)) not in TRUSTED_LANGUAGES:
        return f"functions in language {lang!r} are not allowed (only {', '.join(sorted(TRUSTED_LANGUAGES))})"
    if isinstance(node, ast.CreateExtensionStmt):
        name = str(node.extname)
        if name not in extensions:
            allowed = ", ".join(sorted(extensions)) or "none"
            return f"extension {name!r} is not on the allow-list (sandbox.extensions_allowed: {allowed})"
        return _extension_option_refusal(node)
    if isinstance(node, ast.VariableSetStmt) and node.name not in SETTINGS_ALLOWED:
        shown = "RESET ALL" if node.kind == enums.VariableSetKind.VAR_RESET_ALL else f"changing setting {node.name!r}"
        return f"{shown} is not allowed (only {', '.join(sorted(SETTINGS_ALLOWED))})"
    return None


def _extension_option_refusal(node: ast.CreateExtensionStmt, *, any_version: bool = False) -> str | None:
    """Why the options of an allowed ``CREATE EXTENSION`` may not run as the scratch admin, or None.

    Stops desired-state authors (and environment contents restored in a vetting clone) from using an allowed
    extension to reach further: CASCADE would create extensions not on the list, VERSION / FROM would pick an
    older install script, SCHEMA pointing into the system schemas would put the extension's objects there.
    """
    name = str(node.extname)
    for o in node.options or ():
        if not isinstance(o, ast.DefElem):
            continue
        if o.defname == "cascade":
            return f"CREATE EXTENSION {name} CASCADE is not allowed (create each extension it needs by name)"
        if o.defname in ("new_version", "old_version") and not any_version:
            return f"CREATE EXTENSION {name} VERSION/FROM is not allowed (the default version is installed)"
        schema = str(o.arg.sval) if o.defname == "schema" and isinstance(o.arg, ast.String) else ""
        if schema.startswith("pg_") or schema == "information_schema":
            return f"CREATE EXTENSION {name} SCHEMA {schema} is not allowed (only the database's own schemas)"
    return None


def runs_as_admin(sql: str, extensions: Sequence[str], *, any_version: bool = False) -> bool:
    """Whether ``sql`` is exactly one ``CREATE EXTENSION`` of an extension on ``extensions`` with safe options:
    the only statement the scratch admin runs for a desired file, an environment's dump or a plan replayed on a
    clone (``any_version``: a plan names the version the desired build installed, the default one)."""
    nodes = parser.parse_sql(sql)
    return len(nodes) == 1 and _admin_node(nodes[0].stmt, extensions, any_version=any_version)


def _admin_node(node: ast.Node | None, extensions: Sequence[str], *, any_version: bool = False) -> bool:
    """:func:`runs_as_admin` of one statement already parsed (``node``)."""
    if not isinstance(node, ast.CreateExtensionStmt):
        return False
    return str(node.extname) in extensions and _extension_option_refusal(node, any_version=any_version) is None


def _statements_in(node: ast.Node) -> Iterator[ast.Node]:
    """``node`` and what runs with it: a schema's elements, the settings of a function's ``SET`` clauses.

    Queries inside a view, a policy or a function body are not statements of the build: they are stored, not run
    (a materialized view's query runs, as the build role, under the scratch timeouts).
    """
    yield node
    if isinstance(node, ast.CreateSchemaStmt):
        for element in node.schemaElts or ():
            yield from _statements_in(element)
    options = node.options if isinstance(node, ast.CreateFunctionStmt) else None
    if isinstance(node, ast.AlterFunctionStmt):
        options = node.actions
    for opt in options or ():
        if isinstance(opt, ast.DefElem) and isinstance(opt.arg, ast.VariableSetStmt):
            yield opt.arg


def refusal(node: ast.Node, extensions: Sequence[str]) -> str | None:
    """Why a parsed desired-state statement may not run (the first refused statement nested in it), or None."""
    allowed_ext = frozenset(extensions)
    for inner in _statements_in(node):
        if why := _refusal(inner, allowed_ext):
            return why
    return None


_ALONE = (ast.TransactionStmt, ast.VariableSetStmt)
"""Statements a desired build runs by themselves (see :attr:`CheckedStatement.batchable`)."""


def check_desired(desired: DesiredState, extensions: Sequence[str]) -> list[CheckedStatement]:
    """Every statement of ``desired``, in build order, if each is allowed; else DesiredStateError at its file:line."""
    out: list[CheckedStatement] = []
    for f in desired.files:
        for stmt in parse_statements(f.text):
            _check_one(f.path, stmt, extensions)
            as_admin = _admin_node(stmt.node, extensions)
            batchable = stmt.node is not None and not as_admin and not isinstance(stmt.node, _ALONE)
            out.append(CheckedStatement(f.path, stmt.line, stmt.sql, as_admin, batchable))
    return out


def _check_one(path: str, stmt: SourceStatement, extensions: Sequence[str]) -> None:
    nodes = [stmt.node] if stmt.node is not None else [raw.stmt for raw in parser.parse_sql(stmt.sql)]
    for node in nodes:
        if node is not None and (why := refusal(node, extensions)):
            raise DesiredStateError(
                f"refusing the desired state at {path}:{stmt.line}: {why}; {ALLOWED_SUMMARY}",
                file=path,
                line=stmt.line,
            )
