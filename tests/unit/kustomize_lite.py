"""A renderer for the subset of kustomize that deploy/kubernetes/ uses, so the suite can check the manifests
without a kustomize binary (none is installed here; ``kubectl kustomize`` renders the same files in a cluster).

Supported, and nothing else (an unknown field of a kustomization is an error, so the subset cannot grow
unnoticed): ``resources`` (files and folders holding a kustomization), ``namespace``, ``labels`` (``pairs``,
metadata labels only: ``includeSelectors`` must not be set), ``images`` (``name`` with ``newTag`` and/or
``newName``) and ``patches`` given by ``path`` as strategic-merge patches. The merge follows kustomize for what
the overlays use: maps merge key by key, ``null`` removes a key, lists of maps that all have a ``name`` merge item
by item on ``name``, any other list is replaced.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

SUPPORTED = {"apiVersion", "kind", "resources", "namespace", "labels", "images", "patches"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition"}


class KustomizeError(Exception):
    pass


def render(folder: Path) -> list[dict[str, Any]]:
    kfile = folder / "kustomization.yaml"
    k = yaml.safe_load(kfile.read_text())
    unknown = set(k) - SUPPORTED
    if unknown:
        raise KustomizeError(f"{kfile}: fields this renderer does not support: {sorted(unknown)}")
    docs: list[dict[str, Any]] = []
    for res in k.get("resources", []):
        path = (folder / res).resolve()
        if path.is_dir():
            docs += render(path)
        else:
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    for patch in k.get("patches", []):
        if set(patch) != {"path"}:
            raise KustomizeError(f"{kfile}: only patches given by path are supported: {patch}")
        _apply_patch(docs, yaml.safe_load((folder / patch["path"]).read_text()), kfile)
    for group in k.get("labels", []):
        if group.get("includeSelectors"):
            raise KustomizeError(f"{kfile}: labels with includeSelectors are not supported")
        for doc in docs:
            doc.setdefault("metadata", {}).setdefault("labels", {}).update(group["pairs"])
    for image in k.get("images", []):
        for doc in docs:
            _set_image(doc, image)
    if "namespace" in k:
        for doc in docs:
            if doc["kind"] not in CLUSTER_SCOPED:
                doc["metadata"]["namespace"] = k["namespace"]
    return docs


def _apply_patch(docs: list[dict[str, Any]], patch: dict[str, Any], kfile: Path) -> None:
    hits = [d for d in docs if d["kind"] == patch["kind"] and d["metadata"]["name"] == patch["metadata"]["name"]]
    if len(hits) != 1:
        raise KustomizeError(f"{kfile}: patch of {patch['kind']}/{patch['metadata']['name']} matches {len(hits)}")
    merged = merge(hits[0], patch)
    docs[docs.index(hits[0])] = merged


def merge(base: Any, patch: Any) -> Any:
    if isinstance(base, dict) and isinstance(patch, dict):
        out = dict(base)
        for key, value in patch.items():
            if value is None:
                out.pop(key, None)
            elif key in out:
                out[key] = merge(out[key], value)
            else:
                out[key] = value
        return out
    if isinstance(base, list) and isinstance(patch, list) and _named(base) and _named(patch):
        out_list = list(base)
        for item in patch:
            names = [i["name"] for i in out_list]
            if item["name"] in names:
                at = names.index(item["name"])
                out_list[at] = merge(out_list[at], item)
            else:
                out_list.append(item)
        return out_list
    return patch


def _named(items: list[Any]) -> bool:
    return bool(items) and all(isinstance(i, dict) and "name" in i for i in items)


def _set_image(doc: dict[str, Any], image: dict[str, str]) -> None:
    pod = doc.get("spec", {}).get("template", {}).get("spec", {})
    for container in pod.get("containers", []) + pod.get("initContainers", []):
        ref = container.get("image", "")
        if ref.split(":")[0] == image["name"]:
            container["image"] = f"{image.get('newName', image['name'])}:{image.get('newTag', 'latest')}"
