"""`reconciler test-policies`: the bundled example's RLS tests pass, and fail by name when a policy leaks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.cli import main
from reconciler.pgembedded import EmbeddedPostgres

ROOT = Path(__file__).resolve().parents[2]


def write_config(tmp_path: Path, pg_server: EmbeddedPostgres, desired: Path, **extra: Any) -> Path:
    cfg = {
        "desired_state": str(desired),
        "scratch": pg_server.dsn("postgres"),
        "sandbox": {"share_cluster_with_environments": True},  # tests share one server
        "state": "sqlite:///state.db",
        "policy_tests": str(ROOT / "policy-tests"),
        "docs": str(ROOT / "docs" / "DATABASE.md"),
        "environments": {},
        **extra,
    }
    path = tmp_path / "reconciler.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def test_bundled_policy_tests_pass(
    tmp_path: Path, pg_server: EmbeddedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path, pg_server, ROOT / "desired-state")
    assert main(["-c", str(config), "test-policies", "--format", "json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["failed"] == 0
    names = [c["case"] for c in report["cases"]]
    for role in ("participant", "reviewer", "admin", "superadmin"):
        assert any(n.startswith(role) for n in names), role
    assert "the owner cannot delete from the points ledger" in names


def test_a_leaking_policy_fails_naming_the_case(
    tmp_path: Path, pg_server: EmbeddedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    broken = tmp_path / "desired-state"
    shutil.copytree(ROOT / "desired-state", broken)
    rls = broken / "070_rls.sql"
    text = rls.read_text()
    own = "for select using (user_id = auth.get_user_id());"
    assert own in text
    rls.write_text(text.replace(own, "for select using (true);", 1))  # every user reads every submission
    config = write_config(tmp_path, pg_server, broken)

    assert main(["-c", str(config), "test-policies"]) == 1
    out = capsys.readouterr().out
    assert "FAIL participant cannot read another user's private submission: expected 0 row(s), got 1" in out
    assert "FAIL participant sees own submissions and public approved ones" in out
    assert "PASS reviewer sees all submissions" in out
    assert "FAIL anonymous caller sees public approved submissions only" in out
    assert "25 passed, 3 failed" in out


def test_expectations_rows_count_and_error(
    tmp_path: Path, pg_server: EmbeddedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    desired = tmp_path / "desired"
    desired.mkdir()
    (desired / "a.sql").write_text(
        "create table t (id int primary key, owner text not null);\n"
        "alter table t enable row level security;\n"
        "create policy mine on t using (owner = current_setting('request.jwt.claims', true)::jsonb ->> 'sub');\n"
    )
    tests = tmp_path / "t.yaml"
    tests.write_text(
        yaml.safe_dump(
            {
                "fixtures": {"t": [{"id": 1, "owner": "a"}, {"id": 2, "owner": "b"}]},
                "cases": [
                    {"name": "a sees one", "claims": {"sub": "a"}, "query": "select id from t", "rows": [{"id": 1}]},
                    {"name": "wrong rows", "claims": {"sub": "a"}, "query": "select id from t", "rows": [{"id": 2}]},
                    {"name": "owner sees all", "owner": True, "query": "select * from t", "count": 2},
                    {
                        "name": "forged insert",
                        "claims": {"sub": "a"},
                        "query": "insert into t values (3, 'b')",
                        "error": "42501",
                    },
                    {
                        "name": "expected error missing",
                        "claims": {"sub": "a"},
                        "query": "select 1",
                        "error": "permission denied",
                    },
                ],
            }
        )
    )
    config = write_config(tmp_path, pg_server, desired)
    assert main(["-c", str(config), "test-policies", str(tests), "--format", "json"]) == 1
    cases = {c["case"]: c for c in json.loads(capsys.readouterr().out)["cases"]}
    assert [n for n, c in cases.items() if not c["passed"]] == ["wrong rows", "expected error missing"]
    assert cases["wrong rows"]["message"] == 'expected rows [{"id": 2}], got [{"id": 1}]'
    assert "expected an error (permission denied)" in cases["expected error missing"]["message"]


def test_a_malformed_test_file_is_an_error_naming_it(
    tmp_path: Path, pg_server: EmbeddedPostgres, capsys: pytest.CaptureFixture[str]
) -> None:
    tests = tmp_path / "bad.yaml"
    tests.write_text(yaml.safe_dump({"cases": [{"name": "x", "query": "select 1; select 2", "count": 1}]}))
    config = write_config(tmp_path, pg_server, ROOT / "desired-state")
    assert main(["-c", str(config), "test-policies", str(tests)]) == 1
    err = capsys.readouterr().err
    assert "bad.yaml: case 'x': the query must be exactly one statement" in err
