"""Metric names, labels and the alert rules that use them; no database."""

from __future__ import annotations

import re
import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml
from prometheus_client.parser import text_string_to_metric_families

from reconciler.obs.metrics import HAZARD_LABELS, LARGE_FLEET, Metrics

ROOT = Path(__file__).resolve().parents[2]
ALLOWED_LABELS = {"environment", "outcome", "phase", "hazard", "kind", "revision", "le"}


def exposition(m: Metrics) -> dict[str, list[tuple[dict[str, str], float]]]:
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for fam in text_string_to_metric_families(m.render().decode()):
        for s in fam.samples:
            out.setdefault(s.name, []).append((dict(s.labels), s.value))
    return out


def populated() -> Metrics:
    m = Metrics()
    m.add_environment("dev", suspended=False)
    m.observe_reconcile("dev", "success", 0.2)
    m.observe_phase("dev", "inspect", 0.1)
    m.set_drift("dev", True, {"DESTRUCTIVE": 1})
    m.set_awaiting("dev", 1, datetime.now(UTC) - timedelta(minutes=5))
    m.count_applied("dev", ["NONE", "NONE"])
    m.set_reachable("dev", True)
    m.set_success("dev", 1.0)
    m.set_window_open("dev", True)
    m.set_desired_revision("a" * 64)
    m.count_fast_path("dev")
    m.set_owned("dev", True)
    m.set_replicas(3, True)
    m.set_unmanaged_drift("dev", {"comment": 2})
    return m


def test_unmanaged_drift_by_kind_and_back_to_zero() -> None:
    m = populated()
    assert ({"environment": "dev", "kind": "comment"}, 2.0) in exposition(m)["schema_reconciler_unmanaged_drift"]
    m.set_unmanaged_drift("dev", {"acl": 1})
    got = exposition(m)["schema_reconciler_unmanaged_drift"]
    assert ({"environment": "dev", "kind": "comment"}, 0.0) in got
    assert ({"environment": "dev", "kind": "acl"}, 1.0) in got


def test_names_and_labels_are_low_cardinality() -> None:
    samples = exposition(populated())
    for name, rows in samples.items():
        assert name.startswith("schema_reconciler_"), name
        for labels, _ in rows:
            assert set(labels) <= ALLOWED_LABELS, (name, labels)
    assert samples["schema_reconciler_drift"] == [({"environment": "dev"}, 1.0)]
    pending = dict((r[0]["hazard"], r[1]) for r in samples["schema_reconciler_pending_statements"])
    assert pending == {k: (1.0 if k == "DESTRUCTIVE" else 0.0) for k in HAZARD_LABELS}
    assert ({"environment": "dev", "kind": "NONE"}, 2.0) in samples["schema_reconciler_statements_applied_total"]
    age = samples["schema_reconciler_oldest_pending_plan_age_seconds"][0][1]
    assert 299 <= age <= 360
    assert samples["schema_reconciler_desired_revision_info"] == [({"revision": "a" * 64}, 1.0)]
    # Every outcome exists from the start, so rate() and absent() behave.
    outcomes = {r[0]["outcome"] for r in samples["schema_reconciler_reconciles_total"]}
    assert outcomes == {"success", "requeue", "error", "terminal"}


def test_each_daemon_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.add_environment("dev", suspended=False)
    a.set_drift("dev", True, {})
    assert "schema_reconciler_drift{" in a.render().decode()
    assert "schema_reconciler_drift{" not in b.render().decode()


def test_removing_an_environment_removes_its_series() -> None:
    m = populated()
    m.remove_environment("dev")
    for name, rows in exposition(m).items():
        assert all(labels.get("environment") != "dev" for labels, _ in rows), name


def _referenced(text: str) -> set[str]:
    return set(re.findall(r"\bschema_reconciler_[a-z_]+", text))


def test_alert_rules_and_readme_use_existing_metrics() -> None:
    known = set(exposition(populated()))
    for name in list(known):  # histograms: the family name is referenced in docs too
        for suffix in ("_bucket", "_count", "_sum", "_total", "_info"):
            if name.endswith(suffix):
                known.add(name[: -len(suffix)])
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-rules.yaml").read_text())
    exprs = " ".join(r["expr"] for g in rules["groups"] for r in g["rules"])
    assert _referenced(exprs) and _referenced(exprs) <= known, _referenced(exprs) - known
    readme = (ROOT / "README.md").read_text()
    assert _referenced(readme) <= known, _referenced(readme) - known


def test_a_scrape_of_a_slowly_rendering_registry_gets_the_last_rendering_at_once() -> None:
    """Once a rendering took long (a large fleet), a scrape never waits for one: it gets the previous rendering
    and the next scrape the one made in the background meanwhile. A quick registry is rendered fresh each time."""
    from reconciler.obs.metrics import _Renderings

    made: list[int] = []
    done = threading.Event()

    def render() -> bytes:
        made.append(len(made) + 1)
        if len(made) == 2:
            done.set()
        return str(made[-1]).encode()

    slow = _Renderings(render, slow=-1.0)  # every rendering counts as slow
    assert slow.get() == b"1"  # nothing rendered yet: this scrape waits for the first rendering
    assert slow.get() == b"1"  # the previous one, at once; a fresh one is being made
    assert done.wait(5)
    deadline = time.monotonic() + 5
    got = slow.get()
    while got == b"1" and time.monotonic() < deadline:
        time.sleep(0.01)
        got = slow.get()
    assert got == b"2"
    quick = Metrics()
    quick.add_environment("dev", suspended=False)
    before = quick.render_for_scrape()
    quick.set_stalled("dev", True)
    assert quick.render_for_scrape() != before  # rendered fresh: no stale figures for a small registry
    large = Metrics()
    for i in range(LARGE_FLEET):
        large.add_environment(f"tenant{i}", suspended=False)
    first = large.render_for_scrape()
    large.set_stalled("tenant0", True)
    assert large.render_for_scrape() == first  # a large fleet's scrape gets the last rendering, whatever it took
    assert b"_created" not in before
