"""Secrets stay where they are: pg_dump's command line holds no password, a vetting clone holds no foreign-server
credentials, the state store is private, malformed DSNs are refused without being echoed."""

from __future__ import annotations

import io
import json
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
import structlog

from reconciler.config import EnvironmentConfig, SandboxConfig, load_config
from reconciler.db import make_dsn, parse_dsn
from reconciler.errors import ConfigError
from reconciler.obs.logging import configure_logging
from reconciler.pgembedded import EmbeddedPostgres, find_bin_dir, trust_lines
from reconciler.scratch import ScratchServer
from reconciler.store import open_store
from reconciler.vet import clone_environment, dump_schema
from tests.conftest import run_sql

FAKE_PG_DUMP = """#!/bin/sh
# Records what a real pg_dump would be given: its arguments, and whether it got a service file.
printf '%s\\n' "$@" > "$RECORD.args"
cat "$PGSERVICEFILE" > "$RECORD.service"
printf '%s' "$PGSERVICEFILE" > "$RECORD.servicefile"
echo 'create table recorded (id int);'
"""


def test_pg_dump_gets_no_secret_on_its_command_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = tmp_path / "pg_dump"
    fake.write_text(FAKE_PG_DUMP)
    fake.chmod(0o700)
    record = tmp_path / "record"
    monkeypatch.setenv("RECORD", str(record))
    dsn = make_dsn({"host": "db.example", "dbname": "app", "password": "hunter2-pw", "sslpassword": "key-passphrase"})
    assert dump_schema(dsn, EnvironmentConfig(dsn=dsn), fake).strip() == "create table recorded (id int);"
    args = Path(f"{record}.args").read_text()
    assert "hunter2-pw" not in args and "key-passphrase" not in args and "db.example" not in args
    service = Path(f"{record}.service").read_text()
    assert "password=hunter2-pw" in service and "sslpassword=key-passphrase" in service
    # This call's own service file is removed after; other workers' calls may have theirs in the same folder now.
    assert not Path(Path(f"{record}.servicefile").read_text()).exists()


def test_the_clone_leaves_out_foreign_servers_and_user_mappings(
    pg_server: EmbeddedPostgres, make_db: Callable[..., str]
) -> None:
    dsn = make_db(
        "create table t (id int);"
        "create foreign data wrapper w;"
        "create server s foreign data wrapper w options (host 'remote');"
        "create user mapping for public server s options (user 'app', password 'remote-secret');"
    )
    scratch = ScratchServer(pg_server.dsn())
    pg_dump = find_bin_dir() / "pg_dump"
    try:
        name, clone = clone_environment(scratch, dsn, EnvironmentConfig(dsn=dsn), pg_dump)
        with psycopg.connect(clone) as conn:
            assert conn.execute("select count(*) from pg_user_mappings").fetchone() == (0,)
            assert conn.execute("select count(*) from pg_foreign_server").fetchone() == (0,)
            assert conn.execute("select count(*) from pg_tables where tablename = 't'").fetchone() == (1,)
            owner = conn.execute("select tableowner from pg_tables where tablename = 't'").fetchone()
        assert owner == (name,)  # restored as the build role, not the admin
        scratch.drop_database(name)
    finally:
        scratch.close()
    assert run_sql(dsn, "select count(*) from pg_user_mappings") == [(1,)]


@pytest.mark.parametrize(
    ("wrapper", "allowed", "handler"),
    [("postgres_fdw", ("postgres_fdw",), "postgres_fdw_handler"), ("w", (), "-")],
    ids=["wrapper of an allowed extension", "stand-in wrapper"],
)
def test_foreign_servers_are_recreated_in_the_clone_without_credentials(
    wrapper: str, allowed: tuple[str, ...], handler: str, pg_server: EmbeddedPostgres, make_db: Callable[..., str]
) -> None:
    setup = "create extension postgres_fdw;" if allowed else f"create foreign data wrapper {wrapper};"
    dsn = make_db(
        f"{setup} create server remote foreign data wrapper {wrapper} options (host 'db.example', port '5433');"
        "create user mapping for public server remote options (user 'app', password 'remote-secret');"
        "create foreign table ft (id int) server remote options (table_name 'remote_t');"
    )
    scratch = ScratchServer(pg_server.dsn(), sandbox=SandboxConfig(extensions_allowed=allowed))
    try:
        name, clone = clone_environment(scratch, dsn, EnvironmentConfig(dsn=dsn), find_bin_dir() / "pg_dump")
        with psycopg.connect(clone) as conn:
            assert conn.execute("select count(*) from pg_user_mappings").fetchone() == (0,)
            server = conn.execute(
                "select s.srvname, s.srvoptions, s.srvowner::regrole::text, w.fdwname, w.fdwhandler::regproc::text "
                "from pg_foreign_server s join pg_foreign_data_wrapper w on w.oid = s.srvfdw"
            ).fetchall()
            assert server == [("remote", None, name, wrapper, handler)]
            assert conn.execute("select count(*) from pg_foreign_table").fetchone() == (1,)
        scratch.drop_database(name)
    finally:
        scratch.close()


HBA_CASES = [
    ("local all all trust", [1]),
    ("host all all 127.0.0.1/32 trust", [1]),
    ("host all all 127.0.0.1 255.255.255.255 trust", [1]),
    ("hostssl all all ::1/128 trust  # old default", [1]),
    ("# host all all 127.0.0.1/32 trust", []),
    ("host trust trust 127.0.0.1/32 scram-sha-256", []),  # a database and a user named trust
    ("local all all scram-sha-256\nhost all all 0.0.0.0/0 md5\nlocal all all trust", [3]),
]


@pytest.mark.parametrize(("hba", "lines"), HBA_CASES)
def test_trust_lines_of_pg_hba_are_found(hba: str, lines: list[int]) -> None:
    assert trust_lines(hba) == lines


def test_an_embedded_data_folder_with_trust_authentication_is_refused() -> None:
    # Its own folder in the system temp folder: as root the server's user must pass through it (pytest's are 0700).
    folder = Path(tempfile.mkdtemp(prefix="reconciler-trust-"))
    try:
        folder.chmod(0o711)
        data = folder / "data"
        data.mkdir()
        (data / "PG_VERSION").write_text("15\n")
        (data / "pg_hba.conf").write_text("local all all scram-sha-256\nhost all all 127.0.0.1/32 trust\n")
        (folder / ".data.pgpass").write_text("")
        embedded = EmbeddedPostgres(data)
        with pytest.raises(
            ConfigError,
            match=r"pg_hba\.conf lets connections in without a password .*line 2.*"
            r"scram-sha-256.*remove .*data to re-create it",
        ):
            embedded.start()
        assert embedded.port is None  # refused before anything started
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def test_the_state_store_is_private(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/state/state.db"
    open_store(url, key=b"k" * 32).close()
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "state" / "state.db").stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("dsn", "secret"),
    [("postgresql://app:pa ss@db/app", "pa ss"), ("host=db password='s3cr3t-frag", "s3cr3t-frag")],
)
def test_a_malformed_dsn_is_refused_without_echoing_it(tmp_path: Path, dsn: str, secret: str) -> None:
    p = tmp_path / "reconciler.yaml"
    p.write_text(json.dumps({"environments": {"dev": {"dsn": dsn}}}))
    with pytest.raises(ConfigError, match=r"environments\.dev\.dsn: not a valid connection string") as caught:
        load_config(p)
    assert secret not in str(caught.value)


def test_a_config_with_a_password_readable_by_others_is_warned_about(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("x" * 32)
    token.chmod(0o644)
    p = tmp_path / "reconciler.yaml"
    env = {"dsn": "postgresql://app:s3cret@db/app"}
    p.write_text(
        json.dumps(
            {
                "environments": {"dev": env},
                "server": {"tokens": [{"identity": "ann", "token_file": "token", "environments": ["*"]}]},
            }
        )
    )
    p.chmod(0o644)
    out = io.StringIO()
    configure_logging("info", json=True, stream=out)
    try:
        load_config(p)
    finally:
        structlog.reset_defaults()
    warned = [json.loads(line)["path"] for line in out.getvalue().splitlines() if "file_readable_by_others" in line]
    assert warned == [str(p), str(token)]
    assert "s3cret" not in out.getvalue()


def test_nested_log_values_are_redacted() -> None:
    out = io.StringIO()
    configure_logging("info", json=True, stream=out)
    try:
        structlog.get_logger("t").info(
            "nested",
            detail={"dsns": ["postgresql://app:s3cret@db/app", "host=db sslpassword=passphrase"]},
            params=parse_dsn("host=db password=hunter2"),
        )
    finally:
        structlog.reset_defaults()
    text = out.getvalue()
    assert "s3cret" not in text and "passphrase" not in text and "hunter2" not in text
    assert "postgresql://app:***@db/app" in text
