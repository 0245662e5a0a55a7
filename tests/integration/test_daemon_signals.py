"""``reconciler run`` as a subprocess: SIGTERM/SIGINT exit 0, a running apply finishes or rolls back, never half.

To catch the daemon in the middle of an apply, the test holds a lock the apply needs: an open transaction that
inserted a row keeps ROW EXCLUSIVE on the table (pg_dump's vetting clone is not blocked by it), and the plan's
ALTER TABLE waits for ACCESS EXCLUSIVE.
"""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

import psycopg
import pytest
from conftest import run_sql
from daemon_helpers import FAST_DAEMON, wait_for

CURRENT = "create table t (id int primary key, v int); insert into t values (1, 1);"
DESIRED = {"010.sql": "create table t (id int primary key, v int, c int);\ncreate table extra (id int);\n"}


class Daemon:
    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--config", str(config), "--log-level", "info", "run", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.stdout: queue.Queue[str] = queue.Queue()
        self.stderr: list[str] = []
        self._threads = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self.stdout.put), daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self.stderr.append), daemon=True),
        ]
        for t in self._threads:
            t.start()

    @staticmethod
    def _pump(stream: IO[str] | None, sink: Callable[[str], None]) -> None:
        assert stream is not None
        for line in stream:
            sink(line)

    def wait_started(self) -> str:
        while True:
            try:
                line = self.stdout.get(timeout=30)
            except queue.Empty:
                raise AssertionError("the daemon did not print its URLs:\n" + "".join(self.stderr)) from None
            if "metrics:" in line:
                return line.split("metrics:", 1)[1].strip()

    def signal(self, sig: signal.Signals) -> None:
        self.proc.send_signal(sig)

    def exit_code(self, timeout: float) -> int:
        code = self.proc.wait(timeout=timeout)
        for t in self._threads:
            t.join(timeout=5)
        return code

    def logs(self) -> str:
        return "".join(self.stderr)


@pytest.fixture()
def daemons() -> Iterator[Callable[[Path], Daemon]]:
    made: list[Daemon] = []

    def start(config: Path) -> Daemon:
        d = Daemon(config)
        made.append(d)
        return d

    yield start
    for d in made:
        if d.proc.poll() is None:
            d.proc.kill()
            d.proc.wait()


def waiting_on_lock(dsn: str) -> bool:
    rows = run_sql(
        dsn,
        "select count(*) from pg_stat_activity where application_name = 'schema-reconciler' "
        "and datname = current_database() and wait_event_type = 'Lock'",
    )
    return rows[0][0] > 0


def reconciler_sessions(dsn: str) -> int:
    rows = run_sql(
        dsn,
        "select count(*) from pg_stat_activity where application_name = 'schema-reconciler' "
        "and datname = current_database()",
    )
    return int(rows[0][0])


def applied(dsn: str) -> tuple[bool, bool]:
    col = run_sql(dsn, "select count(*) from information_schema.columns where table_name = 't' and column_name = 'c'")
    tbl = run_sql(dsn, "select count(*) from pg_tables where tablename = 'extra'")
    return col == [(1,)], tbl == [(1,)]


def _project(project: Callable[..., Path], dsn: str, grace: str) -> Path:
    env = {"dsn": dsn, "interval": "60s", "lock_timeout": "60s"}
    return project(DESIRED, {"dev": env}, daemon={**FAST_DAEMON, "jitter": 0, "grace_period": grace})


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_when_idle_exits_zero(
    sig: signal.Signals, make_db: Callable[..., str], project: Callable[..., Path], daemons: Callable[[Path], Daemon]
) -> None:
    dsn = make_db(CURRENT)
    d = daemons(_project(project, dsn, "5s"))
    d.wait_started()
    wait_for("applied", lambda: applied(dsn) == (True, True), 30, details=d.logs)
    d.signal(sig)
    assert d.exit_code(15) == 0, d.logs()
    assert '"daemon_stopped"' in d.logs() and '"clean": true' in d.logs()


def test_sigterm_lets_a_running_apply_finish_within_the_grace_period(
    make_db: Callable[..., str], project: Callable[..., Path], daemons: Callable[[Path], Daemon]
) -> None:
    dsn = make_db(CURRENT)
    with psycopg.connect(dsn) as blocker:
        blocker.execute("insert into t values (2, 2)")  # holds ROW EXCLUSIVE on t until commit
        d = daemons(_project(project, dsn, "30s"))
        d.wait_started()
        wait_for("the apply waiting for the lock", lambda: waiting_on_lock(dsn), 30, details=d.logs)
        d.signal(signal.SIGTERM)
        with pytest.raises(subprocess.TimeoutExpired):
            d.proc.wait(timeout=1)  # still finishing its apply
        blocker.commit()
    assert d.exit_code(30) == 0, d.logs()
    assert applied(dsn) == (True, True)
    assert '"clean": true' in d.logs()


def test_sigterm_after_the_grace_period_rolls_the_apply_back_and_exits_zero(
    make_db: Callable[..., str], project: Callable[..., Path], daemons: Callable[[Path], Daemon]
) -> None:
    dsn = make_db(CURRENT)
    with psycopg.connect(dsn) as blocker:
        blocker.execute("insert into t values (2, 2)")
        d = daemons(_project(project, dsn, "1s"))
        d.wait_started()
        wait_for("the apply waiting for the lock", lambda: waiting_on_lock(dsn), 30, details=d.logs)
        d.signal(signal.SIGTERM)
        assert d.exit_code(20) == 0, d.logs()
        assert "shutdown_grace_expired" in d.logs()
        assert applied(dsn) == (False, False)
        # A backend waiting for a lock notices its client is gone only when it next talks to it; let the
        # abandoned statement get its lock: it runs, cannot report back and its transaction (never committed) is
        # rolled back with the session.
        blocker.rollback()
    wait_for("the daemon's sessions to end", lambda: reconciler_sessions(dsn) == 0, 15)
    assert applied(dsn) == (False, False)
    assert run_sql(dsn, "select id, v from t order by id") == [(1, 1)]
