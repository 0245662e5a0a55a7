"""The desired build's inspection and description are kept across processes in the reconciler's own folder: a new
process plans without building the desired state again; a changed revision, or a file someone else could have
written, is not used."""

from __future__ import annotations

import stat
from collections.abc import Callable
from pathlib import Path

from reconciler.service import Reconciler
from tests.conftest import run_sql

DESIRED = {"010.sql": "create table t (id int primary key, note text);\ncomment on table t is 'kept';\n"}


def test_a_new_process_plans_from_the_kept_build_and_a_change_is_built_again(
    project: Callable[..., Path],
    make_db: Callable[..., str],
    reconciler_for: Callable[[Path], Reconciler],
    tmp_path: Path,
) -> None:
    env = {"dev": {"dsn": make_db("create table t (id int primary key);")}}
    own = {"data_dir": str(tmp_path / "state" / "postgres")}  # a state folder of its own (not the session server's)
    path = project(DESIRED, env, embedded=own)
    first = reconciler_for(path)
    planned = first.plan("dev")
    folder = first.scratch.cache_dir
    assert folder == tmp_path / "state" / "cache"
    [kept] = list(folder.glob("desired-*.pickle"))
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700 and stat.S_IMODE(kept.stat().st_mode) == 0o600

    again = reconciler_for(path)  # as a new process would: nothing built in it yet
    assert again.plan("dev").statements == planned.statements
    assert again.scratch.built_revision is None  # planned from the kept build

    kept.chmod(0o620)  # writable by its group: it may have been planted, so it is not unpickled
    third = reconciler_for(path)
    assert third.plan("dev").statements == planned.statements
    assert third.scratch.built_revision == planned.desired_revision

    changed = reconciler_for(
        project({"010.sql": "create table t (id int primary key, note text, n int);\n"}, env, embedded=own)
    )
    assert any('add column "n"' in s.sql for s in changed.plan("dev").statements)
    assert changed.scratch.built_revision is not None


def test_an_unchanged_environment_is_planned_from_its_kept_inspection_and_a_changed_one_is_inspected_again(
    project: Callable[..., Path],
    make_db: Callable[..., str],
    reconciler_for: Callable[[Path], Reconciler],
    tmp_path: Path,
) -> None:
    dsn = make_db("create table t (id int primary key);")
    path = project(DESIRED, {"dev": {"dsn": dsn}}, embedded={"data_dir": str(tmp_path / "state" / "postgres")})
    first = reconciler_for(path)
    planned = first.plan("dev")
    folder = first.scratch.cache_dir
    [kept] = list(folder.glob("environment-*.pickle"))
    assert stat.S_IMODE(kept.stat().st_mode) == 0o600

    again = reconciler_for(path)
    assert again.plan("dev").statements == planned.statements
    assert list(folder.glob("environment-*.pickle")) == [kept]  # the same fingerprint: the kept one was read

    run_sql(dsn, "alter table t add column extra int")  # a new fingerprint: inspected again
    changed = reconciler_for(path).plan("dev")
    assert any('drop column "extra"' in s.sql for s in changed.statements)
    assert len(list(folder.glob("environment-*.pickle"))) == 2
