"""Planning: desired state + target -> :class:`~reconciler.model.Plan`. Reads the environment; writes nothing.

A plan is migra's difference between the environment and the desired build, each statement classified by the
hazard engine (data-aware: the figures of the tables it touches) and decided by the environment's policy. It is
bound to the environment's schema fingerprint, read *before* inspecting, so a change in between makes it stale.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import structlog

from . import hazards, policy
from .catalog import CatalogRow, describe
from .config import EnvironmentConfig
from .db import connect, database_errors, server_major
from .drift import describe_options, desired_description, plan_statements, residual
from .inspect import Inspection, filtered, inspect_database, schema_fingerprint
from .model import DesiredState, Plan, Statement, TableStats
from .obs.phases import phase
from .scratch import ScratchServer
from .stats import invalid_indexes, read_table_stats, without_indexes
from .target import Target

log = structlog.get_logger("reconciler")


def plan(scratch: ScratchServer, target: Target, desired: DesiredState) -> Plan:
    """What it takes to make ``target`` match ``desired``, with hazards and decisions."""
    env = target.env
    with phase("inspect"):
        built = scratch.build_desired(desired)
        want = filtered(built.inspection, env.schemas, env.exclude_schemas)
        # before inspecting: a change in between makes the plan stale
        fingerprint, described = read_fingerprint_and_description(target)
        current = inspect_target(scratch, target)
    with phase("diff"):
        wanted = desired_description(built.dsn, desired.revision, describe_options(env), env.connect_timeout)
        sqls = plan_statements(current, want, described, wanted, privileges=env.privileges)
        unmanaged = residual(described, wanted, sqls)
    with phase("classify"):
        statements = tuple(classify(sqls, env, table_stats(target, sqls)))
    found = Plan(
        target.name,
        desired.revision,
        statements,
        fingerprint=fingerprint,
        database=target.database,
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


def read_fingerprint_and_description(target: Target) -> tuple[str, tuple[CatalogRow, ...]]:
    """The target's fingerprint and catalog description, on one connection (two catalog queries)."""
    env = target.env
    what = target.doing("describing the schema of")
    with database_errors(what), connect(target.dsn, what=what, connect_timeout=env.connect_timeout) as conn:
        fingerprint = read_fingerprint(target, conn)
        return fingerprint, describe(conn, describe_options(env), what=what)


def inspect_target(scratch: ScratchServer, target: Target) -> Inspection:
    """The environment's inspection, filtered to its managed schemas (same major version as scratch, or refused)."""
    env = target.env
    what = target.doing("inspecting")
    with database_errors(what), connect(target.dsn, what=what, connect_timeout=env.connect_timeout) as conn:
        major = server_major(conn)
        invalid = invalid_indexes(conn)  # left by failed concurrent builds: not indexes, to be built again
    scratch.check_same_major(target.name, major)
    got = inspect_database(target.dsn, what=what, connect_timeout=env.connect_timeout)
    return filtered(without_indexes(got, invalid), env.schemas, env.exclude_schemas)


def read_fingerprint(target: Target, conn: Any = None) -> str:
    """The fingerprint of the target's managed schemas (one catalog query; on ``conn`` if given)."""
    env = target.env
    return schema_fingerprint(
        conn if conn is not None else target.dsn,
        env.schemas,
        env.exclude_schemas,
        privileges=env.privileges,
        connect_timeout=env.connect_timeout,
        what=target.doing("reading the schema fingerprint of"),
    )


def table_stats(target: Target, sqls: Sequence[str]) -> dict[str, TableStats]:
    """Figures of the tables that ``sqls`` touch in the target (one catalog query; none for an empty plan)."""
    if not sqls:
        return {}
    return read_table_stats(
        target.dsn,
        hazards.affected_relations(hazards.parse_plan(sqls)),
        what=target.doing("reading table figures of"),
        connect_timeout=target.env.connect_timeout,
    )


def classify(
    sqls: Sequence[str], env: EnvironmentConfig, table_stats: Mapping[str, TableStats] | None = None
) -> list[Statement]:
    """Hazards (data-aware when ``table_stats`` are given), online-safe steps and the policy's decision."""
    found = hazards.examine(
        sqls,
        dict(table_stats) if table_stats is not None else None,
        timeouts=hazards.StepTimeouts.for_env(env),
        large=hazards.LargeTable(env.large_table.bytes, env.large_table.rows),
        online_rewrites=env.online_rewrites,
    )
    return [Statement(e.sql, e.hazards, policy.decide(e.hazards, env), steps=e.steps, tables=e.tables) for e in found]
