"""Fleet sweep: one daemon pass over N in-sync environments of T tables, against a naive migra diff of each.

Starts an embedded PostgreSQL in a temporary folder, builds the desired schema (T tables with indexes, a view and
a foreign key each ten tables) in one database and clones it N times (``CREATE DATABASE ... TEMPLATE``). Each
environment is reconciled once (the full pass: it converges and records its fingerprint), then measured in this
one run, side by side:

* cold sweep: the first fast-path pass over every environment, per env (it opens a session to each and keeps it
  idle, ``daemon.keep_connections`` being the fleet's size here);
* sweep: the later fast-path passes (two sweeps), per env: the catalog stamp on a warm session (the fingerprint
  was read beside it by the cold sweep, and the stamp has not moved since);
* naive: what a script would do per environment: inspect it and the desired database with schemainspect and diff
  them with migra (median over a sample of environments);
* fingerprint: one schema fingerprint query on a fresh connection, as a one-off check would read it (connection
  set-up and catalog cache warm-up included; median over the environments).

Prints the ratios naive / sweep (the issue's floor: at least 20x) and sweep / fingerprint (at most 2x).

    .venv/bin/python benchmarks/bench_fleet.py [--environments 100] [--tables 200] [--sample 5] [--store postgresql|sqlite]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from reconciler.config import load_config
from reconciler.obs.logging import configure_logging
from reconciler.obs.metrics import Metrics
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.planning import read_fingerprint
from reconciler.reconcile.board import StatusBoard
from reconciler.reconcile.loop import ReconcileContext, reconcile
from reconciler.reconcile.result import Outcome, Request
from reconciler.service import Reconciler


def schema(tables: int) -> str:
    out = []
    for i in range(tables):
        fk = f", parent_id int references t{i - 1} (id)" if i % 10 == 9 else ""
        out.append(
            f"create table t{i} (id int primary key, name text not null, amount numeric(12,2), "
            f"created_at timestamptz not null default now(){fk});\n"
            f"create index t{i}_name on t{i} (name);\n"
        )
        if i % 10 == 0:
            out.append(f"create view v{i} as select id, name from t{i} where amount > 0;\n")
    return "".join(out)


def naive_diff(env_dsn: str, desired_dsn: str) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from migra import Migration
        from sqlbag import S
    with (
        S("postgresql+psycopg://", creator=lambda: psycopg.connect(env_dsn)) as s_env,
        S("postgresql+psycopg://", creator=lambda: psycopg.connect(desired_dsn)) as s_want,
    ):
        m = Migration(s_env, s_want)
        m.set_safety(False)
        m.add_all_changes()
        assert not m.statements, m.sql


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--environments", type=int, default=100)
    ap.add_argument("--tables", type=int, default=200)
    ap.add_argument("--sample", type=int, default=5)
    ap.add_argument("--store", choices=("postgresql", "sqlite"), default="postgresql")
    args = ap.parse_args()
    configure_logging("error")
    with tempfile.TemporaryDirectory(prefix="bench-fleet-") as tmp:
        root = Path(tmp)
        root.chmod(0o711)  # the embedded server may run as its own user
        pg = EmbeddedPostgres(root / "pg").start()
        try:
            return run(pg, root, args.environments, args.tables, args.sample, args.store)
        finally:
            pg.stop()


def run(pg: EmbeddedPostgres, root: Path, n: int, tables: int, sample: int, store: str) -> int:
    sql = schema(tables)
    (root / "desired").mkdir()
    (root / "desired" / "010.sql").write_text(sql)
    pg.create_database("fleet_template")
    with psycopg.connect(pg.dsn("fleet_template"), autocommit=True) as conn:
        conn.execute(sql.encode())
    names = [f"tenant{i:03d}" for i in range(n)]
    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
        for name in names:
            conn.execute(f"create database {name} template fleet_template".encode())
    config = {
        "desired_state": str(root / "desired"),
        "scratch": pg.dsn("postgres"),
        # Replicas that share a fleet share a PostgreSQL store; --store sqlite measures the single-process store.
        "state": f"sqlite:///{root}/state.db" if store == "sqlite" else pg.create_database("store"),
        "embedded": {"data_dir": str(pg.data_dir)},
        "sandbox": {"share_cluster_with_environments": True},  # a benchmark on one local server
        "fleets": {"tenants": {"names": names, "dsn": pg.dsn("TENANT").replace("TENANT", "{name}")}},
        "daemon": {"keep_connections": n},
    }
    (root / "reconciler.yaml").write_text(yaml.safe_dump(config))
    reconciler = Reconciler(load_config(root / "reconciler.yaml"))
    try:
        ctx = ReconcileContext(reconciler, Metrics(), StatusBoard(save=reconciler.store.save_status))
        t0 = time.perf_counter()
        for name in names:
            assert reconcile(Request(name), ctx).outcome is Outcome.SUCCESS
        first = (time.perf_counter() - t0) / n
        cold = _sweep(names, ctx)
        sweep = (_sweep(names, ctx) + _sweep(names, ctx)) / 2
        fast = sum(
            ctx.metrics.registry.get_sample_value("schema_reconciler_fast_path_passes_total", {"environment": name})
            or 0
            for name in names
        )
        fingerprint = statistics.median(_timed(lambda nm=nm: read_fingerprint(reconciler.target(nm))) for nm in names)
        desired = pg.dsn("fleet_template")
        naive = statistics.median(_timed(lambda nm=nm: naive_diff(pg.dsn(nm), desired)) for nm in names[:sample])
    finally:
        reconciler.close()
    print(f"fleet sweep: {n} in-sync environments of {tables} tables ({store} store)")
    print(f"  first (full) pass per environment:   {first * 1000:8.1f} ms")
    print(f"  cold sweep pass per environment:      {cold * 1000:8.1f} ms  (opens the sessions it keeps)")
    print(
        f"  sweep pass per environment:           {sweep * 1000:8.1f} ms  ({fast:.0f}/{3 * n} passes on the fast path)"
    )
    print(f"  one fingerprint query (fresh conn.):  {fingerprint * 1000:8.1f} ms")
    print(f"  naive migra diff per environment:     {naive * 1000:8.1f} ms  (median of {sample})")
    print(f"  naive / sweep:       {naive / sweep:6.1f}x  (floor: >= 20x)")
    print(f"  sweep / fingerprint: {sweep / fingerprint:6.2f}x  (floor: <= 2x)")
    return 0


def _sweep(names: list[str], ctx: ReconcileContext) -> float:
    """One pass over every environment: seconds per environment."""
    t0 = time.perf_counter()
    for name in names:
        assert reconcile(Request(name), ctx).outcome is Outcome.SUCCESS
    return (time.perf_counter() - t0) / len(names)


def _timed(fn: object) -> float:
    assert callable(fn)
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


if __name__ == "__main__":
    raise SystemExit(main())
