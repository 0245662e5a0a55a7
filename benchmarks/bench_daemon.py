"""The daemon's steady-state cost watching in-sync environments, and one reconcile against one raw migra diff.

Starts an embedded PostgreSQL in a temporary folder, creates N databases (default 20) holding the bundled example
schema (``desired-state/``), runs ``reconciler run`` on them as a subprocess with a short interval, waits until
every environment was reconciled once, then measures over a window:

* the daemon process's CPU seconds per minute (user + system, its reaped children included) and its RSS;
* the database server's CPU seconds per minute (postmaster, its reaped backends and live children);
* reconciles per minute (from the daemon's own metrics).

In the same run and process it times, for one of the environments, one in-process ``reconcile()`` of the
in-sync environment (the desired state already built and inspected, as in the steady state) against one raw
migra diff of the same pair (migra's ``Migration`` on two fresh connections: environment and the built desired
database), medians of several alternating runs, and prints their ratio.

    .venv/bin/python benchmarks/bench_daemon.py [--environments 20] [--interval 5s] [--seconds 60]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import warnings
from pathlib import Path
from typing import Any

import psycopg
import yaml
from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from reconciler.config import load_config  # noqa: E402
from reconciler.desired import load_desired  # noqa: E402
from reconciler.obs.logging import configure_logging  # noqa: E402
from reconciler.obs.metrics import PHASES, Metrics  # noqa: E402
from reconciler.pgembedded import EmbeddedPostgres  # noqa: E402
from reconciler.reconcile.board import StatusBoard  # noqa: E402
from reconciler.reconcile.loop import ReconcileContext, reconcile  # noqa: E402
from reconciler.reconcile.result import Outcome, Request  # noqa: E402
from reconciler.service import Reconciler  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def proc_cpu(pid: int, *, children: bool = True) -> float:
    """CPU seconds of ``pid`` (user + system), plus its reaped children's when ``children``."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # after the ")": state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def proc_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def child_pids(pid: int) -> list[int]:
    out = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                stat = (p / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                out.append(int(p.name))
    return out


def server_cpu(postmaster: int) -> float:
    total = proc_cpu(postmaster)
    for c in child_pids(postmaster):
        with contextlib.suppress(OSError):
            total += proc_cpu(c, children=False)
    return total


def scrape(url: str, timeout: float = 10) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"{url}/metrics", timeout=timeout) as resp:
        text = resp.read().decode()
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(m: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, lab), v in m.items() if n == name and want <= set(lab))


def start_daemon(
    config: Path, *, timeout: float = 60, stderr: Any = subprocess.DEVNULL
) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "reconciler", "-c", str(config), "--log-level", "warning", "run", "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=stderr,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    while True:
        line = lines.get(timeout=timeout)
        if "metrics:" in line:
            return proc, line.split("metrics:", 1)[1].strip().removesuffix("/metrics")


def time_one_reconcile_vs_migra(config_path: Path, env: str, runs: int) -> dict[str, float]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from migra import Migration
        from sqlbag import S

    cfg = load_config(config_path)
    reconciler = Reconciler(cfg)
    try:
        ctx = ReconcileContext(reconciler, Metrics(), StatusBoard())
        first = reconcile(Request(env), ctx)  # builds and inspects the desired state once, as the daemon does
        assert first.outcome is Outcome.SUCCESS, first
        built = reconciler.scratch.build_desired(reconciler.load_desired())
        env_dsn = reconciler.target(env).dsn

        def raw_migra() -> None:
            with (
                S("postgresql+psycopg://", creator=lambda: psycopg.connect(env_dsn)) as s_env,
                S("postgresql+psycopg://", creator=lambda: psycopg.connect(built.dsn)) as s_want,
            ):
                m = Migration(s_env, s_want)
                m.set_safety(False)
                m.add_all_changes()
                assert not m.statements, m.sql

        t_rec: list[float] = []
        t_migra: list[float] = []
        for _ in range(runs):
            t0 = time.perf_counter()
            res = reconcile(Request(env), ctx)
            t_rec.append(time.perf_counter() - t0)
            assert res.outcome is Outcome.SUCCESS, res
            t0 = time.perf_counter()
            raw_migra()
            t_migra.append(time.perf_counter() - t0)
        r, m = statistics.median(t_rec), statistics.median(t_migra)
        out = {"reconcile_seconds": r, "raw_migra_diff_seconds": m, "ratio": r / m}
        count = ctx.metrics.registry.get_sample_value(
            "schema_reconciler_reconcile_duration_seconds_count", {"environment": env}
        )
        for phase in PHASES:
            got = ctx.metrics.registry.get_sample_value(
                "schema_reconciler_reconcile_phase_duration_seconds_sum", {"environment": env, "phase": phase}
            )
            if got and count:
                out[f"phase_{phase}_seconds_per_reconcile"] = got / count
        return out
    finally:
        reconciler.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--environments", type=int, default=20)
    ap.add_argument("--interval", default="5s", help="each environment's reconcile interval")
    ap.add_argument("--concurrency", type=int, default=4)
    ap.add_argument("--warmup", type=float, default=10.0, help="seconds after every environment was reconciled once")
    ap.add_argument("--seconds", type=float, default=60.0, help="measurement window")
    ap.add_argument("--runs", type=int, default=7, help="alternating runs for the reconcile/migra ratio")
    args = ap.parse_args()
    configure_logging("warning")

    desired = load_desired(ROOT / "desired-state")
    with tempfile.TemporaryDirectory(prefix="bench-daemon-") as tmp:
        base = Path(tmp)
        base.chmod(0o711)  # the embedded server may run as its own user
        pg = EmbeddedPostgres(base / "pg").start()
        try:
            envs: dict[str, dict[str, Any]] = {}
            for i in range(1, args.environments + 1):
                name = f"env{i:02d}"
                dsn = pg.create_database(name)
                with psycopg.connect(dsn, autocommit=True) as conn:
                    for f in desired.files:
                        conn.execute(f.text.encode())
                envs[name] = {"dsn": dsn, "interval": args.interval}
            config = base / "reconciler.yaml"
            config.write_text(
                yaml.safe_dump(
                    {
                        "desired_state": str(ROOT / "desired-state"),
                        "scratch": pg.dsn("postgres"),
                        "state": f"sqlite:///{base / 'state.db'}",
                        "embedded": {"data_dir": str(base / "pg")},
                        "environments": envs,
                        "daemon": {"concurrency": args.concurrency, "jitter": 0.1},
                    }
                )
            )
            postmaster = int((base / "pg" / "postmaster.pid").read_text().splitlines()[0])

            proc, url = start_daemon(config)
            try:
                deadline = time.monotonic() + 300
                while True:
                    m = scrape(url)
                    done = sum(
                        1
                        for e in envs
                        if total(m, "schema_reconciler_reconciles_total", environment=e, outcome="success")
                    )
                    if done == len(envs):
                        break
                    if time.monotonic() > deadline or proc.poll() is not None:
                        raise SystemExit(f"only {done}/{len(envs)} environments reconciled in sync")
                    time.sleep(0.5)
                assert total(m, "schema_reconciler_drift") == 0, "an environment drifts"
                time.sleep(args.warmup)

                m0, cpu0, db0, t0 = scrape(url), proc_cpu(proc.pid), server_cpu(postmaster), time.monotonic()
                rss: list[float] = []
                while time.monotonic() - t0 < args.seconds:
                    rss.append(proc_rss_mib(proc.pid))
                    time.sleep(1.0)
                m1, cpu1, db1, t1 = scrape(url), proc_cpu(proc.pid), server_cpu(postmaster), time.monotonic()
                minutes = (t1 - t0) / 60
                reconciles = total(m1, "schema_reconciler_reconciles_total") - total(
                    m0, "schema_reconciler_reconciles_total"
                )
                errors = total(m1, "schema_reconciler_reconciles_total", outcome="error") - total(
                    m0, "schema_reconciler_reconciles_total", outcome="error"
                )
                steady = {
                    "environments": len(envs),
                    "interval": args.interval,
                    "concurrency": args.concurrency,
                    "window_seconds": round(t1 - t0, 1),
                    "reconciles_per_minute": round(reconciles / minutes, 1),
                    "errors_in_window": errors,
                    "daemon_cpu_seconds_per_minute": round((cpu1 - cpu0) / minutes, 2),
                    "daemon_cpu_ms_per_reconcile": round(1000 * (cpu1 - cpu0) / max(reconciles, 1), 1),
                    "daemon_rss_mib_max": round(max(rss), 1),
                    "daemon_rss_mib_last": round(rss[-1], 1),
                    "postgres_cpu_seconds_per_minute": round((db1 - db0) / minutes, 2),
                }
            finally:
                proc.terminate()
                code = proc.wait(timeout=60)
            steady["daemon_exit_code_after_sigterm"] = code

            ratio = time_one_reconcile_vs_migra(config, "env01", args.runs)
        finally:
            pg.stop()

    print("steady state (daemon subprocess):")
    for k, v in steady.items():
        print(f"  {k:34} {v}")
    print(f"one in-sync reconcile vs one raw migra diff of the same pair (median of {args.runs}):")
    print(f"  reconcile                          {ratio['reconcile_seconds'] * 1000:.1f} ms")
    print(f"  raw migra diff                     {ratio['raw_migra_diff_seconds'] * 1000:.1f} ms")
    print(f"  ratio                              {ratio['ratio']:.2f}")
    for k, v in ratio.items():
        if k.startswith("phase_"):
            print(f"  {k:34} {v * 1000:.1f} ms")
    print(json.dumps({"steady_state": steady, "reconcile_vs_migra": ratio}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
