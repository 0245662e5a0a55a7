"""What classification and vetting add to a plan, as a ratio to the raw migra diff of the same schema pair.

Builds a 200-table schema pair with 5 changes on an embedded PostgreSQL (the machine's binaries, in a temporary
folder), then times, medians of several repetitions measured in this one run:

* raw migra: inspect both databases with schemainspect and diff them with migra (what ``migra a b`` does);
* raw migra, desired pre-inspected: inspect the environment and diff (how the reconciler plans: the desired
  state is inspected once per revision);
* classification: one catalog query for the figures of the affected tables, every hazard check, the policy;
* vetting, as the applier does it: clone the environment's schema, replay the unattended part and re-diff, replay
  the remainder and prove the clone converged (its fingerprint equals the desired build's, else a re-diff). The
  environment is unchanged between runs, so the clone is a copy of its template (``CREATE DATABASE ... TEMPLATE``);
  beside it, one ``CREATE DATABASE ... TEMPLATE`` of that clone alone (floor: vetting <= 2x that) and a fresh clone
  (pg_dump + restore);
* a single ``reconciler plan`` process against the script a user would write (psql builds the desired SQL into a
  fresh database, the migra CLI diffs, psql drops the database), side by side (floor: ratio <= 1.0; the plan reuses
  the facts an earlier process kept, as a second run does; also shown with the environment inspected each time); and one
  ``reconciler plan`` process on a 1000-table pair (floor: < 3 s), three ways: *cold*, with the reconciler's cache
  folder emptied first (the process builds the desired state in a scratch database, inspects it and the
  environment: the floor's figure, the first plan of a new revision); *desired kept*, with the desired build's
  facts kept by an earlier process (a revision planned before, against a changed environment); and *warm*, with the
  environment's inspection kept too (the same revision and an unchanged environment, e.g. a second run).

Run: ``.venv/bin/python benchmarks/bench_plan.py [--tables 200] [--repeat 5] [--large 1000]``. Prints figures;
asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler import hazards, policy
from reconciler.catalog import describe
from reconciler.config import EnvironmentConfig
from reconciler.diff import diff
from reconciler.drift import describe_options, desired_description, residual
from reconciler.inspect import inspect_database
from reconciler.model import Decision, Statement
from reconciler.pgembedded import EmbeddedPostgres, find_bin_dir
from reconciler.scratch import ScratchServer
from reconciler.stats import read_table_stats
from reconciler.vet import clone_environment, clone_slot_and_key, desired_vetting_fingerprint, vet_plan

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]


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
    ap.add_argument("--large", type=int, default=1000, help="tables of the large single plan (0: skip single plans)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-plan-") as tmp:
        Path(tmp).chmod(0o711)  # as root the server runs as its own user, which must reach its data folder
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

            # As the applier vets: with the desired build's description rows and vetting fingerprint.
            options = describe_options(env)
            wanted = desired_description(desired_dsn, "bench", options, env.connect_timeout)
            # The fingerprint shortcut, only where the applier takes it: a plan that leaves no unmanaged drift.
            unmanaged = residual(describe(env_dsn, options, what="bench"), wanted, sqls)
            fingerprint = (
                None if unmanaged else desired_vetting_fingerprint(desired_dsn, "bench", options, env.connect_timeout)
            )

            def vet() -> Any:
                return vet_plan(
                    scratch,
                    env_dsn,
                    env,
                    desired,
                    safe,
                    rest,
                    pg_dump,
                    whole=statements,
                    wanted=wanted,
                    desired_fingerprint=fingerprint,
                )

            t_vet, result = timed(vet, args.repeat)
            t_copy = copy_template_time(scratch, env_dsn, env, pg_dump, args.repeat)

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
        ("vetting (copy of the template + replay + re-diffs)", t_vet),
        ("one CREATE DATABASE ... TEMPLATE of the clone", t_copy),
        ("a fresh clone (pg_dump, create db, restore)", t_clone),
        ("plan = pre-inspected diff + classification", t_pre + t_cls),
        ("plan + vetting", t_pre + t_cls + t_vet),
    ]
    for name, t in rows_out:
        print(f"{name:50} {t:8.3f} {t / t_raw:12.2f} {t / t_pre:31.2f}")
    ratio = t_vet / t_copy
    print(f"vetting an unchanged environment / one CREATE DATABASE ... TEMPLATE: {ratio:.2f} (floor: <= 2)")
    if args.large:
        single_plan(args.tables, args.large, args.repeat)
    return 0


def copy_template_time(
    scratch: ScratchServer, env_dsn: str, env: EnvironmentConfig, pg_dump: Path, repeat: int
) -> float:
    """Median time of one ``CREATE DATABASE ... TEMPLATE`` of the environment's kept clone (the drop not timed)."""
    template = scratch.template(*clone_slot_and_key(env_dsn, env, pg_dump))
    assert template is not None, "vetting kept no template"
    times = []
    with psycopg.connect(scratch.admin_dsn, autocommit=True) as conn:
        for _ in range(repeat + 1):
            started = time.perf_counter()
            conn.execute(f'create database bench_copy template "{template}"'.encode())
            times.append(time.perf_counter() - started)
            conn.execute(b"drop database bench_copy")
    return statistics.median(times[1:])


def single_plan(tables: int, large: int, repeat: int) -> None:
    """One ``reconciler plan`` process vs the script a user would write, side by side; then a large pair."""
    with tempfile.TemporaryDirectory(prefix="bench-single-") as tmp:
        Path(tmp).chmod(0o711)
        pg = EmbeddedPostgres(Path(tmp) / "data").start()
        try:
            t_cli, t_script = plan_vs_script(pg, Path(tmp) / "small", tables, repeat)
            t_read = statistics.median(run_plan(Path(tmp) / "small", "environment-*") for _ in range(repeat))
            folder = Path(tmp) / "large"
            _, t_script_large = plan_vs_script(pg, folder, large, 1)  # ends with every fact kept: a warm run
            t_warm = statistics.median(run_plan(folder) for _ in range(repeat))
            t_kept = statistics.median(run_plan(folder, forget="environment-*.pickle") for _ in range(repeat))
            t_cold = statistics.median(run_plan(folder, forget="*") for _ in range(repeat))
        finally:
            pg.stop()
    print()
    print(f"single plan, {tables} tables, medians of {repeat} runs (each a new process):")
    print(f"  reconciler plan:                          {t_cli:8.3f} s")
    print(f"  psql build + migra CLI + drop (a script): {t_script:8.3f} s")
    print(f"  ratio reconciler / script: {t_cli / t_script:.2f} (floor: <= 1.0)")
    print(f"  the environment inspected in every process: {t_read:.3f} s, ratio {t_read / t_script:.2f}")
    print(f"single plan, {large} tables, medians of {repeat} runs (each a new process):")
    print(f"  cold, nothing kept (the floor's figure): {t_cold:8.3f} s (floor: < 3 s)")
    print(f"  desired build kept, environment read:    {t_kept:8.3f} s")
    print(f"  warm, desired and environment kept:      {t_warm:8.3f} s")
    print(f"  psql build + migra CLI + drop (a script): {t_script_large:8.3f} s (one run)")


def run_plan(folder: Path, forget: str = "") -> float:
    """Wall time of one ``reconciler plan`` process on the pair in ``folder``, after removing the files of its
    cache folder that match ``forget`` (untimed)."""
    for kept in (folder / ".reconciler" / "cache").glob(forget) if forget else ():
        kept.unlink()
    cli = [sys.executable, "-m", "reconciler", "--config", str(folder / "reconciler.yaml"), "plan", "env"]
    started = time.perf_counter()
    subprocess.run(cli, check=True, capture_output=True, cwd=ROOT)
    return time.perf_counter() - started


def plan_vs_script(
    pg: EmbeddedPostgres, folder: Path, tables: int, repeat: int, *, script: bool = True
) -> tuple[float, float]:
    """Median wall times of ``reconciler plan`` and of the user's script on a ``tables``-table pair."""
    name = folder.name
    (folder / "desired-state").mkdir(parents=True)
    (folder / "desired-state" / "010_schema.sql").write_text(schema(tables, desired=True) + "\n")
    env_dsn = pg.create_database(f"bench_{name}_env")
    with psycopg.connect(env_dsn, autocommit=True) as conn:
        conn.execute(schema(tables, desired=False).encode())
    config = {
        "desired_state": "desired-state",
        "state": "sqlite:///state.db",
        "scratch": pg.dsn("postgres"),
        "sandbox": {"share_cluster_with_environments": True},
        "environments": {"env": {"dsn": env_dsn}},
    }
    (folder / "reconciler.yaml").write_text(yaml.safe_dump(config))
    cli = [sys.executable, "-m", "reconciler", "--config", str(folder / "reconciler.yaml"), "plan", "env"]
    t_cli, _ = timed(lambda: subprocess.run(cli, check=True, capture_output=True, cwd=ROOT), repeat)
    if not script:
        return t_cli, 0.0
    scratch_db = pg.dsn(f"bench_{name}_scratch")
    user_script = (
        f"psql -q -X -d '{pg.dsn('postgres')}' -c 'create database bench_{name}_scratch' && "
        f"psql -q -X -v ON_ERROR_STOP=1 -d '{scratch_db}' -f {folder / 'desired-state' / '010_schema.sql'} && "
        f"{Path(sys.executable).parent / 'migra'} --unsafe '{env_dsn}' '{scratch_db}'; "
        f"psql -q -X -d '{pg.dsn('postgres')}' -c 'drop database bench_{name}_scratch'"
    )
    t_script, _ = timed(lambda: subprocess.run(["sh", "-c", user_script], check=True, capture_output=True), repeat)
    return t_cli, t_script


if __name__ == "__main__":
    raise SystemExit(main())
