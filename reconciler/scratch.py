"""Throwaway databases on a scratch server: build the desired state, clone environments, always clean up.

The scratch server is either a configured DSN on which the reconciler may create and drop databases and roles,
or the embedded PostgreSQL the reconciler starts itself. Desired-state files are untrusted (``plan`` runs on
pull-request branches), so nothing of theirs runs as the admin role (but a CREATE EXTENSION of an allowed extension,
:func:`.sandbox.runs_as_admin`): each database is created by the
admin together with a *build role* of the same name (``NOSUPERUSER NOCREATEROLE NOCREATEDB``, a member of
:data:`BUILD_GROUP`, a random password) that owns it and only it; CONNECT on it is revoked from PUBLIC. The
desired build, its inspection and vetting (restore and replay) connect as that role, with the scratch timeouts
(``statement_timeout``, ``lock_timeout``, ``idle_in_transaction_session_timeout``) set both on the role and on
every connection. The embedded server's ``pg_hba.conf`` lets members of :data:`BUILD_GROUP` into the database of
their own name only.

Names are ``reconciler_scratch_<token>_<random>``: ``token`` is this process's, and the process holds an advisory
lock keyed by it on the scratch server while it lives. A later process drops the databases and roles whose token
lock nobody holds (their process died); one it cannot drop is logged and skipped.

Vetting clones may start from a *template*: a restored clone kept (by :meth:`ScratchServer.keep_as_template`) under
a slot (the environment's database) and a key (its schema fingerprint). A template is a scratch database like the
others (same names, so a dead process's templates are swept too) that nobody can connect to: it is owned by the
admin, refuses connections and its build role cannot log in. A copy gets a build role of its own, which owns the
copy and is a member of the template's build role, which owns the copied objects: it may change and drop them
without a ``REASSIGN OWNED`` over every object. That membership reaches no other database: the template's role
owns no database, the template refuses connections, and ``pg_hba.conf`` and the revoked CONNECT keep the copy's
role out of every other copy. A copy is dropped in the background once its verdict is known
(:meth:`ScratchServer.drop_database_later`); dropping a template, and :meth:`ScratchServer.close`, wait for those.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import threading
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import structlog

from . import buildcache, defaultprivs
from .catalog import CatalogRow, DescribeOptions
from .config import SandboxConfig
from .db import (
    Connection,
    connect,
    database_errors,
    is_idle,
    make_dsn,
    parse_dsn,
    quote_ident,
    quote_literal,
    server_major,
    with_dbname,
    with_scratch_settings,
)
from .drift import desired_description
from .errors import DatabaseError, DesiredStateError, LockTimeoutError, ReconcilerError, VersionMismatchError
from .inspect import Inspection, inspect_database, portable
from .model import DesiredState
from .sandbox import CheckedStatement, check_desired
from .sqltext import line_of

log = structlog.get_logger("reconciler.scratch")

PREFIX = "reconciler_scratch_"
BUILD_GROUP = "reconciler_scratch_builders"
"""The role every build role is a member of (the embedded server's pg_hba confines its members)."""
LOCK_CLASS = 0x5C7A7C4  # first key of the advisory lock that says "the process of this token is alive"
TOKEN = f"{secrets.randbelow(2**31):08x}"
"""This process's token: part of every scratch database's name, and the key of its liveness lock."""
_NAME = re.compile(rf"^{PREFIX}(?P<token>[0-9a-f]{{8}})_[0-9a-f]{{8}}$")


@dataclass(frozen=True)
class BuiltDesired:
    """The desired state built in a scratch database and inspected once."""

    revision: str
    dbname: str
    dsn: str
    inspection: Inspection


class ScratchServer:
    """Creates and drops throwaway databases (each with its build role) on one server; builds the desired state."""

    def __init__(
        self,
        admin_dsn: str,
        *,
        connect_timeout: timedelta = timedelta(seconds=10),
        sandbox: SandboxConfig | None = None,
        cache_dir: Path | None = None,
    ) -> None:
        self.admin_dsn = admin_dsn
        self.cache_dir = cache_dir  # the desired build's facts across processes (buildcache); None: not kept
        self.connect_timeout = connect_timeout
        self.sandbox = sandbox or SandboxConfig()
        self._major: int | None = None
        self._built: BuiltDesired | None = None
        self._lock = threading.RLock()
        self._keeper: Connection | None = None
        self._templates: dict[str, tuple[str, str]] = {}  # slot -> (key, template database)
        self._templates_lock = threading.Lock()
        self._dropper: ThreadPoolExecutor | None = None  # drops copies in the background (drop_database_later)
        self._pending: list[Future[None]] = []

    # -- databases --------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _admin(self, what: str) -> Iterator[Connection]:
        """An autocommit connection to the scratch server's own database, for ``what`` (errors name it)."""
        what = f"{what} on the scratch server"
        with (
            database_errors(what),
            connect(self.admin_dsn, what=what, connect_timeout=self.connect_timeout, autocommit=True) as conn,
        ):
            yield conn

    @property
    def major_version(self) -> int:
        if self._major is None:
            with self._admin("reading the server version") as conn:
                self._major = server_major(conn)
        return self._major

    def check_same_major(self, env_name: str, env_major: int) -> None:
        if env_major != self.major_version:
            raise VersionMismatchError(
                f"comparing environment {env_name!r}: it runs PostgreSQL {env_major} but the scratch server runs "
                f"PostgreSQL {self.major_version}; schemas are only compared on the same major version "
                "(point `scratch` at a server of the same major version)"
            )

    def _announce(self) -> None:
        """Hold this process's liveness lock on the scratch server (once); sweep the leftovers of dead ones."""
        if self._keeper is not None and not self._keeper.closed:
            return
        what = "announcing this process on the scratch server"
        with database_errors(what):
            keeper = connect(self.admin_dsn, what=what, connect_timeout=self.connect_timeout, autocommit=True)
            keeper.execute("select pg_advisory_lock_shared(%s::int4, %s::int4)", (LOCK_CLASS, int(TOKEN, 16)))
        self._keeper = keeper
        self.drop_leftovers()

    def drop_leftovers(self) -> list[str]:
        """Drop the scratch databases and build roles of processes that are gone; return the databases dropped.

        A process is gone when nobody holds the advisory lock of its token. A leftover that cannot be dropped
        (e.g. it holds a logical replication subscription) is logged and skipped.
        """
        dropped: list[str] = []
        with self._admin("finding leftover scratch databases") as conn:
            live = {
                f"{int(r[0]):08x}"
                for r in conn.execute(
                    "select objid from pg_locks where locktype = 'advisory' and classid = %s and objsubid = 2",
                    (LOCK_CLASS,),
                )
            }
            names = [
                r[0] for r in conn.execute("select datname from pg_database where starts_with(datname, %s)", (PREFIX,))
            ]
            roles = [
                r[0] for r in conn.execute("select rolname from pg_roles where starts_with(rolname, %s)", (PREFIX,))
            ]
        for name in names:
            m = _NAME.match(name)
            if m and m.group("token") not in live and self._drop_quietly(name, role=False):
                dropped.append(name)
        for role in roles:
            m = _NAME.match(role)
            if m and m.group("token") not in live:
                self._drop_quietly(role, role=True)
        return dropped

    def _drop_quietly(self, name: str, *, role: bool) -> bool:
        what = "role" if role else "database"
        sql = f"drop {what} if exists {quote_ident(name)}" + ("" if role else " with (force)")
        try:
            with self._admin(f"dropping leftover scratch {what} {name!r}") as conn:
                conn.execute(sql.encode())
        except ReconcilerError as exc:
            log.warning("scratch_leftover_not_dropped", kind=what, name=name, error=str(exc))
            return False
        return True

    def create_database(self, template: str | None = None, *, of_template: bool = False) -> tuple[str, str]:
        """A fresh database and its build role; returns (name, DSN of the build role in it). With ``of_template``
        (a copy of a kept template) the build role is also a member of the template's build role."""
        self._announce()
        name = f"{PREFIX}{TOKEN}_{secrets.token_hex(4)}"
        password = secrets.token_urlsafe(24)
        box = self.sandbox
        with self._admin("creating a scratch database") as conn:
            conn.execute(
                f"do $$ begin if not exists (select from pg_roles where rolname = {quote_literal(BUILD_GROUP)}) "
                f"then create role {quote_ident(BUILD_GROUP)} nologin; end if; end $$".encode()
            )
            conn.execute(
                f"create role {quote_ident(name)} login nosuperuser nocreatedb nocreaterole noreplication "
                f"nobypassrls connection limit 16 in role {quote_ident(BUILD_GROUP)}"
                f"{', ' + quote_ident(template) if of_template and template else ''} "
                f"password {quote_literal(password)}".encode()
            )
            sql = f"create database {quote_ident(name)} owner {quote_ident(name)}"
            if template:
                sql += f" template {quote_ident(template)}"
            conn.execute(sql.encode())
            conn.execute(f"revoke all on database {quote_ident(name)} from public".encode())
            for setting, value in (
                ("statement_timeout", box.statement_timeout),
                ("lock_timeout", box.lock_timeout),
                ("idle_in_transaction_session_timeout", box.idle_in_transaction_timeout),
            ):
                ms = max(1, int(value.total_seconds() * 1000))
                conn.execute(f"alter role {quote_ident(name)} set {setting} = {ms}".encode())
        return name, self._build_dsn(name, password)

    # -- templates --------------------------------------------------------------------------------
    def template(self, slot: str, key: str) -> str | None:
        """The template database kept for ``slot`` if it was kept for ``key``, else None."""
        with self._templates_lock:
            kept = self._templates.get(slot)
        return kept[1] if kept is not None and kept[0] == key else None

    def keep_as_template(self, slot: str, key: str, name: str) -> None:
        """Keep the scratch database ``name`` as the template of ``slot`` for ``key``; drop the one it replaces.

        From now on nobody connects to it (a database with sessions cannot be copied, and environment contents
        restored in it must not run): its build role cannot log in, the database refuses connections and belongs
        to the admin, and the sessions left in it are ended.
        """
        db = quote_ident(name)
        with self._admin("keeping a vetting clone as a template") as conn:
            conn.execute(f"alter role {db} nologin".encode())
            conn.execute(f"alter database {db} allow_connections false".encode())
            conn.execute(f"alter database {db} owner to current_user".encode())
            conn.execute("select pg_terminate_backend(pid) from pg_stat_activity where datname = %s", (name,))
        with self._templates_lock:
            old = self._templates.get(slot)
            self._templates[slot] = (key, name)
        if old is not None and old[1] != name:
            self._settle()
            self._drop_logged(old[1])  # a copy still in use elsewhere keeps its role: logged, swept later

    def copy_template(self, template: str) -> tuple[str, str]:
        """A fresh scratch database copied from ``template``, its objects owned by the template's build role, of
        which its own build role is a member, and the template role's default privileges moved to its own (the
        objects it creates get them); returns (name, DSN of that role in it)."""
        name, dsn = self.create_database(template=template, of_template=True)
        try:
            with (
                database_errors("moving the template's default privileges to a copy"),
                connect(dsn, what="moving default privileges", connect_timeout=self.connect_timeout) as conn,
            ):
                defaultprivs.take_over(conn, template, name)
                conn.commit()
        except BaseException:
            self.drop_database_later(name)
            raise
        return name, dsn

    def _build_dsn(self, name: str, password: str) -> str:
        params = {k: v for k, v in parse_dsn(self.admin_dsn).items() if k not in ("passfile", "options")}
        params.update(user=name, password=password, dbname=name)
        box = self.sandbox
        return with_scratch_settings(
            make_dsn(params),
            statement_timeout=box.statement_timeout,
            lock_timeout=box.lock_timeout,
            idle_in_transaction_timeout=box.idle_in_transaction_timeout,
        )

    def admin_dsn_in(self, name: str) -> str:
        """The scratch admin's DSN in scratch database ``name``, with the scratch timeouts: only for what the build
        role may not do itself (allowed extensions, foreign servers of a vetting clone)."""
        box = self.sandbox
        return with_scratch_settings(
            with_dbname(self.admin_dsn, name),
            statement_timeout=box.statement_timeout,
            lock_timeout=box.lock_timeout,
            idle_in_transaction_timeout=box.idle_in_transaction_timeout,
        )

    def drop_database_later(self, name: str) -> None:
        """Drop ``name`` (and its build role) in the background: a failure is logged (a later process sweeps it)."""
        with self._templates_lock:
            if self._dropper is None:
                self._dropper = ThreadPoolExecutor(max_workers=1, thread_name_prefix="scratch-drop")
            self._pending = [f for f in self._pending if not f.done()]
            self._pending.append(self._dropper.submit(self._drop_logged, name))

    def _drop_logged(self, name: str) -> None:
        try:
            self.drop_database(name, settle=False)
        except ReconcilerError as exc:
            log.warning("scratch_database_not_dropped", name=name, error=str(exc))

    def _settle(self) -> None:
        """Wait for the background drops (a template's role cannot be dropped while copies of it exist)."""
        with self._templates_lock:
            pending, self._pending = self._pending, []
        for f in pending:
            f.result()

    def drop_database(self, name: str, *, settle: bool = True) -> None:
        if settle:
            self._settle()
        with self._admin(f"dropping scratch database {name!r}") as conn:
            conn.execute(f"drop database if exists {quote_ident(name)} with (force)".encode())
            conn.execute(f"drop role if exists {quote_ident(name)}".encode())

    @contextlib.contextmanager
    def temporary_database(self) -> Iterator[tuple[str, str]]:
        name, dsn = self.create_database()
        try:
            yield name, dsn
        finally:
            self.drop_database(name)

    # -- desired state ----------------------------------------------------------------------------
    def build_desired(self, desired: DesiredState) -> BuiltDesired:
        """Build ``desired`` in a scratch database (once per revision), as its build role, and inspect it.

        Every statement is checked against the allow-list first (:mod:`.sandbox`): a refused one raises
        DesiredStateError naming the file and line before anything runs. A failing or timed-out statement raises
        DesiredStateError naming the file and line; the database is dropped.
        """
        statements = check_desired(desired, self.sandbox.extensions_allowed)
        with self._lock:
            if self._built is not None and self._built.revision == desired.revision:
                return self._built
            name, dsn = self.create_database()
            try:
                run_checked(
                    dsn,
                    statements,
                    self.sandbox,
                    connect_timeout=self.connect_timeout,
                    admin_dsn=self.admin_dsn_in(name),
                )
                inspection = inspect_database(
                    dsn, what="inspecting the desired state", connect_timeout=self.connect_timeout
                )
            except BaseException:
                self.drop_database(name)
                raise
            old, self._built = self._built, BuiltDesired(desired.revision, name, dsn, inspection)
            if old is not None:
                self.drop_database(old.dbname)
            return self._built

    @property
    def built_revision(self) -> str | None:
        """The desired revision built in this process (None: none yet)."""
        with self._lock:
            return self._built.revision if self._built is not None else None

    def desired_facts(
        self, desired: DesiredState, options: DescribeOptions
    ) -> tuple[Inspection, tuple[CatalogRow, ...]]:
        """The desired build's inspection and catalog description (described with ``options``): of this process's
        build, else kept in :attr:`cache_dir` by an earlier process for the same key (:func:`.buildcache.cache_key`),
        else built now and kept there. The allow-list is checked every time, kept or not (:meth:`check_allowed`)."""
        self.check_allowed(desired)
        with self._lock:
            built = self._built if self._built is not None and self._built.revision == desired.revision else None
        key = (
            buildcache.cache_key(desired.revision, self.major_version, (options, self.sandbox))
            if self.cache_dir
            else ""
        )
        if built is None and self.cache_dir is not None:
            kept = buildcache.load(self.cache_dir, key)
            if isinstance(kept, tuple) and len(kept) == 2:
                return kept[0], tuple(kept[1])
        built = built or self.build_desired(desired)
        rows = desired_description(built.dsn, built.revision, options, self.connect_timeout)
        if self.cache_dir is not None:
            buildcache.save(self.cache_dir, key, (portable(built.inspection), rows))
        return built.inspection, rows

    def check_allowed(self, desired: DesiredState) -> None:
        """Check ``desired`` against the allow-list (DesiredStateError at the refused file:line), unless a private
        verdict in :attr:`cache_dir` says its revision passed under these sandbox settings; keep a pass there."""
        key = buildcache.verdict_key(desired.revision, self.sandbox)
        if self.cache_dir is not None and buildcache.known_allowed(self.cache_dir, key):
            return
        check_desired(desired, self.sandbox.extensions_allowed)
        if self.cache_dir is not None:
            buildcache.remember_allowed(self.cache_dir, key)

    def close(self) -> None:
        self._settle()
        with self._templates_lock:
            templates, self._templates = list(self._templates.values()), {}
        for _, name in templates:
            with contextlib.suppress(Exception):
                self.drop_database(name)
        with self._lock:
            if self._built is not None:
                with contextlib.suppress(Exception):
                    self.drop_database(self._built.dbname)
                self._built = None
            if self._keeper is not None:
                with contextlib.suppress(Exception):
                    self._keeper.close()
                self._keeper = None


def run_checked(
    dsn: str,
    statements: Sequence[CheckedStatement],
    sandbox: SandboxConfig,
    *,
    connect_timeout: timedelta = timedelta(seconds=10),
    admin_dsn: str | None = None,
) -> None:
    """Execute desired-state statements that passed the allow-list, in order; errors name the file and the line.

    With ``admin_dsn`` (the scratch admin in the same database), the statements marked ``as_admin`` (a CREATE
    EXTENSION of an allowed extension, nothing else) run there, with the build connection's search_path.
    Consecutive ``batchable`` statements are sent :data:`BATCH` at a time as one multi-statement execution (one
    round trip; PostgreSQL runs it as one implicit transaction); a batch that fails is rolled back whole and run
    again statement by statement, so the error names the statement's own file and line as before.
    """
    what = "building desired state in scratch database"
    with contextlib.ExitStack() as stack:
        conn = stack.enter_context(connect(dsn, what=what, connect_timeout=connect_timeout, autocommit=True))
        admin: Connection | None = None
        for stmt in _statements_or_batches(conn, statements, sandbox, what):
            target = conn
            if stmt.as_admin and admin_dsn is not None:
                if admin is None:
                    admin = stack.enter_context(
                        connect(admin_dsn, what=what, connect_timeout=connect_timeout, autocommit=True)
                    )
                row = conn.execute("select current_setting('search_path')").fetchone()
                admin.execute("select set_config('search_path', %s, false)", (row[0] if row else "",))
                target = admin
            _run_one(target, stmt, sandbox, what)


BATCH = 100
"""Statements of a desired build sent in one execution at most (a bound on the locks one implicit transaction
holds: each created table takes a few)."""


def _batches(statements: Sequence[CheckedStatement]) -> Iterator[list[CheckedStatement]]:
    """``statements`` in order, in runs of consecutive batchable ones (at most :data:`BATCH`); others alone."""
    run: list[CheckedStatement] = []
    for stmt in statements:
        if stmt.batchable and len(run) < BATCH:
            run.append(stmt)
            continue
        if run:
            yield run
        run = [stmt] if stmt.batchable else []
        if not stmt.batchable:
            yield [stmt]
    if run:
        yield run


def _statements_or_batches(
    conn: Connection, statements: Sequence[CheckedStatement], sandbox: SandboxConfig, what: str
) -> Iterator[CheckedStatement]:
    """Run the batches of ``statements`` (while the session is outside a transaction block: inside the desired
    state's own BEGIN, a failed batch would abort that transaction instead of rolling back alone, and the
    statements' re-run could not name the failing one); yield every statement that runs alone."""
    for batch in _batches(statements):
        if len(batch) > 1 and is_idle(conn):
            _run_batch(conn, batch, sandbox, what)
        else:
            yield from batch


def _run_batch(conn: Connection, batch: Sequence[CheckedStatement], sandbox: SandboxConfig, what: str) -> None:
    """Run ``batch`` in one execution; if it fails (rolled back whole), statement by statement for the error."""
    text = "".join(f"{stmt.sql}\n;\n" for stmt in batch)  # the newline ends a trailing line comment
    try:
        with database_errors(what):
            conn.execute(text.encode("utf-8"))  # bytes: no client-side placeholder parsing
        return
    except ReconcilerError:  # whatever failed, the batch was rolled back whole: the statements tell, one by one
        pass
    for stmt in batch:
        _run_one(conn, stmt, sandbox, what)


def _run_one(conn: Connection, stmt: CheckedStatement, sandbox: SandboxConfig, what: str) -> None:
    try:
        with database_errors(what):
            conn.execute(stmt.sql.encode("utf-8"))  # bytes: no client-side placeholder parsing
    except DatabaseError as exc:  # retryable errors are the scratch server's, not the SQL's
        line = stmt.line
        if exc.position:
            line += line_of(stmt.sql, exc.position - 1) - 1
        raise DesiredStateError(f"{exc} at {stmt.file}:{line}", file=stmt.file, line=line) from exc
    except LockTimeoutError as exc:  # the statement ran out of time: the desired file's doing
        raise DesiredStateError(
            f"{exc} at {stmt.file}:{stmt.line} (scratch statements run with sandbox.statement_timeout "
            f"{_human(sandbox.statement_timeout)} and sandbox.lock_timeout {_human(sandbox.lock_timeout)})",
            file=stmt.file,
            line=stmt.line,
        ) from exc


def _human(d: timedelta) -> str:
    seconds = d.total_seconds()
    return f"{seconds:g}s" if seconds < 120 else f"{seconds / 60:g}m"


def shared_servers(scratch_dsn: str, environments: Mapping[str, str]) -> list[str]:
    """The environments (name -> resolved DSN) whose server is the scratch server (same host and port)."""

    def where(dsn: str) -> tuple[str, str]:
        params = parse_dsn(dsn)
        host = params.get("host") or params.get("hostaddr") or "local"
        host = "local" if host in ("localhost", "127.0.0.1", "::1") or host.startswith("/") else host
        return host, params.get("port") or "5432"

    mine = where(scratch_dsn)
    return sorted(name for name, dsn in environments.items() if where(dsn) == mine)
