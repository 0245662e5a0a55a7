"""What classification and vetting add to a plan, as a ratio to the raw migra diff of the same schema pair.

Builds a 200-table schema pair with 5 changes on an embedded PostgreSQL (the machine's binaries, in a temporary
folder), then times, medians of several repetitions measured in this one run:

* raw migra: inspect both databases with schemainspect and diff them with migra (what ``migra a b`` does);
* raw migra, desired pre-inspected: inspect the environment and diff (how the reconciler plans: the desired
  state is inspected once per revision);
* classification: one catalog query for the figures of the affected tables, every hazard check, the policy;
* vetting: clone the environment's schema (pg_dump + restore), replay the unattended part and the remainder,
  re-diff after each.

Run: ``.venv/bin/python benchmarks/bench_plan.py [--tables 200] [--repeat 5]``. Prints ratios; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler import hazards, policy
from reconciler.config import EnvironmentConfig
from reconciler.diff import diff
from reconciler.inspect import inspect_database
from reconciler.model import Decision, Statement
from reconciler.pgembedded import EmbeddedPostgres, find_bin_dir
from reconciler.scratch import ScratchServer
from reconciler.stats import read_table_stats
from reconciler.vet import clone_environment, vet_plan

T = TypeVar("T")


def schema(tables: int, *, desired: bool) -> str:
    """``tables`` tables in chains of foreign keys, with indexes and a view per 20 tables; ``desired`` adds 5 changes."""
    out = []
    for i in range(tables):
        cols = [
            "id bigint primary key",
            "name text not null",
            "amount numeric(12,2) default 0",
            "created_at timestamptz not null default now()",
            f"ref_id bigint references t{i - 1:03d} (id)" if i else "ref_id bigint",
        ]
        if desired and i == 10:
            cols.append("note text")  # 1. column added
        if desired and i == 20:
            cols[2] = "amount numeric(14,2) default 0"  # 2. type widened
        if not (desired and i == 30):
            cols.append("legacy int")  # 3. column dropped in the desired state
        out.append(f"create table t{i:03d} ({', '.join(cols)});")
        out.append(f"create index t{i:03d}_name on t{i:03d} (name);")
        if desired and i == 40:
            out.append(f"create index t{i:03d}_created on t{i:03d} (created_at);")  # 4. index added
        if i % 20 == 19:
            out.append(f"create view v{i:03d} as select id, name from t{i:03d} where amount > 0;")
    if desired:
        out.append("create table audit_log (id bigserial primary key, at timestamptz default now(), what text);")  # 5.
    return "\n".join(out)


def rows(tables: int) -> str:
    """50 rows in every table, analyzed, so that the figures are real."""
    inserts = [
        f"insert into t{i:03d} (id, name) select g, 'n' || g from generate_series(1, 50) g;" for i in range(tables)
    ]
    return "\n".join([*inserts, "analyze;"])


def timed(fn: Callable[[], T], repeat: int) -> tuple[float, T]:
    """Median wall time of ``repeat`` runs of ``fn`` (after one warm-up run), and the last result."""
    result = fn()
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times), result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tables", type=int, default=200)
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        pg = EmbeddedPostgres(Path(tmp) / "data").start()
        try:
            env_dsn = pg.create_database("bench_env")
            desired_dsn = pg.create_database("bench_desired")
            with psycopg.connect(env_dsn, autocommit=True) as conn:
                conn.execute(schema(args.tables, desired=False).encode())
                conn.execute(rows(args.tables).encode())
            with psycopg.connect(desired_dsn, autocommit=True) as conn:
                conn.execute(schema(args.tables, desired=True).encode())
            env = EnvironmentConfig(dsn=env_dsn)
            scratch = ScratchServer(pg.dsn("postgres"))
            pg_dump = find_bin_dir() / "pg_dump"

            def raw_full() -> list[str]:
                a = inspect_database(env_dsn, what="bench")
                b = inspect_database(desired_dsn, what="bench")
                return diff(a, b)

            desired = inspect_database(desired_dsn, what="bench")

            def raw_prebuilt() -> list[str]:
                return diff(inspect_database(env_dsn, what="bench"), desired)

            t_raw, sqls = timed(raw_full, args.repeat)
            t_pre, _ = timed(raw_prebuilt, args.repeat)

            def classify() -> list[Statement]:
                stats = read_table_stats(env_dsn, hazards.affected_relations(hazards.parse_plan(sqls)), what="bench")
                found = hazards.examine(sqls, stats, timeouts=hazards.StepTimeouts.for_env(env))
                return [
                    Statement(e.sql, e.hazards, policy.decide(e.hazards, env), steps=e.steps, tables=e.tables)
                    for e in found
                ]

            t_cls, statements = timed(classify, args.repeat)
            safe = [s for s in statements if s.decision is Decision.AUTO]
            rest = [s for s in statements if s.decision is not Decision.AUTO]

            def vet() -> Any:
                return vet_plan(scratch, env_dsn, env, desired, safe, rest, pg_dump, whole=statements)

            t_vet, result = timed(vet, args.repeat)

            def clone() -> None:
                name, _ = clone_environment(scratch, env_dsn, env, pg_dump)
                scratch.drop_database(name)

            t_clone, _ = timed(clone, args.repeat)
            scratch.close()
        finally:
            pg.stop()

    print(f"schema pair: {args.tables} tables, {len(sqls)} statements; medians of {args.repeat} runs")
    for s in statements:
        codes = ",".join(h.code for h in s.hazards) or "-"
        print(f"  [{s.decision.value:14}] {codes:12} {' '.join(s.sql.split())[:90]}")
    print(f"vetting: {'converges' if result.ok else result.describe()}")
    print()
    print(f"{'phase':50} {'seconds':>8} {'x raw migra':>12} {'x migra, desired pre-inspected':>31}")
    rows_out = [
        ("raw migra (inspect both + diff)", t_raw),
        ("raw migra, desired pre-inspected", t_pre),
        ("classification (figures + checks + policy)", t_cls),
        ("vetting (clone + replay + 2 re-diffs)", t_vet),
        ("  of which cloning (pg_dump, create db, restore)", t_clone),
        ("plan = pre-inspected diff + classification", t_pre + t_cls),
        ("plan + vetting", t_pre + t_cls + t_vet),
    ]
    for name, t in rows_out:
        print(f"{name:50} {t:8.3f} {t / t_raw:12.2f} {t / t_pre:31.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
