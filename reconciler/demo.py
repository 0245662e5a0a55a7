"""The bundled demo: a demo environment at an older revision of the example schema, holding rows.

It (re)creates the environment's database on the embedded PostgreSQL from ``config/demo/older-revision.sql`` and
``config/demo/seed.sql`` (next to the configuration file), then plans and applies, and shows that the safe changes
were applied while the destructive ones wait for approval with the data still in place.
"""

from __future__ import annotations

from pathlib import Path

from .cli_render import render_apply, render_plan, render_plans
from .db import connect, database_errors, parse_dsn, quote_ident
from .errors import ConfigError, ReconcilerError
from .model import PlanStatus
from .service import EMBEDDED_SCHEME, Reconciler


def _count(dsn: str, sql: str) -> str:
    what = "reading the demo environment"
    try:
        with database_errors(what), connect(dsn, what=what) as conn:
            row = conn.execute(sql.encode()).fetchone()
            return str(row[0]) if row else "?"
    except ReconcilerError as exc:
        return f"unavailable ({exc})"


def reset_demo_database(reconciler: Reconciler, env_name: str) -> str:
    target = reconciler.target(env_name)
    env = target.env
    if not env.dsn.startswith(EMBEDDED_SCHEME):
        raise ConfigError(
            f"the demo recreates its environment, so {env_name!r} must use an embedded:NAME dsn",
            path=reconciler.config.source,
            key=f"environments.{env_name}.dsn",
        )
    demo_dir = Path(reconciler.config.source).resolve().parent / "demo"
    older = demo_dir / "older-revision.sql"
    seed = demo_dir / "seed.sql"
    dsn = target.dsn
    dbname = parse_dsn(dsn)["dbname"]
    what = "creating the demo database"
    with database_errors(what), connect(reconciler.embedded.dsn("postgres"), what=what, autocommit=True) as conn:
        conn.execute(f"drop database if exists {quote_ident(dbname)} with (force)".encode())
        conn.execute(f"create database {quote_ident(dbname)}".encode())
    what = "loading the demo database"
    with database_errors(what), connect(dsn, what=what, autocommit=True) as conn:
        conn.execute(older.read_text(encoding="utf-8").encode())
        conn.execute(seed.read_text(encoding="utf-8").encode())
    # Plans of an earlier demo run are about a database that no longer exists.
    reconciler.store.settle(env_name, "the demo environment was recreated", approved_too=True)
    return dsn


def run_demo(reconciler: Reconciler, env_name: str = "demo") -> int:
    print(f"== 1. starting the embedded PostgreSQL and creating environment {env_name!r} at an older revision")
    dsn = reset_demo_database(reconciler, env_name)
    legacy = "select count(*) from public.users where legacy_score is not null"
    print(f"   rows in users.legacy_score (dropped by the desired state): {_count(dsn, legacy)}")
    print(
        f"   rows in legacy_sessions (dropped by the desired state):    "
        f"{_count(dsn, 'select count(*) from public.legacy_sessions')}"
    )
    print()
    print(f"== 2. reconciler plan {env_name}")
    print(render_plan(reconciler.plan(env_name)))
    print()
    print(f"== 3. reconciler apply {env_name}")
    result = reconciler.apply(env_name)
    print(render_apply(result))
    print()
    print("== 4. the destructive remainder waits for approval; the data is still there")
    print(render_plans(reconciler.store.list_plans(env_name, PlanStatus.PENDING)))
    print(f"   rows in users.legacy_score: {_count(dsn, legacy)}")
    print(f"   rows in legacy_sessions:    {_count(dsn, 'select count(*) from public.legacy_sessions')}")
    print()
    cfg = reconciler.config.source
    if result.queued_plan_id is not None:
        print("== next: approve and apply it (the environment lives on in the embedded server's data folder):")
        print(f"   reconciler -c {cfg} approve {result.queued_plan_id} {_approver_hint(reconciler, env_name)}")
        print(f"   reconciler -c {cfg} apply {env_name}")
    return 0


def _approver_hint(reconciler: Reconciler, env_name: str) -> str:
    """How to approve: with the token of an identity that may decide ``env_name`` when tokens are configured
    (``reconciler run --demo`` creates a missing token file), else by name."""
    for t in reconciler.config.server.tokens:
        if t.token_file and ("*" in t.environments or env_name in t.environments):
            return f"--token-file {t.token_file}"
    return "--by $USER"
