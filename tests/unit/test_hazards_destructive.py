"""DS1xx, table-driven, no database: what loses data, and what only looks like it does."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from hazard_helpers import EMPTY, SMALL, codes, messages, table

from reconciler.model import TableStats


@dataclass(frozen=True)
class Case:
    name: str
    sqls: tuple[str, ...]
    expected: tuple[tuple[str, ...], ...]  # DS codes per statement
    stats: Mapping[str, TableStats] = field(default_factory=dict)
    says: str = ""  # a phrase the DS messages must contain


def cols(**columns: str) -> Mapping[str, TableStats]:
    return {"public.t": table(SMALL, columns=columns)}


ALTER = 'alter table "public"."t" alter column "v" set data type {new} using "v"::{new}'

CASES = [
    Case("schema dropped", ('drop schema "old"',), (("DS101",),)),
    Case("table dropped", ('drop table "public"."t"',), (("DS102",),), says="drops table public.t"),
    Case("foreign table dropped", ('drop foreign table "public"."ft"',), (("DS102",),)),
    Case("cascade named", ('drop table "public"."t" cascade',), (("DS102",),), says="CASCADE"),
    Case("column dropped", ('alter table "public"."t" drop column "legacy"',), (("DS103",),), says="t.legacy"),
    Case("sequence dropped", ('drop sequence "public"."s"',), (("DS104",),)),
    Case("enum dropped", ('drop type "public"."mood"',), (("DS105",),)),
    Case("domain dropped", ('drop domain "public"."email"',), (("DS105",),)),
    Case("matview dropped", ('drop materialized view if exists "public"."m"',), (("DS106",),)),
    Case(
        "matview recreated is no data loss",
        ('drop materialized view if exists "public"."m"', 'create materialized view "public"."m" as select 1 as x'),
        ((), ()),
    ),
    Case("rows truncated", ('truncate "public"."t"',), (("DS108",),)),
    Case("rows deleted", ('delete from "public"."t" where id > 3',), (("DS109",),)),
    Case("extension dropped", ('drop extension "pgcrypto"',), (("DS110",),)),
    Case("rows updated", ('update "public"."t" set v = null',), (("DS112",),)),
    Case("rows merged", ("merge into t using s on t.id = s.id when matched then delete",), (("DS112",),)),
    Case("objects of a role dropped", ("drop owned by app",), (("DS113",),)),
    Case("view dropped is not data loss", ('drop view if exists "public"."v"',), ((),)),
    Case("index dropped is not data loss", ('drop index if exists "public"."t_i"',), ((),)),
    # Type changes, judged against the type the environment has (figures read from the catalog).
    Case("int to bigint widens", (ALTER.format(new="bigint"),), ((),), cols(v="integer")),
    Case("varchar widened", (ALTER.format(new="character varying(50)"),), ((),), cols(v="character varying(20)")),
    Case("varchar to text widens", (ALTER.format(new="text"),), ((),), cols(v="character varying(20)")),
    Case("numeric precision up", (ALTER.format(new="numeric(14,2)"),), ((),), cols(v="numeric(10,2)")),
    Case("date to timestamp widens", (ALTER.format(new="timestamp without time zone"),), ((),), cols(v="date")),
    Case(
        "bigint to int narrows",
        (ALTER.format(new="integer"),),
        (("DS111",),),
        cols(v="bigint"),
        "from bigint to integer",
    ),
    Case(
        "varchar shortened",
        (ALTER.format(new="character varying(5)"),),
        (("DS111",),),
        cols(v="character varying(20)"),
        "longer than 5 characters are cut",
    ),
    Case("text to varchar(n)", (ALTER.format(new="character varying(10)"),), (("DS111",),), cols(v="text")),
    Case("scale reduced", (ALTER.format(new="numeric(10,1)"),), (("DS111",),), cols(v="numeric(10,2)"), "rounded"),
    Case("integer digits reduced", (ALTER.format(new="numeric(6,2)"),), (("DS111",),), cols(v="numeric(10,2)")),
    Case("float to int", (ALTER.format(new="integer"),), (("DS111",),), cols(v="double precision")),
    Case("double to real", (ALTER.format(new="real"),), (("DS111",),), cols(v="double precision")),
    Case("bigint to double", (ALTER.format(new="double precision"),), (("DS111",),), cols(v="bigint")),
    Case("timestamp to date", (ALTER.format(new="date"),), (("DS111",),), cols(v="timestamp without time zone")),
    Case(
        "timestamp precision",
        (ALTER.format(new="timestamp(0) without time zone"),),
        (("DS111",),),
        cols(v="timestamp without time zone"),
    ),
    Case("json to jsonb", (ALTER.format(new="jsonb"),), (("DS111",),), cols(v="json")),
    Case("text to integer", (ALTER.format(new="integer"),), (("DS107",),), cols(v="text"), "may be rejected"),
    Case(
        "timestamptz to timestamp",
        (ALTER.format(new="timestamp without time zone"),),
        (("DS107",),),
        cols(v="timestamp with time zone"),
    ),
    Case("array to scalar", (ALTER.format(new="integer"),), (("DS107",),), cols(v="integer[]")),
    Case("old type unknown", (ALTER.format(new="bigint"),), (("DS107",),), {}, "old type unknown"),
    Case(
        "enum recreated to add a value is no data loss",
        (
            'alter type "public"."mood" rename to "mood__old_version_to_be_dropped"',
            "create type \"public\".\"mood\" as enum ('a', 'b', 'c')",
            'alter table "public"."t" alter column m type "public"."mood" using m::text::"public"."mood"',
            'drop type "public"."mood__old_version_to_be_dropped"',
        ),
        ((), (), (), ()),
        {"public.t": table(EMPTY, columns={"m": "public.mood"})},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_destructive(case: Case) -> None:
    assert codes(case.sqls, case.stats, "DS") == list(case.expected)
    if case.says:
        assert case.says in messages(case.sqls, case.stats, "DS")
