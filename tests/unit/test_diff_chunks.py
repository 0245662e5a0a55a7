"""A migra chunk is one statement, or refused; the one chunk of two statements let through is a trigger created
with its enabled state (migra writes ``CREATE TRIGGER ...; ALTER TABLE ... ENABLE ALWAYS TRIGGER ...`` as one)."""

from __future__ import annotations

import pytest

from reconciler.diff import statements_of
from reconciler.errors import UnsafeSqlError

CREATE = "CREATE TRIGGER tr BEFORE UPDATE ON public.t FOR EACH ROW EXECUTE FUNCTION public.tf();\n"


def test_one_statement_is_kept_as_it_is() -> None:
    assert statements_of("alter table t add column v text;\n") == ["alter table t add column v text"]


@pytest.mark.parametrize("state", ["ENABLE ALWAYS", "ENABLE REPLICA", "DISABLE", "ENABLE"])
def test_a_trigger_created_with_its_state_is_two_statements(state: str) -> None:
    chunk = CREATE + f'ALTER TABLE "public"."t" {state} TRIGGER "tr";'
    assert statements_of(chunk) == [CREATE.strip().removesuffix(";"), f'ALTER TABLE "public"."t" {state} TRIGGER "tr"']


@pytest.mark.parametrize(
    "second",
    [
        'ALTER TABLE "public"."u" ENABLE ALWAYS TRIGGER "tr"',  # another table
        'ALTER TABLE "public"."t" ENABLE ALWAYS TRIGGER "other"',  # another trigger
        'ALTER TABLE "public"."t" ENABLE ALWAYS TRIGGER "tr", DROP COLUMN v',  # more than the state
        "DROP TABLE public.t",
        "SELECT public.wipe()",
    ],
)
def test_anything_else_after_a_trigger_is_refused(second: str) -> None:
    with pytest.raises(UnsafeSqlError, match="2 statements"):
        statements_of(CREATE + second + ";")


def test_two_statements_of_another_kind_are_refused() -> None:
    with pytest.raises(UnsafeSqlError):
        statements_of("create table a (id int); create table b (id int);")


def test_names_and_arguments_beyond_ascii_split_where_the_statements_do() -> None:
    create = 'CREATE TRIGGER "trigger_é" BEFORE INSERT ON public."ü" FOR EACH ROW EXECUTE FUNCTION tf(\'ééé\')'
    alter = 'ALTER TABLE "public"."ü" ENABLE ALWAYS TRIGGER "trigger_é"'
    assert statements_of(f"{create};\n{alter};") == [create, alter]
