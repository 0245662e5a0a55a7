"""What the drift corpus, the drift hunt and the drift property test share: the cases, the normalised dump, applying
a plan to the end, and the guarantee they check (never ``in_sync`` while ``pg_dump --schema-only`` of the two
databases differs)."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass

import psycopg

from reconciler.model import Plan
from reconciler.pgembedded import EmbeddedPostgres, find_bin_dir
from reconciler.service import Reconciler

CONVERGES = "converges"
PLAN_WAITS = "plan waits"  # migra's statements fail on the vetting clone: nothing runs, the plan stays


@dataclass(frozen=True)
class Case:
    name: str
    current: str
    desired: str
    expect: str  # CONVERGES, PLAN_WAITS, or the kind of unmanaged drift that remains
    plan_has: str = ""  # a text the first plan's statements must hold (how the difference is closed)
    owners: bool = False  # compare_owners (the dumps, taken --no-owner, do not show the difference)
    needs_icu: bool = False  # skipped on a server built without ICU (the PostgreSQL 17 wheel of test-corpus-pg)


READER = "drift_reader"  # a role the corpus grants to
OWNER = "drift_owner"  # a role the corpus gives objects to


def pg_dump_schema(dsn: str, *, privileges: bool) -> list[str]:
    """``pg_dump --schema-only --no-owner`` of ``dsn``, normalised: without comment lines, session settings and
    blank lines, as a sorted list of statements (pg_dump's order follows object ids)."""
    args = [str(find_bin_dir() / "pg_dump"), "--schema-only", "--no-owner", f"--dbname={dsn}"]
    if not privileges:
        args.append("--no-privileges")
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=120).stdout
    kept = [
        line
        for line in out.splitlines()
        if line.strip() and not line.startswith(("--", "SET ", "SELECT pg_catalog.set_config", "\\"))
    ]
    return sorted(s.strip() for s in "\n".join(kept).split(";\n") if s.strip())


def ensure_reader(pg_server: EmbeddedPostgres) -> str:
    """The roles :data:`READER` and :data:`OWNER`, created on the test server if missing; returns the reader."""
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        for role in (READER, OWNER):
            if not conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone():
                conn.execute(f"create role {role}".encode())
    return READER


def apply_all(reconciler: Reconciler, env: str = "dev") -> None:
    """Apply; approve and apply once more what needed approval."""
    first = reconciler.apply(env)
    if first.queued_plan_id is not None:
        reconciler.approve(first.queued_plan_id, "alice")
        reconciler.apply(env)


@dataclass(frozen=True)
class Settled:
    """The re-plan after applying everything, and whether the two dumps are then equal."""

    after: Plan
    same: bool


def settle(reconciler: Reconciler, env_dsn: str, built_dsn: str, env: str = "dev") -> Settled:
    """Apply everything, re-plan, and check the guarantee: never in sync while the dumps differ, and a plan that
    does not converge says why (statements left, or unmanaged drift with a kind)."""
    apply_all(reconciler, env)
    after = reconciler.plan(env)
    same = pg_dump_schema(env_dsn, privileges=True) == pg_dump_schema(built_dsn, privileges=True)
    assert same or not after.in_sync, after.to_json()
    if not same:
        assert after.statements or all(d.kind for d in after.unmanaged_drift), after.to_json()
        assert after.statements or after.unmanaged_drift, after.to_json()
    return Settled(after, same)


def said(plan: Plan) -> str:
    """What a plan said, compactly: in sync, its statements, its unmanaged drift."""
    drift = [(d.kind, d.object) for d in plan.unmanaged_drift]
    return f"in_sync={plan.in_sync} statements={[s.sql[:160] for s in plan.statements]} drift={drift}"


def check_case(case: Case, reconciler: Reconciler, env: str, built: str) -> None:
    """The first plan is not in sync (the dumps differ), holds ``case.plan_has``, and ends as ``case.expect``."""
    env_dump, built_dump = pg_dump_schema(env, privileges=True), pg_dump_schema(built, privileges=True)
    assert case.owners or env_dump != built_dump, "the dumps do not differ"
    shown = f"environment only: {sorted(set(env_dump) - set(built_dump))}; desired only: {sorted(set(built_dump) - set(env_dump))}"
    before = reconciler.plan("dev")
    assert not before.in_sync, "first plan in sync while the dumps differ: " + said(before) + "; " + shown
    assert not case.plan_has or any(case.plan_has in s.sql for s in before.statements), said(before)
    settled = settle(reconciler, env, built)
    after = settled.after
    if case.expect == CONVERGES:
        assert after.in_sync and settled.same, "after: " + said(after)
    elif case.expect == PLAN_WAITS:
        assert after.statements and not after.in_sync, "after: " + said(after)
    else:
        assert not after.statements and not after.in_sync, "after: " + said(after)
        assert case.expect in {d.kind for d in after.unmanaged_drift}, "after: " + said(after)
