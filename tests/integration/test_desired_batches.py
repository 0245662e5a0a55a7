"""The desired build sends consecutive statements in batches (one execution each): the built schema is the one a
statement-by-statement build makes, and an error still names its own file and line."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from reconciler.desired import check_syntax
from reconciler.errors import DesiredStateError
from reconciler.model import DesiredState, SqlFile
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.scratch import BATCH, ScratchServer
from tests.conftest import run_sql


@pytest.fixture(scope="module")
def scratch(pg_server: EmbeddedPostgres) -> Iterator[ScratchServer]:
    server = ScratchServer(pg_server.dsn("postgres"))
    try:
        yield server
    finally:
        server.close()


def _desired(files: dict[str, str], revision: str) -> DesiredState:
    for path, text in files.items():
        check_syntax(text, path, f"at {path}:")
    return DesiredState(root="desired", files=tuple(SqlFile(p, t) for p, t in files.items()), revision=revision)


def _tables(n: int, start: int = 0) -> str:
    return "".join(f"create table t{i} (id int primary key);\n" for i in range(start, start + n))


def test_an_error_in_the_middle_of_a_batch_names_its_file_and_line(scratch: ScratchServer) -> None:
    second = _tables(BATCH // 2) + "create view v as\n  select id,\n         missing\n    from t0;\n" + _tables(5, 900)
    desired = _desired({"010_a.sql": _tables(BATCH + 3, 500), "020_b.sql": second}, "batch-error")
    with pytest.raises(DesiredStateError) as caught:
        scratch.build_desired(desired)
    # the column is on the view's third line
    assert (caught.value.file, caught.value.line) == ("020_b.sql", BATCH // 2 + 3)
    assert "missing" in str(caught.value) and "020_b.sql" in str(caught.value)
    assert scratch.built_revision is None


def test_statements_that_must_run_alone_build_as_before(scratch: ScratchServer) -> None:
    text = (
        "create schema app;\n"
        "set search_path = app;\n"  # alone: the tables below are created in app
        + _tables(3)
        + "create index concurrently t0_id on t0 (id);\n"  # refuses a transaction block: its batch runs again
        + "begin;\ncreate table inside (id int);\ncommit;\n"
        + "create type mood as enum ('ok');\nalter type mood add value 'meh';\n"
        + "create table feeling (m mood default 'meh');\n"  # the new value, used after it was added
    )
    built = scratch.build_desired(_desired({"010.sql": text}, "batch-alone"))
    rows = run_sql(
        scratch.admin_dsn_in(built.dbname),
        "select c.relname from pg_class c join pg_namespace n on n.oid = c.relnamespace "
        "where n.nspname = 'app' and c.relkind in ('r', 'i') order by 1",
    )
    assert [r[0] for r in rows] == ["feeling", "inside", "t0", "t0_id", "t0_pkey", "t1", "t1_pkey", "t2", "t2_pkey"]


def test_an_error_inside_the_desired_states_own_transaction_names_its_line(scratch: ScratchServer) -> None:
    # Inside BEGIN ... COMMIT nothing is batched: a failed batch would abort the transaction, and the re-run would
    # blame the first statement after BEGIN.
    text = "begin;\n" + _tables(3) + "create table broken (id nosuchtype);\n" + _tables(2, 50) + "commit;\n"
    with pytest.raises(DesiredStateError) as caught:
        scratch.build_desired(_desired({"010.sql": text}, "batch-in-transaction"))
    assert (caught.value.file, caught.value.line) == ("010.sql", 5)
    assert "nosuchtype" in str(caught.value)
