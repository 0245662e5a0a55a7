"""Vetting: prove a plan on a scratch clone of the environment before it touches the environment.

The clone is the environment's schema (``pg_dump --schema-only``, no data) restored into a scratch database on
a server of the same major version; while the environment's schema fingerprint is unchanged, later clones are
copies of that restore, kept as a template on the scratch server (:func:`clone`). The statements that would run unattended are applied first; a re-diff
must then yield exactly the queued remainder (so the unattended part stands on its own). The remainder is then
applied too, and a final re-diff must be empty (the whole plan converges). If the split replay fails, the whole
plan is replayed in its own order on a fresh clone: if that converges, the plan is sound but must wait as a whole;
if not, the plan fails vetting and none of it may run.

Statements run as they would on the environment: their online-safe steps (``Statement.execution()``), with the
same transaction grouping (:func:`~reconciler.apply.execute_steps`). Re-diffs are compared with the statements'
own SQL (migra's), which is the plan's identity.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import hashlib
import os
import subprocess
import tempfile
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Literal

import structlog
from pglast import ast, enums, parser
from pglast.stream import RawStream

from .apply import execute_steps
from .catalog import CatalogRow, DescribeOptions, describe
from .config import EnvironmentConfig
from .db import (
    Connection,
    connect,
    database_errors,
    database_identity,
    quote_ident,
    redact,
    service_file,
    translate,
)
from .diff import diff
from .drift import describe_options, owner_change, plan_statements
from .errors import ApplyError, DatabaseError, LockTimeoutError, ReconcilerError, UnreachableError
from .inspect import Inspection, environment_fingerprint, filtered, inspect_database, schema_fingerprint
from .model import ExecStep, Statement
from .sandbox import runs_as_admin
from .scratch import ScratchServer
from .sqltext import SqlSyntaxError, split_statements
from .target import IDENTITY_SQL

log = structlog.get_logger("reconciler.vet")

Phase = Literal["unattended", "remainder", "plan"]


@dataclass(frozen=True)
class VetResult:
    """What replaying a plan on a clone showed.

    ``failed_statement`` is the plan's (migra's) statement that failed and ``failed_step`` the command that
    PostgreSQL rejected (they differ when the statement runs in an online-safe form); ``error`` says why, with the
    PostgreSQL error. ``residue`` is what a re-diff still yields where it should not.
    """

    safe_stands_alone: bool
    converged: bool
    failed_statement: str | None = None
    error: str | None = None
    residue: tuple[str, ...] = field(default_factory=tuple)
    phase: Phase | None = None
    failed_step: str | None = None

    @property
    def ok(self) -> bool:
        return self.safe_stands_alone and self.converged

    @property
    def failed(self) -> bool:
        """The plan cannot be applied as it is: a statement fails, or the plan does not converge."""
        return not self.converged

    def describe(self) -> str:
        """One line for people: what failed, where, and the PostgreSQL error."""
        if self.ok:
            return "the plan converges on a scratch clone of the environment"
        text = self.error or "vetting failed"
        if self.residue:
            text += "; a re-diff still yields: " + "; ".join(self.residue[:5])
            if len(self.residue) > 5:
                text += f" (and {len(self.residue) - 5} more)"
        return text


Vettable = Statement | ExecStep | str


def _steps(items: Sequence[Vettable]) -> tuple[list[ExecStep], list[str]]:
    """The commands that execute ``items`` (as they would run on the environment), and for each the plan statement
    it belongs to."""
    steps: list[ExecStep] = []
    owners: list[str] = []
    for item in items:
        if isinstance(item, ExecStep):
            steps.append(item)
            owners.append(item.sql)
            continue
        stmt = item if isinstance(item, Statement) else Statement(item)
        for e in stmt.execution():
            steps.append(e)
            owners.append(stmt.sql)
    return steps, owners


def _sqls(items: Sequence[Vettable]) -> list[str]:
    return [i if isinstance(i, str) else i.sql for i in items]


def dump_schema(env_dsn: str, env: EnvironmentConfig, pg_dump: Path) -> str:
    """The environment's schema as SQL, without owners (and without grants unless privileges are managed)."""
    lock_wait_ms = max(1, int(env.lock_timeout.total_seconds() * 1000))
    args = [
        str(pg_dump),
        "--schema-only",
        "--no-owner",
        "--no-publications",
        "--no-subscriptions",
        # pg_dump takes ACCESS SHARE locks: never queue behind a long lock holder (or make others queue behind us).
        f"--lock-wait-timeout={lock_wait_ms}",
    ]
    if not env.privileges:
        args.append("--no-privileges")
    for s in env.schemas:
        args += ["--schema", s]
    for s in env.exclude_schemas:
        args += ["--exclude-schema", s]
    # Every connection parameter, the password and sslpassword included, goes through a private service file: the
    # command line, which other local users can read, holds none of them.
    with service_file(env_dsn, tempfile.gettempdir()) as service:
        run_env = {**os.environ, **service, "PGCONNECT_TIMEOUT": str(max(1, int(env.connect_timeout.total_seconds())))}
        run_env.pop("PGPASSWORD", None)
        res = subprocess.run(args, capture_output=True, text=True, timeout=600, env=run_env)
    if res.returncode != 0:
        detail = redact(res.stderr.strip())
        if "canceling statement due to" in detail and "LOCK TABLE" in detail:  # --lock-wait-timeout expired
            raise LockTimeoutError(
                f"cloning the environment's schema: pg_dump waited longer than lock_timeout ({env.lock_timeout}) "
                f"for a lock: {detail}"
            )
        if "connection to server" in detail:
            raise UnreachableError(f"cloning the environment's schema: pg_dump cannot connect: {detail}")
        raise DatabaseError(f"cloning the environment's schema: pg_dump failed: {detail}")
    # Drop psql meta-commands (\restrict, \unrestrict) that recent pg_dump versions write.
    return "\n".join(line for line in res.stdout.splitlines() if not line.startswith("\\"))


LEFT_OUT_OF_CLONES = (
    ast.CreateFdwStmt,  # superuser only: its handler and validator are environment code
    ast.AlterFdwStmt,
    ast.CreateForeignServerStmt,  # its OPTIONS may hold credentials (recreated without them: CloneStep)
    ast.AlterForeignServerStmt,
    ast.CreateUserMappingStmt,  # holds a remote password
    ast.AlterUserMappingStmt,
    ast.CreateEventTrigStmt,  # environment code that would fire on every later DDL in the clone
    ast.AlterEventTrigStmt,
)
"""Statements of an environment's dump that a clone leaves out: environment contents are untrusted."""

_DUMP_SETTINGS_LEFT_OUT = frozenset({"statement_timeout", "lock_timeout", "idle_in_transaction_session_timeout"})


@dataclass(frozen=True)
class CloneStep:
    """One part of a clone's restore, in the dump's order: SQL the build role runs (``sql``), an allowed
    extension the scratch admin creates (``as_admin``), or a foreign server the admin recreates (``server``,
    with its wrapper ``fdw`` if the dump names it) without options or user mappings, owned by the build role."""

    sql: str = ""
    as_admin: bool = False
    server: str | None = None
    fdw: str | None = None


@dataclass
class CloneScript:
    """The dump ``script`` as :class:`CloneStep` s, and the schemas it creates."""

    steps: list[CloneStep] = field(default_factory=list)
    schemas: list[str] = field(default_factory=list)

    def add_sql(self, sql: str) -> None:
        if self.steps and not self.steps[-1].as_admin and self.steps[-1].server is None:
            self.steps[-1] = CloneStep(self.steps[-1].sql + f"{sql};\n")
        else:
            self.steps.append(CloneStep(f"{sql};\n"))

    @property
    def script(self) -> str:
        """What the build role runs, all steps together."""
        return "".join(step.sql for step in self.steps if not step.as_admin and step.server is None)


def clone_script(script: str, extensions: Sequence[str] = ()) -> CloneScript:
    """The dump ``script`` without :data:`LEFT_OUT_OF_CLONES` and without its timeout resets (the scratch
    timeouts stay). Each foreign server a foreign table uses is recreated just before its first table, without
    options; CREATE EXTENSION of an extension on ``extensions`` (with safe options), and its comment, are the
    admin's."""
    out = CloneScript()
    wrappers: dict[str, str] = {}
    servers: set[str] = set()
    admins: set[str] = set()  # extensions the admin creates (and owns)
    for stmt in split_statements(script):
        node = parser.parse_sql(stmt.sql)[0].stmt
        if isinstance(node, ast.CreateForeignServerStmt):
            wrappers[str(node.servername)] = str(node.fdwname)
        if isinstance(node, LEFT_OUT_OF_CLONES) or _grant_on_wrapper(node):
            continue
        if isinstance(node, ast.VariableSetStmt) and node.name in _DUMP_SETTINGS_LEFT_OUT:
            continue
        if isinstance(node, ast.CreateSchemaStmt) and node.schemaname:
            out.schemas.append(str(node.schemaname))
        if isinstance(node, ast.CreateForeignTableStmt) and (server := str(node.servername)) not in servers:
            servers.add(server)
            out.steps.append(CloneStep(server=server, fdw=wrappers.get(server)))
        if runs_as_admin(stmt.sql, extensions) or _comment_on(node, admins):
            if isinstance(node, ast.CreateExtensionStmt):
                admins.add(str(node.extname))
            out.steps.append(CloneStep(stmt.sql, as_admin=True))
            continue
        out.add_sql(_own_default_privileges(node) if isinstance(node, ast.AlterDefaultPrivilegesStmt) else stmt.sql)
    return out


def _comment_on(node: ast.Node | None, extensions: set[str]) -> bool:
    """A COMMENT ON EXTENSION of one of ``extensions``: only their owner, the admin, may comment on them."""
    return (
        isinstance(node, ast.CommentStmt)
        and node.objtype == enums.ObjectType.OBJECT_EXTENSION
        and isinstance(node.object, ast.String)
        and str(node.object.sval) in extensions
    )


def _grant_on_wrapper(node: ast.Node | None) -> bool:
    """A GRANT on a foreign-data wrapper: the clone's wrappers are the admin's, the build role cannot grant them."""
    return isinstance(node, ast.GrantStmt) and node.objtype == enums.ObjectType.OBJECT_FDW


def _own_default_privileges(node: ast.AlterDefaultPrivilegesStmt) -> str:
    """The dump's ``ALTER DEFAULT PRIVILEGES FOR ROLE r ...`` as the build role's own (without ``FOR ROLE``): the
    build role may not act for the environment's roles, and the catalog description shows the owner's default
    privileges as ``<owner>`` on both sides. (pglast 8.8 prints a GRANT's ``WITH GRANT OPTION`` here as ``GRANT
    OPTION FOR``, which is REVOKE's: the grant is printed without it and the option added at its end.)"""
    options = tuple(o for o in node.options or () if not (isinstance(o, ast.DefElem) and o.defname == "roles"))
    action = node.action
    grant_option = bool(action is not None and action.is_grant and action.grant_option)
    if action is not None and grant_option:
        action = copy.deepcopy(action)
        action.grant_option = False
    text = str(RawStream()(ast.AlterDefaultPrivilegesStmt(options=options or None, action=action)))
    return text + " WITH GRANT OPTION" if grant_option else text


def clone_environment(scratch: ScratchServer, env_dsn: str, env: EnvironmentConfig, pg_dump: Path) -> tuple[str, str]:
    """A scratch database holding the environment's schema; returns (name, build role's dsn). Caller drops it.

    The dump is restored as the scratch database's build role (never as the scratch admin), without what
    :func:`clone_script` leaves out.
    """
    what = "cloning the environment's schema into scratch"
    try:
        restore = clone_script(dump_schema(env_dsn, env, pg_dump), scratch.sandbox.extensions_allowed)
    except SqlSyntaxError as exc:
        raise DatabaseError(f"{what}: the dump does not parse: {exc.message}") from exc
    name, dsn = scratch.create_database()
    try:
        with (
            database_errors(what),
            connect(dsn, what=what, autocommit=True) as conn,
            connect(scratch.admin_dsn_in(name), what=what, autocommit=True) as admin,
        ):
            # A dump filtered by --schema creates even the schemas a new database already has (public).
            for schema in restore.schemas:
                conn.execute(f"drop schema if exists {quote_ident(schema)} cascade".encode())
            for step in restore.steps:
                if step.server is not None:
                    _recreate_server(admin, name, step.server, step.fdw)
                elif step.sql:
                    (admin if step.as_admin else conn).execute(step.sql.encode("utf-8"))
    except BaseException as exc:
        scratch.drop_database(name)
        if isinstance(exc, ReconcilerError) or not isinstance(exc, Exception):
            raise
        raise translate(exc, what) from exc  # e.g. a dump that the SQL parser cannot read
    return name, dsn


STAND_IN_WRAPPER = "reconciler_stand_in"
"""The wrapper of a clone's foreign server whose own wrapper the dump does not name."""


def _recreate_server(admin: Connection, build_role: str, server: str, fdw: str | None) -> None:
    """Foreign server ``server`` in the clone, as the scratch admin: no options and no user mappings (those hold
    the environment's credentials), owned by the build role. Its wrapper is the real one if an allowed extension
    created it in the clone; else a stand-in without handler or validator (no environment code runs), on which the
    foreign tables' structure is vetted but nothing can be read: they are logged as not vettable."""
    wrapper = fdw or STAND_IN_WRAPPER
    if admin.execute("select from pg_foreign_data_wrapper where fdwname = %s", (wrapper,)).fetchone() is None:
        admin.execute(f"create foreign data wrapper {quote_ident(wrapper)}".encode())
        log.warning(
            "vetting_clone_foreign_server_stand_in",
            server=server,
            wrapper=fdw,
            detail="the foreign tables of this server are not vettable beyond their structure: their wrapper is "
            "not created by an extension on sandbox.extensions_allowed, so the clone holds a stand-in without handler",
        )
    admin.execute(f"create server {quote_ident(server)} foreign data wrapper {quote_ident(wrapper)}".encode())
    admin.execute(f"alter server {quote_ident(server)} owner to {quote_ident(build_role)}".encode())


def clone_slot_and_key(env_dsn: str, env: EnvironmentConfig, pg_dump: Path) -> tuple[str, str]:
    """Which template a clone of the environment may start from: the slot is the environment's database (its
    address, cluster system identifier and oid), the key its schema fingerprint with what shapes the dump
    (managed schemas, privileges, the pg_dump used). One connection, two catalog queries."""
    what = "reading the schema fingerprint of the environment to vet on"
    with database_errors(what), connect(env_dsn, what=what, connect_timeout=env.connect_timeout) as conn:
        row = conn.execute(IDENTITY_SQL).fetchone()
        fingerprint = schema_fingerprint(conn, env.schemas, env.exclude_schemas, privileges=env.privileges, what=what)
    slot = f"{database_identity(env_dsn)} {row[0] if row else ''} {row[1] if row else ''}"
    shape = (fingerprint, tuple(env.schemas), tuple(env.exclude_schemas), env.privileges, str(pg_dump))
    return slot, hashlib.sha256(repr(shape).encode()).hexdigest()


def clone(scratch: ScratchServer, env_dsn: str, env: EnvironmentConfig, pg_dump: Path) -> tuple[str, str]:
    """A scratch clone of the environment (name, build role's dsn); the caller drops it.

    While the environment's fingerprint is unchanged the clone is a copy of the template kept on the scratch
    server (``CREATE DATABASE ... TEMPLATE``); otherwise the schema is dumped and restored once more, and kept as
    the new template if the fingerprint did not move during the dump (the old template is dropped).
    """
    slot, key = clone_slot_and_key(env_dsn, env, pg_dump)
    template = scratch.template(slot, key)
    if template is None:
        name, dsn = clone_environment(scratch, env_dsn, env, pg_dump)
        if clone_slot_and_key(env_dsn, env, pg_dump) != (slot, key):
            return name, dsn  # changed while it was dumped: used once, kept for nothing
        scratch.keep_as_template(slot, key, name)
        template = name
    return scratch.copy_template(template)


def vetting_fingerprint(dsn: str, env: EnvironmentConfig, *, what: str) -> str:
    """The fingerprint of the database at ``dsn`` as a clone of ``env`` is compared: the listing and the
    description rows it does not cover, owners left out (a clone is restored without them). One connection.

    A clone whose vetting fingerprint equals the desired build's has converged: the fingerprint covers everything
    a re-diff compares (see :mod:`reconciler.inspect`). Unequal proves nothing (it also counts what a re-diff
    ignores, such as a role's name in an ACL): the re-diff decides then.
    """
    return _vetting_fingerprint(dsn, describe_options(env), env.connect_timeout, what)


@functools.lru_cache(maxsize=16)
def desired_vetting_fingerprint(dsn: str, revision: str, options: DescribeOptions, connect_timeout: timedelta) -> str:
    """The desired build's :func:`vetting_fingerprint`: read once per revision, like its inspection."""
    del revision  # part of the cache key: a new revision is built in a new database anyway
    return _vetting_fingerprint(dsn, options, connect_timeout, "reading the desired build's fingerprint")


def _vetting_fingerprint(dsn: str, options: DescribeOptions, connect_timeout: timedelta, what: str) -> str:
    unowned = dataclasses.replace(options, compare_owners=False)
    return environment_fingerprint(dsn, unowned, what=what, connect_timeout=connect_timeout)


def vet_plan(
    scratch: ScratchServer,
    env_dsn: str,
    env: EnvironmentConfig,
    desired: Inspection,
    safe: Sequence[Vettable],
    remainder: Sequence[Vettable],
    pg_dump: Path,
    *,
    whole: Sequence[Vettable] | None = None,
    wanted: Sequence[CatalogRow] | None = None,
    desired_fingerprint: str | None = None,
) -> VetResult:
    """Replay ``safe`` then ``remainder`` on a clone; check both steps against the desired inspection.

    Statements run as they would on the environment (their online-safe steps, if any); re-diffs are compared
    with the statements' own SQL. If ``safe`` does not stand on its own and ``whole`` (the plan in its order)
    is given, the whole plan is replayed on a fresh clone to tell "waits as a whole" from "fails". With
    ``wanted`` (the desired build's catalog description), re-diffs include the statements that close what migra
    leaves, as the plan does. With ``desired_fingerprint`` (the desired build's :func:`vetting_fingerprint`), the
    last re-diff, which must be empty, is skipped when the clone's vetting fingerprint equals it.
    """
    want = Wanted(filtered(desired, env.schemas, env.exclude_schemas), wanted, desired_fingerprint)
    first = _replay(scratch, env_dsn, env, want, pg_dump, [("unattended", safe), ("remainder", remainder)])
    if first.ok or whole is None or not safe or not remainder:
        return first  # with one part empty, the split replay is the whole plan in its order
    # Split in two, the plan fails or does not stand apart; in its own order it may still converge (as a whole).
    again = _replay(scratch, env_dsn, env, want, pg_dump, [("plan", whole)])
    if again.converged:
        return VetResult(False, True, error=first.error, residue=first.residue, phase=first.phase)
    return VetResult(False, False, again.failed_statement, again.error, again.residue, "plan", again.failed_step)


def _execute(
    scratch: ScratchServer, name: str, conn: Connection, steps: Sequence[ExecStep], env: EnvironmentConfig
) -> None:
    """Run ``steps`` on the clone ``name`` as its build role (``conn``), except a CREATE EXTENSION of an allowed
    extension, which the scratch admin runs there in its turn (as in the desired build)."""
    extensions = scratch.sandbox.extensions_allowed
    by_admin = [runs_as_admin(step.sql, extensions, any_version=True) for step in steps]
    if not any(by_admin):
        execute_steps(conn, steps, env)
        return
    what = "vetting the plan on a scratch clone"
    with connect(scratch.admin_dsn_in(name), what=what, autocommit=True) as admin:
        start = 0
        while start < len(steps):  # each run of steps for one role, in order; indexes stay the plan's
            end = start
            while end < len(steps) and by_admin[end] == by_admin[start]:
                end += 1
            outside = [i for i in range(len(steps)) if not start <= i < end]
            execute_steps(admin if by_admin[start] else conn, steps, env, skip=outside)
            start = end


@dataclass(frozen=True)
class Wanted:
    """What a clone must come to: the desired inspection (filtered to the environment's schemas), the desired
    build's description rows (when re-diffs compare them), and its :func:`vetting_fingerprint` (when known)."""

    inspection: Inspection
    rows: Sequence[CatalogRow] | None = None
    fingerprint: str | None = None


def _rediff(dsn: str, env: EnvironmentConfig, wants: Wanted, *, last: bool = False) -> list[str]:
    """What a plan of the clone at ``dsn`` holds now (migra's statements, and ours when ``wants`` has rows). The
    ``last`` re-diff (nothing is left to run, so it must be empty) is proved empty without inspecting when the
    clone's vetting fingerprint equals the desired one."""
    what = "reading the scratch clone's fingerprint"
    if last and wants.fingerprint is not None and vetting_fingerprint(dsn, env, what=what) == wants.fingerprint:
        log.debug("vet_converged_by_fingerprint")
        return []
    want, wanted = wants.inspection, wants.rows
    if wanted is None:
        return diff(_inspect_clone(dsn, env), want, privileges=env.privileges)
    # The clone is restored without owners: ownership is left out of its comparison (and of the plan's, below).
    options = dataclasses.replace(describe_options(env), compare_owners=False)
    with ThreadPoolExecutor(max_workers=1) as pool:  # both wait on the server: the description beside the inspection
        described = pool.submit(describe, dsn, options, what="describing the scratch clone")
        got = _inspect_clone(dsn, env)
        rows = described.result()
    unowned = [r for r in wanted if r.kind != "owner"]
    return plan_statements(got, want, rows, unowned, privileges=env.privileges)


def _inspect_clone(dsn: str, env: EnvironmentConfig) -> Inspection:
    return filtered(inspect_database(dsn, what="inspecting the scratch clone"), env.schemas, env.exclude_schemas)


def _replay(
    scratch: ScratchServer,
    env_dsn: str,
    env: EnvironmentConfig,
    wants: Wanted,
    pg_dump: Path,
    phases: Sequence[tuple[Phase, Sequence[Vettable]]],
) -> VetResult:
    """Replay ``phases`` in order on one fresh clone; after each, a re-diff must yield exactly what follows."""
    name, dsn = clone(scratch, env_dsn, env, pg_dump)
    try:
        stood = True
        for n, (phase, items) in enumerate(phases):
            if n and not items:
                continue  # nothing ran since the last re-diff, which already checked this state
            steps, owners = _steps(items)
            with connect(dsn, what="vetting the plan on a scratch clone", autocommit=True) as conn:
                try:
                    _execute(scratch, name, conn, steps, env)
                except ApplyError as exc:
                    i = exc.index if exc.index is not None and exc.index < len(owners) else None
                    stmt = owners[i] if i is not None else exc.statement
                    return VetResult(
                        stood and phase != "unattended",
                        False,
                        stmt,
                        f"{phase} statements fail on a scratch clone of the environment: {exc}",
                        phase=phase,
                        failed_step=exc.statement,
                    )
            expected = [sql for _, later in phases[n + 1 :] for sql in _sqls(later) if not owner_change(sql)]
            after = _rediff(dsn, env, wants, last=not expected)
            if after != expected:
                if phase == "unattended":
                    return VetResult(
                        False,
                        False,
                        None,
                        "the unattended statements do not stand on their own: after them, a re-diff yields other "
                        "statements than the queued remainder",
                        tuple(after),
                        phase,
                    )
                return VetResult(
                    stood,
                    False,
                    None,
                    "the plan does not converge: after it, a re-diff on a scratch clone is not empty",
                    tuple(after),
                    phase,
                )
        return VetResult(True, True)
    finally:
        scratch.drop_database_later(name)  # the verdict does not wait for the drop
