"""`reconciler check`: the CI entry point passes on the bundled example and fails on what it guards."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from test_policy_tests import ROOT, write_config

from reconciler.cli import main
from reconciler.pgembedded import EmbeddedPostgres


def test_check_passes_on_the_bundled_example(
    tmp_path: Path, pg_server: EmbeddedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, pg_server, ROOT / "desired-state")
    assert main(["-c", str(config), "check", "--format", "markdown", "--base", str(ROOT / "desired-state")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("### Schema check: passed")
    for row in (
        "| build | ✅ |",
        "| hazards (empty database) | ✅ |",
        "| policy tests | ✅ | 28 passed, 0 failed |",
        "| docs | ✅ |",
        "| performance | ✅ |",
    ):
        assert row in out


def test_check_fails_on_a_denied_hazard_stale_docs_and_a_lost_index(
    tmp_path: Path, pg_server: EmbeddedPostgres, make_db: Callable[..., str], capsys: pytest.CaptureFixture[str]
) -> None:
    base_sql = (
        "create table t (id int primary key, owner text not null, old text);\ncreate index t_owner_idx on t (owner);\n"
    )
    base = tmp_path / "base"
    base.mkdir()
    (base / "a.sql").write_text(base_sql)
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "a.sql").write_text("create table t (id int primary key, owner text not null);\n")  # index, column gone
    tests = tmp_path / "tests.yaml"
    tests.write_text(
        yaml.safe_dump(
            {
                "fixtures": {"t": [{"id": i, "owner": f"u{i}"} for i in range(50)]},
                "cases": [
                    {"name": "by owner", "owner": True, "query": "select id from t where owner = 'u1'", "count": 1}
                ],
            }
        )
    )
    dsn = make_db(base_sql)
    config = write_config(
        tmp_path,
        pg_server,
        desired,
        policy_tests=str(tests),
        docs=str(tmp_path / "DATABASE.md"),
        environments={"prod": {"dsn": dsn, "policy": {"deny": ["DS103"]}}},
    )
    assert main(["-c", str(config), "check", "--env", "prod", "--base", str(base), "--format", "json"]) == 1
    checks = {c["check"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["build"]["ok"] and checks["policy tests"]["ok"]
    assert not checks["hazards (prod)"]["ok"]
    assert any(d.startswith("denied: alter table") and "DS103" in d for d in checks["hazards (prod)"]["details"])
    assert not checks["docs"]["ok"]  # never generated
    assert not checks["performance"]["ok"]
    assert checks["performance"]["details"][0] == "by owner: sequential scan on t, was an index scan"
