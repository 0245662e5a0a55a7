"""Test fixtures: one real PostgreSQL per test session, a database per test.

The server is the same embedded PostgreSQL the reconciler uses (the machine's PostgreSQL binaries, run as an
unprivileged user when the tests run as root). Tests that do not touch a database do not start it.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from reconciler.cli import main
from reconciler.config import Config, load_config
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.service import Reconciler


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedPostgres]:
    folder = tmp_path_factory.mktemp("pg")
    if os.geteuid() == 0:
        # As root the server runs as its own system user, which must reach its data folder. pytest's temp folders
        # (and /tmp/pytest-of-root above them) are 0700, and the reconciler never opens up the folders above a data
        # folder: the session uses a folder of its own in the system's temp folder, reachable by that user.
        folder = Path(tempfile.mkdtemp(prefix="reconciler-test-pg-"))
        folder.chmod(0o711)
    server = EmbeddedPostgres(folder / "data").start()
    try:
        yield server
    finally:
        server.stop()
        if os.geteuid() == 0:
            shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture()
def make_db(pg_server: EmbeddedPostgres) -> Iterator[Callable[..., str]]:
    """``make_db(sql="...")`` creates a fresh database, runs ``sql`` in it and returns its DSN."""
    made: list[str] = []

    def make(sql: str = "", name: str | None = None) -> str:
        dbname = name or f"t_{secrets.token_hex(5)}"
        dsn = pg_server.create_database(dbname)
        made.append(dbname)
        if sql.strip():
            with psycopg.connect(dsn, autocommit=True) as conn:
                conn.execute(sql.encode())
        return dsn

    yield make
    with psycopg.connect(pg_server.dsn(), autocommit=True) as conn:
        for name in made:
            conn.execute(f'drop database if exists "{name}" with (force)'.encode())


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """Run the command line in this process: its exit code, standard output and standard error."""
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def cli_json(capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    """The JSON output of a command line that must succeed."""
    code, out, err = cli(capsys, *args, "--format", "json")
    assert code == 0, err
    return json.loads(out)


def run_sql(dsn: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        cur = conn.execute(sql.encode())
        return cur.fetchall() if cur.description else []


def write_project(
    root: Path,
    pg_server: EmbeddedPostgres,
    desired: dict[str, str],
    environments: dict[str, dict[str, Any]],
    **extra: Any,
) -> Path:
    """A config in ``root`` whose desired state is ``desired`` (files by relative path); returns its path."""
    ds = root / "desired-state"
    if ds.exists():
        for f in ds.rglob("*.sql"):
            f.unlink()
    for rel, text in desired.items():
        f = ds / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(text)
    ds.mkdir(exist_ok=True)
    cfg = {
        "desired_state": "desired-state",
        "scratch": pg_server.dsn("postgres"),
        "state": "sqlite:///state.db",
        "embedded": {"data_dir": str(pg_server.data_dir)},
        # The environments of the tests live on the scratch server: one server per test session.
        "sandbox": {"share_cluster_with_environments": True},
        "environments": environments,
        **extra,
    }
    path = root / "reconciler.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


@pytest.fixture()
def project(tmp_path: Path, pg_server: EmbeddedPostgres) -> Callable[..., Path]:
    """``project(desired={"010.sql": "..."}, environments={"dev": {"dsn": ...}})`` writes a config; returns its path."""

    def write(desired: dict[str, str], environments: dict[str, dict[str, Any]], **extra: Any) -> Path:
        return write_project(tmp_path, pg_server, desired, environments, **extra)

    return write


@pytest.fixture()
def reconciler_for() -> Iterator[Callable[[Path], Reconciler]]:
    """Open a Reconciler on a config file; closed at teardown."""
    opened: list[Reconciler] = []

    def open_(path: Path) -> Reconciler:
        cfg: Config = load_config(path)
        reconciler = Reconciler(cfg)
        opened.append(reconciler)
        return reconciler

    yield open_
    for r in opened:
        r.close()
