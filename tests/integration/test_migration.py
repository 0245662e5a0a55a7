"""`reconciler migration`: a timestamped SQL file from an environment, a migrations folder or nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import yaml

from reconciler.cli import main
from reconciler.config import load_config
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.service import Reconciler
from reconciler.sqltext import split_statements

DESIRED = "create table t (id int primary key, v int, note text);\ncreate index t_v_idx on t (v);\n"


def config_for(tmp_path: Path, pg_server: EmbeddedPostgres, dsn: str) -> Path:
    (tmp_path / "desired").mkdir(exist_ok=True)
    (tmp_path / "desired" / "a.sql").write_text(DESIRED)
    path = tmp_path / "reconciler.yaml"
    env = {"dsn": dsn, "large_table": {"bytes": "1kB", "rows": 1}}
    path.write_text(
        yaml.safe_dump(
            {
                "desired_state": "desired",
                "scratch": pg_server.dsn("postgres"),
                "sandbox": {"share_cluster_with_environments": True},  # tests share one server
                "state": "sqlite:///state.db",
                "environments": {"dev": env},
            }
        )
    )
    return path


def run_file(dsn: str, path: Path) -> None:
    """Run a migration file statement by statement, as psql would (its BEGIN/COMMIT included)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        for stmt in split_statements(path.read_text()):
            conn.execute(stmt.sql.encode())


def test_migration_from_an_environment_applies_and_keeps_concurrent_steps_apart(
    tmp_path: Path, pg_server: EmbeddedPostgres, make_db: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = make_db(
        "create table t (id int primary key, v int); insert into t select g, g from generate_series(1, 5000) g;"
        " analyze t;"
    )
    config = config_for(tmp_path, pg_server, dsn)
    out = tmp_path / "migrations"
    assert main(["-c", str(config), "migration", "add_note", "--from", "dev", "-o", str(out), "--format", "json"]) == 0
    written = json.loads(capsys.readouterr().out)
    path = Path(written["path"])
    assert path.parent == out and path.name.endswith("_add_note.sql") and path.name[:14].isdigit()
    assert written["source"] == "environment dev" and written["concurrent_steps"] == 1
    text = path.read_text()
    begin, commit = text.index("BEGIN;"), text.index("COMMIT;")
    concurrent = text.index("CREATE INDEX CONCURRENTLY")
    assert begin < text.index('add column "note" text') < commit < concurrent  # its own section, after the tx
    assert "-- Concurrent step: PostgreSQL does not allow it in a transaction" in text
    assert "-- online-safe form of: CREATE INDEX t_v_idx" in text
    run_file(dsn, path)
    with Reconciler(load_config(config)) as reconciler:
        assert reconciler.plan("dev").in_sync


def test_migration_from_a_folder_names_hazards(
    tmp_path: Path, pg_server: EmbeddedPostgres, make_db: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, pg_server, make_db())
    versions = tmp_path / "versions"
    versions.mkdir()
    (versions / "0001_t.sql").write_text("create table t (id int primary key, v int, legacy text);\n")
    (versions / "0002_note.sql").write_text("alter table t add column note text;\n")
    out = tmp_path / "migrations"
    assert main(["-c", str(config), "migration", "drop_legacy", "--from-dir", str(versions), "-o", str(out)]) == 0
    (path,) = out.iterdir()
    text = path.read_text()
    assert "from migrations folder" in text
    assert "-- DS103 DESTRUCTIVE danger: drops column public.t.legacy and its data" in text
    assert text.count("BEGIN;") == 1 and text.rstrip().endswith("COMMIT;")
    # Replaying the folder and then the file gives the desired state.
    dsn = make_db((versions / "0001_t.sql").read_text() + (versions / "0002_note.sql").read_text())
    run_file(dsn, path)
    with psycopg.connect(dsn) as conn:
        cols = [r[0] for r in conn.execute("select column_name from information_schema.columns where table_name = 't'")]
    assert sorted(cols) == ["id", "note", "v"]


def test_migration_from_empty_and_a_bad_name(
    tmp_path: Path, pg_server: EmbeddedPostgres, make_db: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    config = config_for(tmp_path, pg_server, make_db())
    out = tmp_path / "m"
    assert main(["-c", str(config), "migration", "initial", "-o", str(out)]) == 0
    assert "from an empty database" in capsys.readouterr().out
    (path,) = out.iterdir()
    dsn = make_db()
    run_file(dsn, path)
    assert main(["-c", str(config), "migration", "../escape", "-o", str(out)]) == 1
    assert "name '../escape' must be letters" in capsys.readouterr().err
