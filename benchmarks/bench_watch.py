"""What one replica can watch: a daemon over N in-sync tenant databases at a long interval, measured for a window.

Starts an embedded PostgreSQL in a temporary folder, builds a small desired schema into a template database and
creates N tenant databases from it (``CREATE DATABASE ... TEMPLATE``; default 1000), plus a PostgreSQL store
database. Runs ``reconciler run`` as a subprocess with one fleet of the N tenants (interval default 5 minutes),
waits until every tenant was reconciled once (that first pass converges each one and records its fingerprint),
then measures over the window (default 10 minutes):

* the daemon's CPU seconds per minute (user + system, reaped children included), and its RSS (max, last);
* the database server's CPU seconds per minute (postmaster, its reaped backends and live children);
* the daemon's open connections to the store database and to the tenant databases (``pg_stat_activity``,
  sampled every second: max and mean);
* passes per minute, fast-path passes, errors;
* how long ``/metrics`` took to answer during the first pass (at most).

    .venv/bin/python benchmarks/bench_watch.py [--environments 1000] [--interval 5m] [--seconds 600]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import psycopg
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_daemon import proc_cpu, proc_rss_mib, scrape, server_cpu, start_daemon, total

from reconciler.pgembedded import EmbeddedPostgres

SCHEMA = """
create table account (id bigint primary key, name text not null, created_at timestamptz not null default now());
create table invoice (id bigint primary key, account_id bigint not null references account (id),
                      amount numeric(12, 2) not null check (amount >= 0), issued_on date not null);
create index invoice_account on invoice (account_id);
create view open_invoice as select id, account_id, amount from invoice where amount > 0;
"""


def connections(dsn: str) -> tuple[int, int]:
    """The daemon's open sessions: (to the store database, to tenant databases)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "select count(*) filter (where datname = 'store'), count(*) filter (where datname like 'tenant%%')"
            " from pg_stat_activity where pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


def setup(pg: EmbeddedPostgres, base: Path, n: int, interval: str, concurrency: int) -> tuple[Path, list[str]]:
    (base / "desired").mkdir()
    (base / "desired" / "010_schema.sql").write_text(SCHEMA)
    pg.create_database("tenant_template")
    with psycopg.connect(pg.dsn("tenant_template"), autocommit=True) as conn:
        conn.execute(SCHEMA.encode())
    pg.create_database("store")
    names = [f"tenant{i:04d}" for i in range(n)]
    t0 = time.monotonic()

    def create(some: list[str]) -> None:
        with psycopg.connect(pg.dsn("postgres"), autocommit=True) as conn:
            for name in some:
                conn.execute(f"create database {name} template tenant_template".encode())

    with ThreadPoolExecutor(4) as pool:
        list(pool.map(create, [names[i::4] for i in range(4)]))
    print(f"created {n} tenant databases in {time.monotonic() - t0:.0f} s", flush=True)
    config = base / "reconciler.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "desired_state": str(base / "desired"),
                "scratch": pg.dsn("postgres"),
                "state": pg.dsn("store"),
                "embedded": {"data_dir": str(pg.data_dir)},
                "sandbox": {"share_cluster_with_environments": True},  # a benchmark on one local server
                "fleets": {
                    "tenants": {
                        "names": names,
                        "dsn": pg.dsn("TENANT").replace("TENANT", "{name}"),
                        "template": {"interval": interval},
                    }
                },
                "daemon": {"concurrency": concurrency, "jitter": 0.1},
            }
        )
    )
    return config, names


def fresh_scrape(url: str) -> Any:
    """The metrics as of now. A large fleet's /metrics answers with the previous rendering and renders anew in the
    background (Metrics.render_for_scrape): one scrape starts a rendering, the next, once it is done, gets it."""
    scrape(url, 120)
    time.sleep(FRESH_RENDER_WAIT)
    return scrape(url, 120)


FRESH_RENDER_WAIT = 20.0  # seconds: longer than one rendering of 1000 environments' series takes here


def watch(pg: EmbeddedPostgres, config: Path, names: list[str], seconds: float, settle: float) -> dict[str, Any]:
    postmaster = int((pg.data_dir / "postmaster.pid").read_text().splitlines()[0])
    t_launch = time.monotonic()
    with (config.parent / "daemon.log").open("w") as log:
        proc, url = start_daemon(config, timeout=settle, stderr=log)
    print(f"daemon serving after {time.monotonic() - t_launch:.1f} s", flush=True)
    try:
        t_start = time.monotonic()
        scrapes: list[float] = []  # how long /metrics took to answer during the first pass
        while True:
            t_scrape = time.monotonic()
            m = scrape(url, 120)
            scrapes.append(time.monotonic() - t_scrape)
            done = total(m, "schema_reconciler_reconciles_total", outcome="success")
            if done >= len(names) and all(
                total(m, "schema_reconciler_reconciles_total", environment=e, outcome="success") for e in names
            ):
                break
            if time.monotonic() - t_start > settle or proc.poll() is not None:
                raise SystemExit(f"only {done:.0f}/{len(names)} tenants reconciled in sync")
            time.sleep(5)
        first_pass = time.monotonic() - t_start
        print(f"every tenant reconciled once after {first_pass:.0f} s; measuring {seconds:.0f} s", flush=True)
        m0, cpu0, db0, t0 = fresh_scrape(url), proc_cpu(proc.pid), server_cpu(postmaster), time.monotonic()
        rss: list[float] = []
        store_conns: list[int] = []
        env_conns: list[int] = []
        while time.monotonic() - t0 < seconds:
            rss.append(proc_rss_mib(proc.pid))
            s, e = connections(pg.dsn("postgres"))
            store_conns.append(s)
            env_conns.append(e)
            time.sleep(1.0)
        m1, cpu1, db1, t1 = fresh_scrape(url), proc_cpu(proc.pid), server_cpu(postmaster), time.monotonic()
    finally:
        proc.terminate()
        proc.wait(timeout=120)
    minutes = (t1 - t0) / 60

    def delta(name: str, **labels: str) -> float:
        return total(m1, name, **labels) - total(m0, name, **labels)

    return {
        "environments": len(names),
        "first_pass_seconds": round(first_pass, 1),
        "metrics_scrape_seconds_max_in_first_pass": round(max(scrapes), 2),
        "window_seconds": round(t1 - t0, 1),
        "passes_per_minute": round(delta("schema_reconciler_reconciles_total") / minutes, 1),
        "fast_path_passes": delta("schema_reconciler_fast_path_passes_total"),
        "errors_in_window": delta("schema_reconciler_reconciles_total", outcome="error"),
        "daemon_cpu_seconds_per_minute": round((cpu1 - cpu0) / minutes, 2),
        "daemon_rss_mib_max": round(max(rss), 1),
        "daemon_rss_mib_last": round(rss[-1], 1),
        "postgres_cpu_seconds_per_minute": round((db1 - db0) / minutes, 2),
        "store_connections_max": max(store_conns),
        "store_connections_mean": round(statistics.mean(store_conns), 2),
        "environment_connections_max": max(env_conns),
        "environment_connections_mean": round(statistics.mean(env_conns), 2),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--environments", type=int, default=1000)
    ap.add_argument("--interval", default="5m", help="each tenant's reconcile interval")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--seconds", type=float, default=600.0, help="measurement window")
    ap.add_argument("--settle", type=float, default=3600.0, help="at most this long for the first pass")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-watch-") as tmp:
        base = Path(tmp)
        base.chmod(0o711)  # the embedded server may run as its own user
        pg = EmbeddedPostgres(base / "pg").start()
        try:
            config, names = setup(pg, base, args.environments, args.interval, args.concurrency)
            out = watch(pg, config, names, args.seconds, args.settle)
        finally:
            pg.stop()
    out.update(interval=args.interval, concurrency=args.concurrency)
    print("watching (daemon subprocess, one replica):")
    for k, v in out.items():
        print(f"  {k:34} {v}")
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
