"""The alert rules and the Grafana dashboard, checked by Prometheus's own tool (promtool, Debian's prometheus
package, installed by scripts/bootstrap).

* ``promtool check rules`` on deploy/prometheus-rules.yaml, and ``promtool test rules`` on its unit tests
  (deploy/prometheus-rules.test.yaml): drift held for its ``for:`` fires, drift waiting for an approval does not.
* Every PromQL expression of deploy/grafana/*.json, with Grafana's variables given values, is rendered into a
  rules file of recording rules and checked by ``promtool check rules``.
* Every metric that the rules and the dashboard name is one the reconciler exports.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from reconciler.obs.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RULES = DEPLOY / "prometheus-rules.yaml"
DASHBOARDS = sorted((DEPLOY / "grafana").glob("*.json"))
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$environment": ".*"}
METRIC = re.compile(r"\bschema_reconciler_[a-z_]+")


def promtool() -> str:
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not found: scripts/bootstrap installs Debian's prometheus package (apt-get failed?)")
    return found


def run(*args: str, cwd: Path = DEPLOY) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool(), *args], capture_output=True, text=True, cwd=cwd)


def dashboard_exprs(path: Path) -> list[str]:
    doc = json.loads(path.read_text())
    out: list[str] = []
    for panel in doc["panels"]:
        for target in panel["targets"]:
            expr = target["expr"]
            for name, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(name, value)
            out.append(expr)
    return out


def exported_metrics() -> set[str]:
    names: set[str] = set()
    for family in Metrics().registry.collect():
        for sample in family.samples:
            names.add(sample.name)
        names.add(family.name)
    for family in Metrics().registry.collect():  # histograms: the series promtool sees
        names |= {f"{family.name}_bucket", f"{family.name}_count", f"{family.name}_sum", f"{family.name}_total"}
    return names


def test_promtool_checks_the_alert_rules() -> None:
    done = run("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    count = sum(len(g["rules"]) for g in yaml.safe_load(RULES.read_text())["groups"])
    assert count >= 7 and f"SUCCESS: {count} rules found" in done.stdout


def test_promtool_unit_tests_of_the_alert_rules_pass() -> None:
    done = run("test", "rules", "prometheus-rules.test.yaml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_unit_tests_fail_when_a_waiting_plan_no_longer_silences_the_drift_alert(tmp_path: Path) -> None:
    """The approval clause is what keeps prod quiet: without it, the same tests fail."""
    rules = yaml.safe_load(RULES.read_text())
    for rule in rules["groups"][0]["rules"]:
        if rule.get("alert") == "SchemaDriftUnresolved":
            lines = rule["expr"].strip().splitlines()
            rule["expr"] = "\n".join(line for line in lines if "plans_awaiting_approval" not in line)
    (tmp_path / RULES.name).write_text(yaml.safe_dump(rules))
    shutil.copy(DEPLOY / "prometheus-rules.test.yaml", tmp_path)
    done = run("test", "rules", "prometheus-rules.test.yaml", cwd=tmp_path)
    assert done.returncode != 0
    assert "prod" in done.stdout + done.stderr


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=[d.name for d in DASHBOARDS])
def test_promtool_checks_every_expression_of_the_dashboard(dashboard: Path, tmp_path: Path) -> None:
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 10
    rules: dict[str, Any] = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [{"record": f"dashboard:expr_{i}", "expr": e} for i, e in enumerate(exprs)],
            }
        ]
    }
    (tmp_path / "dashboard-rules.yaml").write_text(yaml.safe_dump(rules))
    done = run("check", "rules", "dashboard-rules.yaml", cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in done.stdout


def test_promtool_rejects_a_broken_expression(tmp_path: Path) -> None:
    rules = {"groups": [{"name": "g", "rules": [{"record": "r:x", "expr": "sum(rate(x[5m])"}]}]}
    (tmp_path / "bad.yaml").write_text(yaml.safe_dump(rules))
    assert run("check", "rules", "bad.yaml", cwd=tmp_path).returncode != 0


@pytest.mark.parametrize("dashboard", DASHBOARDS, ids=[d.name for d in DASHBOARDS])
def test_the_dashboard_shows_what_operators_need(dashboard: Path) -> None:
    doc = json.loads(dashboard.read_text())
    text = " ".join(dashboard_exprs(dashboard))
    for needed in (
        "schema_reconciler_drift",
        "schema_reconciler_plans_awaiting_approval",
        'outcome="error"',
        "schema_reconciler_reconcile_phase_duration_seconds_bucket",
        "schema_reconciler_statements_applied_total",
    ):
        assert needed in text, needed
    assert doc["uid"] and {v["name"] for v in doc["templating"]["list"]} >= {"datasource", "environment"}
    ids = [p["id"] for p in doc["panels"]]
    assert len(ids) == len(set(ids))


def test_every_metric_named_by_the_rules_and_dashboards_is_exported() -> None:
    texts = [RULES.read_text()] + [" ".join(dashboard_exprs(d)) for d in DASHBOARDS]
    named = {m for t in texts for m in METRIC.findall(t)}
    missing = named - exported_metrics()
    assert not missing, missing
