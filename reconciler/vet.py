"""Vetting: prove a plan on a scratch clone of the environment before it touches the environment.

The clone is the environment's schema (``pg_dump --schema-only``, no data) restored into a scratch database on
a server of the same major version. The statements that would run unattended are applied first; a re-diff
must then yield exactly the queued remainder (so the unattended part stands on its own). The remainder is then
applied too, and a final re-diff must be empty (the whole plan converges).
"""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from pglast import ast, parser

from .apply import Step, execute_steps
from .config import EnvironmentConfig
from .db import connect, quote_ident, redact
from .diff import diff
from .errors import ApplyError, DesiredStateError, ReconcilerError
from .inspect import Inspection, filtered, inspect_database
from .scratch import ScratchServer


@dataclass(frozen=True)
class VetResult:
    """What replaying a plan on a clone showed."""

    safe_stands_alone: bool
    converged: bool
    failed_statement: str | None = None
    error: str | None = None
    residue: tuple[str, ...] = field(default_factory=tuple)

    @property
    def ok(self) -> bool:
        return self.safe_stands_alone and self.converged


def dump_schema(env_dsn: str, env: EnvironmentConfig, pg_dump: Path) -> str:
    """The environment's schema as SQL, without owners (and without grants unless privileges are managed)."""
    args = [str(pg_dump), "--schema-only", "--no-owner", "--no-comments", f"--dbname={env_dsn}"]
    if not env.privileges:
        args.append("--no-privileges")
    for s in env.schemas:
        args += ["--schema", s]
    for s in env.exclude_schemas:
        args += ["--exclude-schema", s]
    res = subprocess.run(args, capture_output=True, text=True, timeout=600)
    if res.returncode != 0:
        raise ReconcilerError(f"cloning the environment's schema: pg_dump failed: {redact(res.stderr.strip())}")
    # Drop psql meta-commands (\restrict, \unrestrict) that recent pg_dump versions write.
    return "\n".join(line for line in res.stdout.splitlines() if not line.startswith("\\"))


def _schemas_created(script: str) -> list[str]:
    return [
        str(raw.stmt.schemaname)
        for raw in parser.parse_sql(script)
        if isinstance(raw.stmt, ast.CreateSchemaStmt) and raw.stmt.schemaname
    ]


def clone_environment(scratch: ScratchServer, env_dsn: str, env: EnvironmentConfig, pg_dump: Path) -> tuple[str, str]:
    """A scratch database holding the environment's schema; returns (name, dsn). Caller drops it."""
    script = dump_schema(env_dsn, env, pg_dump)
    name, dsn = scratch.create_database()
    try:
        with connect(dsn, what="restoring the environment's schema in scratch", autocommit=True) as conn:
            # A dump filtered by --schema creates even the schemas a new database already has (public).
            for schema in _schemas_created(script):
                conn.execute(f"drop schema if exists {quote_ident(schema)} cascade".encode())
            conn.execute(script.encode("utf-8"))
    except BaseException as exc:
        scratch.drop_database(name)
        if isinstance(exc, ReconcilerError):
            raise
        raise ReconcilerError(f"cloning the environment's schema into scratch: {exc}") from exc
    return name, dsn


def vet_plan(
    scratch: ScratchServer,
    env_dsn: str,
    env: EnvironmentConfig,
    desired: Inspection,
    safe: Sequence[str | Step],
    remainder: Sequence[str | Step],
    pg_dump: Path,
) -> VetResult:
    """Replay ``safe`` then ``remainder`` on a clone; check both steps against the desired inspection."""
    name, dsn = clone_environment(scratch, env_dsn, env, pg_dump)
    want = filtered(desired, env.schemas, env.exclude_schemas)
    try:

        def rediff() -> list[str]:
            got = inspect_database(dsn, what="inspecting the scratch clone")
            return diff(filtered(got, env.schemas, env.exclude_schemas), want, privileges=env.privileges)

        with connect(dsn, what="vetting the plan on a scratch clone", autocommit=True) as conn:
            try:
                execute_steps(conn, safe, env)
            except ApplyError as exc:
                return VetResult(False, False, exc.statement, str(exc))
        after_safe = rediff()
        if list(after_safe) != [r.sql if isinstance(r, Step) else r for r in remainder]:
            return VetResult(
                False,
                False,
                None,
                "the unattended statements do not stand on their own: after them, a re-diff yields "
                "other statements than the queued remainder",
                tuple(after_safe),
            )
        with connect(dsn, what="vetting the plan on a scratch clone", autocommit=True) as conn:
            try:
                execute_steps(conn, remainder, env)
            except ApplyError as exc:
                return VetResult(True, False, exc.statement, str(exc))
        residue = rediff()
        if residue:
            return VetResult(
                True,
                False,
                None,
                "the plan does not converge: a re-diff after it is not empty",
                tuple(residue),
            )
        return VetResult(True, True)
    except DesiredStateError:
        raise
    finally:
        scratch.drop_database(name)
