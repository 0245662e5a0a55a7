"""The allow-list verdict kept per desired revision and sandbox settings: a pass is kept and trusted only from a
private file of this user; a refusal is never kept; a planted, tampered or foreign-owned verdict is not used."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from reconciler import buildcache
from reconciler.config import SandboxConfig
from reconciler.desired import load_desired
from reconciler.errors import DesiredStateError
from reconciler.model import DesiredState, SqlFile
from reconciler.scratch import ScratchServer

ALLOWED = DesiredState(root="x", files=(SqlFile("a.sql", "create table t (id int);"),), revision="r1")


def refused_as(revision: str) -> DesiredState:
    """A refused file under the revision of an allowed one: only a kept verdict can let it through."""
    return DesiredState(root="x", files=(SqlFile("a.sql", "copy t from program 'id';"),), revision=revision)


def scratch(folder: Path) -> ScratchServer:
    return ScratchServer("host=/nonexistent dbname=postgres", cache_dir=folder)  # the checks never connect


def verdict_file(folder: Path) -> Path:
    [path] = folder.glob("allowed-*.pickle")
    return path


def test_a_pass_is_kept_and_a_refusal_never_is(tmp_path: Path) -> None:
    box = scratch(tmp_path / "cache")
    with pytest.raises(DesiredStateError, match="COPY is not allowed"):
        box.check_allowed(refused_as("r0"))
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").glob("allowed-*"))
    box.check_allowed(ALLOWED)
    assert verdict_file(tmp_path / "cache").stat().st_mode & 0o777 == 0o600
    box.check_allowed(refused_as("r1"))  # the kept pass of revision r1 is used
    other = ScratchServer(
        "host=/nonexistent", cache_dir=tmp_path / "cache", sandbox=SandboxConfig(extensions_allowed=())
    )
    with pytest.raises(DesiredStateError):  # other sandbox settings: another key
        other.check_allowed(refused_as("r1"))


@pytest.mark.parametrize("tamper", ["group_writable", "foreign_owner", "other_key", "garbage"])
def test_a_tampered_or_foreign_verdict_is_not_used(tmp_path: Path, tamper: str) -> None:
    folder = tmp_path / "cache"
    box = scratch(folder)
    box.check_allowed(ALLOWED)
    path = verdict_file(folder)
    if tamper == "group_writable":
        path.chmod(0o620)
    elif tamper == "foreign_owner":
        if os.getuid() != 0:
            pytest.skip("giving a file to another user needs root")
        os.chown(path, 65534, 65534)
    elif tamper == "other_key":
        buildcache.save(folder, path.stem.removeprefix("allowed-"), "another key", kind="allowed")
    else:
        path.write_bytes(b"not a pickle")
    with pytest.raises(DesiredStateError, match="COPY is not allowed"):
        box.check_allowed(refused_as("r1"))


def test_a_known_good_revision_is_not_parsed_again(tmp_path: Path) -> None:
    (tmp_path / "a.sql").write_text("create tabel t (id int);")
    with pytest.raises(DesiredStateError, match="syntax error"):
        load_desired(tmp_path)
    with pytest.raises(DesiredStateError, match="syntax error"):
        load_desired(tmp_path, known_good=lambda revision: False)
    assert load_desired(tmp_path, known_good=lambda revision: True).files[0].path == "a.sql"
