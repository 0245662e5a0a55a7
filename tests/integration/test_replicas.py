"""Three daemon processes share a PostgreSQL store and 30 environments; one is killed with SIGKILL.

The survivors take its environments over (PostgreSQL released its advisory locks with its connection) and
reconcile every environment to a new desired revision within TAKEOVER_BOUND; the audit trail shows each
environment's apply once per revision; a restarted process gets a share back.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from daemon_helpers import FAST_DAEMON, http, metrics, wait_for

from reconciler.config import load_config
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.signing import load_key
from reconciler.store import Store, open_store

ENVIRONMENTS = 30
OLD = "create table t (id int primary key);\n"
DESIRED_1 = {"010.sql": "create table t (id int primary key, v int);\n"}
DESIRED_2 = {**DESIRED_1, "020.sql": "create table u (id int primary key);\n"}
TAKEOVER_BOUND = 120.0  # seconds from SIGKILL until every environment is at the new revision (README)


class Replica:
    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "reconciler", "--config", str(config), "--log-level", "info", "run", "--port", "0"],
            stdout=subprocess.PIPE,
            stderr=log.open("w"),
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            if "metrics:" in line:
                self.url = line.split("metrics:", 1)[1].strip().removesuffix("/metrics")
                break
        else:
            raise AssertionError("the replica did not start:\n" + log.read_text()[-3000:])

    def owned(self) -> set[str]:
        return {
            dict(labels)["environment"]
            for (name, labels), value in metrics(self.url).items()
            if name == "schema_reconciler_environment_owned" and value == 1
        }


@pytest.fixture()
def replicas(tmp_path: Path) -> Iterator[Callable[[Path], Replica]]:
    made: list[Replica] = []

    def start(config: Path) -> Replica:
        r = Replica(config, tmp_path / f"replica-{len(made)}.log")
        made.append(r)
        return r

    yield start
    for r in made:
        if r.proc.poll() is None:
            r.proc.terminate()
            try:
                r.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()


def at_revision(store: Store, names: list[str], revision: str) -> list[str]:
    statuses = store.load_statuses()
    return [n for n in names if statuses.get(n) is None or statuses[n].last_applied_revision != revision]


def applies(store: Store) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = {}
    for entry in store.audit_records(event="apply_finished"):
        if entry.payload.get("applied") and entry.environment:
            key = (entry.environment, entry.payload["desired_revision"])
            out[key] = out.get(key, 0) + 1
    return out


def ready(running: list[Replica]) -> None:
    """Every replica says it is ready (holds its share) within 30 s: under load, a heartbeat that came late makes
    the others rebalance for a tick, and a replica is rightly not ready while its share is incomplete."""
    wait_for(
        "every replica ready",
        lambda: all(http(f"{r.url}/readyz")[0] == 200 for r in running),
        timeout=30,
        interval=0.5,
        details=lambda: str([http(f"{r.url}/readyz")[1] for r in running]),
    )


def test_three_replicas_split_thirty_environments_and_survive_a_kill(
    pg_server: EmbeddedPostgres,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    replicas: Callable[[Path], Replica],
) -> None:
    names = [f"env{i:02d}" for i in range(ENVIRONMENTS)]
    envs = {n: {"dsn": make_db(OLD), "interval": "3s"} for n in names}
    state = make_db("")
    daemon = {**FAST_DAEMON, "sharding": True, "watch_interval": "500ms", "concurrency": 4}
    config = project(DESIRED_1, envs, state=state, daemon=daemon)
    store = open_store(state, key=load_key(load_config(config).security.signing_key_file))
    from reconciler.desired import load_desired

    rev1 = load_desired(config.parent / "desired-state").revision
    running = [replicas(config) for _ in range(3)]

    def split() -> bool:
        owned = [r.owned() for r in running]
        return sum(map(len, owned)) == ENVIRONMENTS and set().union(*owned) == set(names) and all(owned)

    wait_for("the three replicas to split the environments", split, timeout=60, interval=0.5)
    wait_for("every environment at revision 1", lambda: not at_revision(store, names, rev1), timeout=240, interval=1)
    ready(running)

    victim = running.pop(0)
    victims = victim.owned()
    victim.proc.send_signal(signal.SIGKILL)
    victim.proc.wait()
    killed_at = time.monotonic()
    project(DESIRED_2, envs, state=state, daemon=daemon)
    rev2 = load_desired(config.parent / "desired-state").revision
    wait_for("the survivors to own every environment", split, timeout=TAKEOVER_BOUND, interval=0.5)
    taken_over = time.monotonic() - killed_at
    wait_for(
        "every environment at revision 2",
        lambda: not at_revision(store, names, rev2),
        timeout=TAKEOVER_BOUND,
        interval=1,
        details=lambda: str(at_revision(store, names, rev2)),
    )
    reconciled = time.monotonic() - killed_at
    print(
        f"replicas: {len(victims)} environments taken over in {taken_over:.1f}s; all 30 at revision 2 after {reconciled:.1f}s"
    )

    counts = applies(store)
    assert all(counts.get((n, rev), 0) == 1 for n in names for rev in (rev1, rev2)), counts
    assert set(counts) == {(n, rev) for n in names for rev in (rev1, rev2)}

    running.append(replicas(config))  # a restarted process is a new replica and gets a share back
    wait_for("the restarted replica to get a share", split, timeout=60, interval=0.5)
    ready(running)
    assert len(running[-1].owned()) >= 3
