"""A daemon pass re-reads the desired state only when its files changed."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from reconciler.config import load_config
from reconciler.desired import desired_signature
from reconciler.obs.metrics import Metrics
from reconciler.reconcile.board import StatusBoard
from reconciler.reconcile.loop import ReconcileContext
from reconciler.service import Reconciler


def test_the_desired_state_is_parsed_again_only_when_a_file_changes(tmp_path: Path) -> None:
    ds = tmp_path / "desired-state"
    ds.mkdir()
    (ds / "010.sql").write_text("create table t (id int);\n")
    (tmp_path / "reconciler.yaml").write_text(yaml.safe_dump({"desired_state": "desired-state"}))
    ctx = ReconcileContext(Reconciler(load_config(tmp_path / "reconciler.yaml")), Metrics(), StatusBoard())
    first = ctx.load_desired()
    assert ctx.load_desired() is first  # unchanged: the same object, not parsed again
    (ds / "010.sql").write_text("create table t (id bigint);\n")
    second = ctx.load_desired()
    assert second.revision != first.revision
    (ds / "sub").mkdir()
    (ds / "sub" / "020.sql").write_text("create table u (id int);\n")
    assert ctx.load_desired().revision not in (first.revision, second.revision)


def test_the_signature_sees_content_changes_of_the_same_size_and_ignores_hidden_copies(tmp_path: Path) -> None:
    f = tmp_path / "010.sql"
    f.write_text("create table a (id int);\n")
    before = desired_signature(tmp_path)
    f.write_text("create table b (id int);\n")
    os.utime(f, ns=(1, 1))
    assert desired_signature(tmp_path) != before
    (tmp_path / "..data").mkdir()
    (tmp_path / "..data" / "010.sql").write_text("x")
    assert [row[0] for row in desired_signature(tmp_path)] == ["010.sql"]
