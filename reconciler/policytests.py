"""Declarative row-level security tests, run against the desired state built in a scratch database.

A test file (YAML) holds fixture rows, inserted by the owner (the scratch server's user, which bypasses RLS), and
cases. Each case runs in a transaction of its own, rolled back afterwards, as a database role (``role``, default a
throwaway role granted every table, sequence and function of the desired build, so that only the policies decide)
with its JWT claims in ``request.jwt.claims``, and expects exactly one of: ``rows`` (the result's rows, any order),
``count`` (rows returned or touched) or ``error`` (an SQLSTATE such as ``42501``, or a part of the message).
``owner: true`` runs a case as the owner instead (what triggers refuse even to the owner)::

    fixtures:
      public.users:
        - {id: 00000000-0000-0000-0000-00000000000a, handle: alice, email: a@x, display_name: Alice}
    cases:
      - name: a participant sees only their own profile
        claims: {sub: 00000000-0000-0000-0000-00000000000a, role: participant}
        query: select handle from public.users
        rows: [{handle: alice}]

Test files and their queries are written by the desired state's authors, whom nothing here trusts:

- a case's SQL is one statement of an allowed shape, checked with pglast when the file is read: ``SELECT``
  (without ``INTO``), ``INSERT``, ``UPDATE``, ``DELETE``, or ``SET ROLE`` to the role the case names; anything
  else (``COPY``, ``CREATE ROLE``, ``RESET ROLE``, ``SET SESSION AUTHORIZATION`` ...) refuses the file;
- cases run in a scratch copy of the build, connected as that copy's unprivileged build role (which owns its
  objects: an ``owner: true`` case runs as it), never as the scratch admin: ``RESET ROLE``, ``set_config('role',
  ...)`` or a function call lead back to that role, which cannot create roles, run programs, read server files
  or reach another database;
- a case's role is granted to the build role only when it is as unprivileged (no superuser, create-role,
  create-db, replication or bypass-RLS, and no member of a ``pg_`` role);
- each case runs with a statement timeout, in a transaction that is always rolled back.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pglast import ast, enums, parser

from .db import Connection, connect, database_errors, quote_ident, with_dbname
from .errors import DatabaseError, PolicyTestFileError
from .model import DesiredState
from .scratch import ScratchServer
from .sqltext import SqlSyntaxError, split_statements

CASE_TIMEOUT_MS = 30_000
_EXPECTATIONS = ("rows", "count", "error")
_CASE_KEYS = {"name", "role", "owner", "claims", "query", *_EXPECTATIONS}


@dataclass(frozen=True)
class PolicyCase:
    """One case: who runs ``query`` and what must come of it."""

    name: str
    query: str
    claims: Mapping[str, Any] | None = None
    role: str | None = None
    owner: bool = False
    rows: tuple[Mapping[str, Any], ...] | None = None
    count: int | None = None
    error: str | None = None


@dataclass(frozen=True)
class PolicySuite:
    """One test file: fixture rows per table (inserted in file order) and its cases."""

    path: str
    fixtures: tuple[tuple[str, tuple[Mapping[str, Any], ...]], ...]
    cases: tuple[PolicyCase, ...]


@dataclass(frozen=True)
class CaseResult:
    file: str
    name: str
    passed: bool
    message: str
    seconds: float

    def to_json(self) -> dict[str, Any]:
        return {"file": self.file, "case": self.name, "passed": self.passed, "message": self.message}


@dataclass(frozen=True)
class PolicyReport:
    """The result of every case of every file, in order."""

    revision: str
    results: tuple[CaseResult, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failed(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    def to_json(self) -> dict[str, Any]:
        return {
            "desired_revision": self.revision,
            "ok": self.ok,
            "passed": len(self.results) - len(self.failed),
            "failed": len(self.failed),
            "cases": [r.to_json() for r in self.results],
        }


# -- reading test files ---------------------------------------------------------------------------------------
def test_files(path: str | Path) -> list[Path]:
    """``path`` itself if it is a file, else its ``*.yaml`` and ``*.yml`` files (subfolders included), sorted."""
    p = Path(path)
    if p.is_file():
        return [p]
    if not p.is_dir():
        raise PolicyTestFileError(f"reading policy tests: {p} does not exist")
    files = sorted(f for f in p.rglob("*") if f.suffix in (".yaml", ".yml") and f.is_file())
    if not files:
        raise PolicyTestFileError(f"reading policy tests: no *.yaml files in {p}")
    return files


def load_suites(path: str | Path) -> list[PolicySuite]:
    return [load_suite(f) for f in test_files(path)]


def load_suite(path: Path) -> PolicySuite:
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise PolicyTestFileError(f"reading policy tests: {path}: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("cases"), list):
        raise PolicyTestFileError(f"reading policy tests: {path}: expected a mapping with a list of cases")
    fixtures = doc.get("fixtures") or {}
    if not isinstance(fixtures, dict) or not all(isinstance(rows, list) for rows in fixtures.values()):
        raise PolicyTestFileError(f"reading policy tests: {path}: fixtures: expected table -> list of rows")
    return PolicySuite(
        path=str(path),
        fixtures=tuple((str(table), tuple(rows)) for table, rows in fixtures.items()),
        cases=tuple(_case(path, i, c) for i, c in enumerate(doc["cases"])),
    )


def _case(path: Path, index: int, doc: Any) -> PolicyCase:
    where = f"reading policy tests: {path}: cases[{index}]"
    if not isinstance(doc, dict) or not isinstance(doc.get("name"), str) or not isinstance(doc.get("query"), str):
        raise PolicyTestFileError(f"{where}: a case needs a name and a query")
    where = f"reading policy tests: {path}: case {doc['name']!r}"
    unknown = sorted(set(doc) - _CASE_KEYS)
    if unknown:
        raise PolicyTestFileError(f"{where}: unknown key {unknown[0]!r}")
    given = [k for k in _EXPECTATIONS if k in doc]
    if len(given) != 1:
        raise PolicyTestFileError(f"{where}: give exactly one of rows, count or error")
    try:
        if len(split_statements(doc["query"])) != 1:
            raise PolicyTestFileError(f"{where}: the query must be exactly one statement")
    except SqlSyntaxError as exc:
        raise PolicyTestFileError(f"{where}: syntax error in the query: {exc.message}") from exc
    _check_query(where, doc["query"], doc.get("role"))
    rows = doc.get("rows")
    return PolicyCase(
        name=doc["name"],
        query=doc["query"],
        claims=doc.get("claims"),
        role=doc.get("role"),
        owner=bool(doc.get("owner", False)),
        rows=tuple(rows) if isinstance(rows, list) else None,
        count=doc.get("count"),
        error=None if doc.get("error") is None else str(doc["error"]),
    )


_QUERY_SHAPES = (ast.SelectStmt, ast.InsertStmt, ast.UpdateStmt, ast.DeleteStmt)


def _check_query(where: str, query: str, role: object) -> None:
    """Refuse a case query that is not a plain SELECT, INSERT, UPDATE or DELETE, or ``SET ROLE`` to the case's own
    role (the allow-list that stops a test author from running anything else in the scratch server)."""
    [raw] = parser.parse_sql(query)
    node = raw.stmt
    if isinstance(node, _QUERY_SHAPES) and getattr(node, "intoClause", None) is None:
        return
    if isinstance(node, ast.VariableSetStmt) and node.name == "role" and isinstance(role, str):
        args = [getattr(a, "val", None) for a in node.args or ()]
        if (
            node.kind == enums.VariableSetKind.VAR_SET_VALUE
            and len(args) == 1
            and isinstance(args[0], ast.String)
            and args[0].sval == role
        ):
            return
    shape = type(node).__name__ + (" INTO" if getattr(node, "intoClause", None) is not None else "")
    raise PolicyTestFileError(
        f"{where}: a case query may only SELECT, INSERT, UPDATE, DELETE or SET ROLE to the case's role; "
        f"{shape} is refused"
    )


# -- a scratch database with the fixtures -----------------------------------------------------------------------
@contextmanager
def fixture_database(scratch: ScratchServer, desired: DesiredState, suite: PolicySuite) -> Iterator[tuple[str, str]]:
    """A copy of the desired build with the suite's fixture rows and a tester role; yields (DSN, tester role).

    The DSN connects as the copy's unprivileged build role, which owns the copy's objects and may set only the
    tester role and the unprivileged roles the suite's cases name: where the cases run."""
    built = scratch.build_desired(desired)
    name, case_dsn = scratch.create_database(template=built.dbname)
    # Fixtures are inserted by the scratch admin on the copy, bypassing row-level security (never a case query).
    dsn = with_dbname(scratch.admin_dsn, name)
    tester = f"reconciler_policy_{secrets.token_hex(5)}"
    try:
        with (
            database_errors(f"loading the fixtures of {suite.path}"),
            connect(dsn, what=f"loading the fixtures of {suite.path}", autocommit=True) as conn,
        ):
            _take_ownership(conn, built.dbname, name)
            _create_tester(conn, tester)
            _grant_case_roles(conn, name, [tester, *sorted({c.role for c in suite.cases if c.role})])
            for table, rows in suite.fixtures:
                for row in rows:
                    _insert(conn, table, row)
            conn.execute("analyze")
        yield case_dsn, tester
    finally:
        scratch.drop_database(name)
        with (
            database_errors("dropping the policy tester role"),
            connect(scratch.admin_dsn, what="dropping the policy tester role", autocommit=True) as conn,
        ):
            conn.execute(f"drop role if exists {quote_ident(tester)}".encode())


def _create_tester(conn: Connection, role: str) -> None:
    """A role without login that may use every object of the build: what it sees is what the policies allow."""
    r = quote_ident(role)
    conn.execute(f"create role {r} nologin".encode())
    schemas = [
        row[0]
        for row in conn.execute(
            "select nspname from pg_namespace where nspname not like 'pg\\_%' and nspname <> 'information_schema'"
        )
    ]
    for s in schemas:
        q = quote_ident(s)
        conn.execute(f"grant usage on schema {q} to {r}".encode())
        conn.execute(f"grant select, insert, update, delete on all tables in schema {q} to {r}".encode())
        conn.execute(f"grant usage, select on all sequences in schema {q} to {r}".encode())
        conn.execute(f"grant execute on all functions in schema {q} to {r}".encode())


def _take_ownership(conn: Connection, template_role: str, build_role: str) -> None:
    """Make the copy's build role the owner of the copy's objects (REASSIGN OWNED moves the template database too,
    a shared object: it goes back to its own build role)."""
    old, new = quote_ident(template_role), quote_ident(build_role)
    conn.execute(f"reassign owned by {old} to {new}".encode())
    conn.execute(f"alter database {old} owner to {old}".encode())


_UNPRIVILEGED_SQL = """
select r.rolname::text from pg_catalog.pg_roles r
where r.rolname = any(%s::text[]) and not (r.rolsuper or r.rolcreaterole or r.rolcreatedb or r.rolreplication
      or r.rolbypassrls)
  and not exists (select from pg_catalog.pg_roles g
                  where g.oid <> r.oid and pg_catalog.pg_has_role(r.oid, g.oid, 'member')
                    and (starts_with(g.rolname, 'pg_') or g.rolsuper or g.rolcreaterole or g.rolcreatedb
                         or g.rolreplication or g.rolbypassrls))
"""


def _grant_case_roles(conn: Connection, build_role: str, roles: Sequence[str]) -> None:
    """Let ``build_role`` set each of ``roles`` that is unprivileged; a case naming any other role fails when it
    runs (permission denied to set it)."""
    plain = [str(r[0]) for r in conn.execute(_UNPRIVILEGED_SQL.encode(), (list(roles),)).fetchall()]
    for role in plain:
        conn.execute(f"grant {quote_ident(role)} to {quote_ident(build_role)}".encode())


def _qualified(table: str) -> str:
    return ".".join(quote_ident(part) for part in table.split(".", 1))


def _insert(conn: Connection, table: str, row: Mapping[str, Any]) -> None:
    columns = ", ".join(quote_ident(str(c)) for c in row)
    values = ", ".join("%s" for _ in row)
    params = [json.dumps(v) if isinstance(v, dict | list) else v for v in row.values()]
    conn.execute(f"insert into {_qualified(table)} ({columns}) values ({values})", params)


# -- running cases ----------------------------------------------------------------------------------------------
@contextmanager
def as_case(conn: Connection, case: PolicyCase, tester: str) -> Iterator[None]:
    """A transaction running as the case's role with its claims; always rolled back."""
    try:
        conn.execute("select set_config('statement_timeout', %s, true)", (str(CASE_TIMEOUT_MS),))
        if case.claims is not None:
            conn.execute("select set_config('request.jwt.claims', %s, true)", (json.dumps(case.claims),))
        if not case.owner:
            conn.execute(f"set local role {quote_ident(case.role or tester)}".encode())
        yield
    finally:
        conn.rollback()


def _normal(value: Any) -> Any:
    """A value as a test file writes it: null, booleans and numbers as they are, anything else as its text."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _sorted_rows(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    normal = [{str(k): _normal(v) for k, v in r.items()} for r in rows]
    return sorted(normal, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def run_case(conn: Connection, case: PolicyCase, tester: str) -> tuple[bool, str]:
    """Whether the case passed, and what happened."""
    try:
        with database_errors(f"case {case.name!r}"), as_case(conn, case, tester):
            cur = conn.execute(case.query.encode())
            names = [d.name for d in cur.description] if cur.description else []
            got = [dict(zip(names, r, strict=True)) for r in cur.fetchall()] if names else []
            count = len(got) if names else cur.rowcount
    except DatabaseError as exc:
        if case.error is not None and (case.error == exc.sqlstate or case.error.lower() in str(exc).lower()):
            return True, f"refused as expected ({exc.sqlstate})"
        return False, f"failed: {exc}"
    return _judge(case, got, count)


def _judge(case: PolicyCase, got: list[dict[str, Any]], count: int) -> tuple[bool, str]:
    if case.error is not None:
        return False, f"expected an error ({case.error}) but the query succeeded with {count} row(s)"
    if case.count is not None:
        ok = count == case.count
        return ok, f"{count} row(s)" if ok else f"expected {case.count} row(s), got {count}"
    want = _sorted_rows(case.rows or ())
    have = _sorted_rows(got)
    if want == have:
        return True, f"{count} row(s) as expected"
    return False, f"expected rows {json.dumps(want)}, got {json.dumps(have)}"


def run_suite(scratch: ScratchServer, desired: DesiredState, suite: PolicySuite) -> list[CaseResult]:
    results: list[CaseResult] = []
    with (
        fixture_database(scratch, desired, suite) as (dsn, tester),
        connect(dsn, what=f"running the policy tests of {suite.path}") as conn,
    ):
        for case in suite.cases:
            started = time.monotonic()
            passed, message = run_case(conn, case, tester)
            results.append(CaseResult(suite.path, case.name, passed, message, time.monotonic() - started))
    return results


def run_policy_tests(scratch: ScratchServer, desired: DesiredState, path: str | Path) -> PolicyReport:
    """Run every case of every test file under ``path`` against ``desired`` (files are read before building)."""
    suites = load_suites(path)
    results = [r for suite in suites for r in run_suite(scratch, desired, suite)]
    return PolicyReport(desired.revision, tuple(results))


# -- query plans, for the performance check ---------------------------------------------------------------------
def explain_cases(scratch: ScratchServer, desired: DesiredState, path: str | Path) -> dict[str, dict[str, Any]]:
    """``EXPLAIN (FORMAT JSON)`` of every case expected to succeed, as its role, with the fixtures loaded.

    Sequential scans are disabled for the comparison (``enable_seqscan = off``): on a few fixture rows the planner
    would otherwise pick one everywhere, so a sequential scan that remains means no index can serve the query.
    """
    plans: dict[str, dict[str, Any]] = {}
    for suite in load_suites(path):
        with (
            fixture_database(scratch, desired, suite) as (dsn, tester),
            connect(dsn, what=f"explaining the policy test queries of {suite.path}") as conn,
        ):
            for case in suite.cases:
                if case.error is None:
                    with database_errors(f"explaining case {case.name!r}"), as_case(conn, case, tester):
                        conn.execute("set local enable_seqscan = off")
                        row = conn.execute(b"explain (format json) " + case.query.encode()).fetchone()
                        plans[case.name] = row[0][0]["Plan"] if row else {}
    return plans
