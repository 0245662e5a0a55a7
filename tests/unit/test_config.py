"""Configuration errors name the file and the key; nothing else is needed to test them."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from reconciler.cli import main
from reconciler.config import load_config, parse_duration
from reconciler.desired import load_desired
from reconciler.errors import ConfigError, DesiredStateError, StoreError
from reconciler.store import open_store


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "reconciler.yaml"
    p.write_text(text)
    return p


def test_valid_config_resolves_paths_and_interpolates(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DEV_PASSWORD", "pw")
    p = write(
        tmp_path,
        "desired_state: ds\nenvironments:\n  dev:\n    dsn: postgresql://u:${DEV_PASSWORD}@h/db\n"
        "    lock_timeout: 2s\n    schemas: [public]\n",
    )
    cfg = load_config(p)
    assert cfg.desired_state == str(tmp_path / "ds")
    assert cfg.environments["dev"].dsn == "postgresql://u:pw@h/db"
    assert cfg.environments["dev"].lock_timeout == timedelta(seconds=2)
    assert cfg.environments["dev"].statement_timeout == timedelta(minutes=15)
    assert cfg.state == f"sqlite:///{tmp_path}/.reconciler/state.db"


def test_default_value_in_interpolation(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOPE", raising=False)
    cfg = load_config(write(tmp_path, "environments:\n  dev:\n    dsn: ${NOPE:-postgresql:///x}\n"))
    assert cfg.environments["dev"].dsn == "postgresql:///x"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("environments:\n  dev:\n    dsn: x\n    colour: red\n", "environments.dev.colour: unknown key"),
        ("environmentz: {}\n", "environmentz: unknown key"),
        ("source: elsewhere\n", "source: unknown key"),
        (
            "environments:\n  dev:\n    dsn: ${MISSING_VAR_FOR_TEST}\n",
            "environments.dev.dsn: environment variable ${MISSING_VAR_FOR_TEST} is not set",
        ),
        ("environments:\n  dev: {dsn: x, lock_timeout: soon}\n", "environments.dev.lock_timeout"),
        ("environments:\n  dev: {}\n", "environments.dev.dsn: Field required"),
        ("environments:\n  Dev!: {dsn: x}\n", "environments: Value error"),
        ("environments: [1, 2]\n", "environments: Input should be a valid dictionary"),
        ("environments:\n  dev: {dsn: x\n", "invalid YAML at line"),
        ("- just\n- a list\n", "expected a mapping at the top level"),
        ("environments:\n  dev: {dsn: x, schemas: [a], exclude_schemas: [b]}\n", "either schemas or exclude_schemas"),
    ],
    ids=[
        "unknown-env-key",
        "unknown-top-key",
        "loader-field-as-key",
        "missing-var",
        "bad-duration",
        "missing-dsn",
        "bad-name",
        "wrong-type",
        "bad-yaml",
        "not-mapping",
        "both-filters",
    ],
)
def test_config_errors_name_file_and_key(
    tmp_path: Path, text: str, expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MISSING_VAR_FOR_TEST", raising=False)
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(p)
    assert str(info.value).startswith(str(p))
    assert expected in str(info.value)


def test_cli_reports_config_error_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, "environments:\n  dev:\n    dsn: x\n    colour: red\n")
    assert main(["-c", str(p), "plan", "dev"]) == 1
    err = capsys.readouterr().err
    assert err == f"error: {p}: environments.dev.colour: unknown key\n"


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")


def test_unknown_environment(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    p = write(tmp_path, "environments:\n  dev: {dsn: 'postgresql://db/app'}\n")
    assert main(["-c", str(p), "plan", "prod"]) == 1
    assert "unknown environment 'prod' (configured: dev)" in capsys.readouterr().err


@pytest.mark.parametrize(("text", "seconds"), [("5s", 5), ("15m", 900), ("250ms", 0.25), ("1h", 3600), (3, 3)])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


def test_store_folder_that_cannot_be_made_is_a_clear_error() -> None:
    with pytest.raises(StoreError, match="cannot create folder /proc/nope"):
        open_store("sqlite:////proc/nope/state.db", key=b"k" * 32)


def test_desired_state_that_is_a_file(tmp_path: Path) -> None:
    f = tmp_path / "one.sql"
    f.write_text("create table t (id int);")
    with pytest.raises(DesiredStateError, match="is not a folder"):
        load_desired(f)
