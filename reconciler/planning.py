"""Planning: desired state + target -> :class:`~reconciler.model.Plan`. Reads the environment; writes nothing.

A plan is migra's difference between the environment and the desired build, each statement classified by the
hazard engine (data-aware: the figures of the tables it touches) and decided by the environment's policy. It is
bound to the environment's schema fingerprint, read *before* inspecting, so a change in between makes it stale.
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import structlog

from . import buildcache, hazards, policy
from .catalog import UNLISTED_KINDS, CatalogRow, describe, extend_fingerprint
from .config import EnvironmentConfig
from .db import connect, database_errors, server_major
from .drift import describe_options, plan_statements, residual
from .hazards.phases import order_phases
from .inspect import (
    Inspection,
    catalog_stamp,
    environment_fingerprint,
    filtered,
    inspect_database,
    portable,
    schema_fingerprint,
)
from .model import DatabaseIdentity, DesiredState, Plan, QualifiedName, Statement, TableStats
from .obs.phases import phase
from .scratch import ScratchServer
from .stats import Figures, invalid_indexes, read_figures, without_indexes
from .target import Target, read_identity

log = structlog.get_logger("reconciler")


def plan(scratch: ScratchServer, target: Target, desired: DesiredState) -> Plan:
    """What it takes to make ``target`` match ``desired``, with hazards and decisions."""
    env = target.env
    with phase("inspect"), ThreadPoolExecutor(max_workers=1, thread_name_prefix="plan-environment") as pool:
        # the environment is read while the desired facts are built or loaded (both mostly wait on PostgreSQL)
        reading = pool.submit(contextvars.copy_context().run, read_environment, scratch, target)
        inspection, wanted = scratch.desired_facts(desired, describe_options(env))
        want = filtered(inspection, env.schemas, env.exclude_schemas)
        (fingerprint, described), (current, identity) = reading.result()
    with phase("diff"):
        sqls = plan_statements(current, want, described, wanted, privileges=env.privileges)
        unmanaged = residual(described, wanted, sqls)
    with phase("classify"):
        statements = tuple(order_phases(classify(sqls, env, figures=read_plan_figures(target, sqls))))
    found = Plan(
        target.name,
        desired.revision,
        statements,
        fingerprint=fingerprint,
        database=str(identity),
        unmanaged_drift=unmanaged,
    )
    log.info(
        "plan_computed",
        environment=target.name,
        revision=desired.short_revision,
        statements=len(found.statements),
        destructive=found.destructive,
        unmanaged_drift=len(unmanaged),
    )
    return found


def read_environment(
    scratch: ScratchServer, target: Target
) -> tuple[tuple[str, tuple[CatalogRow, ...]], tuple[Inspection, DatabaseIdentity]]:
    """The target's fingerprint and description, then its inspection and identity: the fingerprint is read before
    inspecting, so a change in between makes the plan stale."""
    fingerprint, described = read_fingerprint_and_description(target)
    return (fingerprint, described), _inspect(scratch, target, fingerprint)


def read_fingerprint_and_description(target: Target) -> tuple[str, tuple[CatalogRow, ...]]:
    """The target's fingerprint and catalog description, on one connection (two catalog queries)."""
    env = target.env
    what = target.doing("describing the schema of")
    with database_errors(what), connect(target.dsn, what=what, connect_timeout=env.connect_timeout) as conn:
        listing = schema_fingerprint(conn, env.schemas, env.exclude_schemas, privileges=env.privileges, what=what)
        described = describe(conn, describe_options(env), what=what)
    unlisted = (r for r in described if r.kind in UNLISTED_KINDS)
    return extend_fingerprint(listing, unlisted), described


def inspect_target(scratch: ScratchServer, target: Target) -> Inspection:
    """The environment's inspection, filtered to its managed schemas (same major version as scratch, or refused)."""
    return _inspect(scratch, target)[0]


def _inspect(
    scratch: ScratchServer, target: Target, fingerprint: str | None = None
) -> tuple[Inspection, DatabaseIdentity]:
    """The inspection, and the identity of the database inspected (read on the same connection). With
    ``fingerprint`` (read just before), an inspection kept for it is used (:func:`_whole_inspection`)."""
    env = target.env
    what = target.doing("inspecting")
    with database_errors(what), connect(target.dsn, what=what, connect_timeout=env.connect_timeout) as conn:
        major = server_major(conn)
        invalid = invalid_indexes(conn)  # left by failed concurrent builds: not indexes, to be built again
        identity = read_identity(target, conn)
    scratch.check_same_major(target.name, major)
    got = _whole_inspection(scratch, target, major, fingerprint)
    return filtered(without_indexes(got, invalid), env.schemas, env.exclude_schemas), identity


def _whole_inspection(scratch: ScratchServer, target: Target, major: int, fingerprint: str | None) -> Inspection:
    """The target's whole inspection, kept across processes in the scratch server's cache folder under its schema
    fingerprint (read before, so the kept inspection is of the schema it vouches for; the same trust an approval
    puts in it), the target and its description options: an unchanged environment is not inspected again."""
    env = target.env
    what = target.doing("inspecting")
    folder = scratch.cache_dir
    if folder is None or fingerprint is None:
        return inspect_database(target.dsn, what=what, connect_timeout=env.connect_timeout)
    key = buildcache.cache_key(fingerprint, major, (target.name, target.database, describe_options(env)))
    kept = buildcache.load(folder, key, kind="environment")
    if kept is not None:
        return kept
    got = inspect_database(target.dsn, what=what, connect_timeout=env.connect_timeout)
    if read_fingerprint(target) == fingerprint:  # kept only if no change came between the fingerprint and it
        buildcache.save(folder, key, portable(got), kind="environment")
    return got


def read_database_identity(target: Target) -> DatabaseIdentity:
    """The identity of the target's database (one query on a connection of its own)."""
    what = target.doing("reading the database identity of")
    with database_errors(what), connect(target.dsn, what=what, connect_timeout=target.env.connect_timeout) as conn:
        return read_identity(target, conn)


def read_fingerprint(target: Target, conn: Any = None) -> str:
    """The fingerprint of the target's managed schemas: the listing's hash and the description rows it does not
    cover (two catalog queries on one connection: ``conn`` if given)."""
    env = target.env
    what = target.doing("reading the schema fingerprint of")
    return environment_fingerprint(
        target.dsn if conn is None else conn, describe_options(env), what=what, connect_timeout=env.connect_timeout
    )


# A stamp vouches for a fingerprint at most this long after the fingerprint was read: past it, the full
# fingerprint is read again even when the stamp is equal (a bound on any catalog change that escaped the stamp).
STAMP_TRUSTED_FOR = timedelta(hours=1)


@dataclass(frozen=True)
class StampedFingerprint:
    """A fingerprint, the catalog stamp read just before it, for which options, and when (monotonic seconds)."""

    options: str
    stamp: str
    fingerprint: str
    read_at: float


def read_fingerprint_stamped(target: Target, conn: Any, known: StampedFingerprint | None) -> StampedFingerprint:
    """The target's fingerprint, by the catalog stamp first (one cheap query): when the stamp equals ``known``'s,
    for the same options and within :data:`STAMP_TRUSTED_FOR`, ``known`` still holds and is returned; otherwise
    the fingerprint is read in full. The stamp is read first, so a change between the two reads leaves a stamp
    older than the fingerprint: the next call reads the fingerprint again (never the other way round)."""
    env = target.env
    options = repr((target.dsn, env.schemas, env.exclude_schemas, env.privileges, describe_options(env)))
    stamp = catalog_stamp(conn, what=target.doing("reading the catalog stamp of"))
    now = time.monotonic()
    if (
        known is not None
        and (known.options, known.stamp) == (options, stamp)
        and now - known.read_at < STAMP_TRUSTED_FOR.total_seconds()
    ):
        return known
    return StampedFingerprint(options, stamp, read_fingerprint(target, conn), now)


def read_plan_figures(target: Target, sqls: Sequence[str]) -> Figures:
    """Figures of the tables that ``sqls`` touch and facts about the functions they change (one connection; none
    for an empty plan)."""
    if not sqls:
        return Figures({})
    parsed = hazards.parse_plan(sqls)
    return read_figures(
        target.dsn,
        hazards.affected_relations(parsed),
        hazards.changed_functions(parsed),
        what=target.doing("reading table figures of"),
        connect_timeout=target.env.connect_timeout,
    )


def classify(
    sqls: Sequence[str],
    env: EnvironmentConfig,
    table_stats: Mapping[QualifiedName, TableStats] | None = None,
    *,
    figures: Figures | None = None,
) -> list[Statement]:
    """Hazards (data-aware when ``table_stats`` or ``figures`` are given), online-safe steps and the policy's
    decision. The two halves of a drop/re-create pair get the stricter of their decisions, so neither runs
    unattended without the other."""
    tables = figures.tables if figures is not None else table_stats
    found = hazards.examine(
        sqls,
        dict(tables) if tables is not None else None,
        timeouts=hazards.StepTimeouts.for_env(env),
        large=hazards.LargeTable(env.large_table.bytes, env.large_table.rows),
        online_rewrites=env.online_rewrites,
        production=env.production,
        builtin_functions=figures.builtin_functions if figures is not None else None,
        function_users=figures.function_users if figures is not None else None,
    )
    decisions = [policy.decide(e.hazards, env) for e in found]
    for drop, again in hazards.recreate_pairs(sqls):
        decisions[drop] = decisions[again] = policy.stricter(decisions[drop], decisions[again])
    return [
        Statement(e.sql, e.hazards, d, steps=e.steps, tables=e.tables) for e, d in zip(found, decisions, strict=True)
    ]
