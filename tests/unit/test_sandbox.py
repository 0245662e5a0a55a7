"""The allow-list of desired-state statements: default deny, checked with pglast before anything runs."""

from __future__ import annotations

from pathlib import Path

import pytest
from pglast import ast, parser

from reconciler.desired import load_desired
from reconciler.errors import DesiredStateError
from reconciler.model import DesiredState, SqlFile
from reconciler.sandbox import ALLOWED, DEFAULT_EXTENSIONS, check_desired, refusal

ROOT = Path(__file__).resolve().parents[2]


def test_the_bundled_desired_state_is_allowed() -> None:
    desired = load_desired(ROOT / "desired-state")
    checked = check_desired(desired, DEFAULT_EXTENSIONS)
    assert len(checked) == sum(len(parser.parse_sql(f.text)) for f in desired.files)


def test_every_statement_type_off_the_list_is_refused() -> None:
    """Default deny: a statement node type of pglast that is not on ALLOWED never passes (a new one neither)."""
    stmt_types = [getattr(ast, n) for n in dir(ast) if n.endswith("Stmt") and isinstance(getattr(ast, n), type)]
    off_list = [t for t in stmt_types if t not in ALLOWED]
    assert len(off_list) > 60
    refused = {t.__name__: (refusal(t(), DEFAULT_EXTENSIONS) or "") for t in off_list}
    assert {n: why for n, why in refused.items() if not why.endswith(" is not allowed")} == {}


@pytest.mark.parametrize(
    ("sql", "allowed"),
    [
        ("create extension citext", True),
        ('create extension "uuid-ossp"', True),
        ("create extension hstore", False),
        ("create schema s create table t (id int) create view v as select 1", True),
        ("create function f() returns int begin atomic select 1; end", True),
        ("create function f() returns int language plperl as 'return 1'", False),
        ("alter function f() set search_path = pg_catalog", True),
        ("alter function f() set role = postgres", False),
        ("reset all", False),
        ("create materialized view m as select 1", True),
        ("select 1 into t", False),
        ("explain analyze select 1", False),
        ("vacuum", False),
        ("refresh materialized view m", False),
        ("create rule r as on insert to t do instead nothing", False),
    ],
)
def test_statements(sql: str, allowed: bool) -> None:
    node = parser.parse_sql(sql)[0].stmt
    assert node is not None
    assert (refusal(node, DEFAULT_EXTENSIONS) is None) is allowed


def test_the_extension_list_is_configurable() -> None:
    node = parser.parse_sql("create extension hstore")[0].stmt
    assert node is not None
    assert refusal(node, ("hstore",)) is None
    assert refusal(node, ()) is not None


def test_a_refusal_names_the_file_and_line() -> None:
    desired = DesiredState(
        root="x",
        files=(
            SqlFile("000_ok.sql", "create table t (id int);"),
            SqlFile("010_bad.sql", "\n\n-- x\ncopy t to stdout;"),
        ),
        revision="r",
    )
    with pytest.raises(DesiredStateError, match=r"at 010_bad\.sql:4: COPY is not allowed") as caught:
        check_desired(desired, DEFAULT_EXTENSIONS)
    assert (caught.value.file, caught.value.line) == ("010_bad.sql", 4)
