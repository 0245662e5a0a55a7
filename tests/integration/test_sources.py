"""Desired-state sources: a command's standard output, an SQLAlchemy MetaData, and a failing command."""

from __future__ import annotations

import hashlib
import textwrap
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import run_sql

from reconciler.cli import main
from reconciler.config import load_config
from reconciler.errors import DesiredStateError
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.service import Reconciler


def open_with(tmp_path: Path, pg_server: EmbeddedPostgres, source: Any, dsn: str) -> Path:
    path = tmp_path / "reconciler.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "desired_state": source,
                "scratch": pg_server.dsn("postgres"),
                "sandbox": {"share_cluster_with_environments": True},  # tests share one server
                "state": "sqlite:///state.db",
                "environments": {"dev": {"dsn": dsn}},
            }
        )
    )
    return path


def test_a_command_source_is_applied_and_its_revision_hashes_the_sql(
    tmp_path: Path, pg_server: EmbeddedPostgres, make_db: Callable[..., str]
) -> None:
    sql = "create table items (id int primary key, name text not null);\n"
    (tmp_path / "schema.sql").write_text(sql)
    dsn = make_db()
    config = open_with(tmp_path, pg_server, {"command": ["cat", "schema.sql"]}, dsn)  # run in the config's folder
    with Reconciler(load_config(config)) as reconciler:
        desired = reconciler.load_desired()
        assert desired.revision == hashlib.sha256(sql.encode()).hexdigest()
        assert reconciler.apply("dev").in_sync
    assert run_sql(dsn, "select count(*) from information_schema.tables where table_name = 'items'") == [(1,)]


def test_a_failing_command_names_it_and_its_exit_status_and_applies_nothing(
    tmp_path: Path, pg_server: EmbeddedPostgres, make_db: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = make_db()
    command = ["sh", "-c", "echo 'create table half (id int);'; echo 'schema.prisma: no such file' >&2; exit 3"]
    config = open_with(tmp_path, pg_server, {"command": command}, dsn)
    with Reconciler(load_config(config)) as reconciler, pytest.raises(DesiredStateError) as err:
        reconciler.apply("dev")
    assert "failed with exit status 3: schema.prisma: no such file" in str(err.value)
    assert "sh -c" in str(err.value)
    assert main(["-c", str(config), "apply", "dev"]) == 1
    assert "exit status 3" in capsys.readouterr().err
    assert run_sql(dsn, "select count(*) from information_schema.tables where table_schema = 'public'") == [(0,)]


def test_an_sqlalchemy_metadata_source(
    tmp_path: Path, pg_server: EmbeddedPostgres, make_db: Callable[..., str]
) -> None:
    (tmp_path / "app_models.py").write_text(
        textwrap.dedent(
            """
            import sqlalchemy as sa

            metadata = sa.MetaData()
            users = sa.Table(
                "users", metadata,
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("kind", sa.Enum("person", "robot", name="user_kind"), nullable=False),
                sa.Column("email", sa.Text, nullable=False, index=True),
                schema="app",
            )
            notes = sa.Table(
                "notes", metadata,
                sa.Column("id", sa.Integer, primary_key=True),
                sa.Column("user_id", sa.ForeignKey("app.users.id"), nullable=False),
                schema="app",
            )
            """
        )
    )
    dsn = make_db()
    config = open_with(tmp_path, pg_server, {"sqlalchemy": "app_models:metadata"}, dsn)
    with Reconciler(load_config(config)) as reconciler:
        desired = reconciler.load_desired()
        assert desired.files[0].path == "sqlalchemy:app_models:metadata"
        assert "CREATE TYPE user_kind AS ENUM ('person', 'robot')" in desired.files[0].text
        result = reconciler.apply("dev")
        # migra creates the serial columns' sequences as bigint; the plan sets their AS type after creating them.
        assert result.applied and result.in_sync
        assert any(s.startswith("ALTER SEQUENCE app.") and "AS integer" in s for s in result.applied)
        assert not result.unmanaged_drift
    assert run_sql(dsn, "select table_name from information_schema.tables where table_schema = 'app' order by 1") == [
        ("notes",),
        ("users",),
    ]
    assert run_sql(dsn, "select indexname from pg_indexes where tablename = 'users' and indexname like 'ix_%'") == [
        ("ix_app_users_email",)
    ]
