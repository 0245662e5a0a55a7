"""MF1xx, table-driven, no database: statements that fail depending on the rows already there."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from hazard_helpers import EMPTY, LARGE, SMALL, UNANALYZED, codes, messages, table

from reconciler.model import TableStats


@dataclass(frozen=True)
class Case:
    name: str
    sqls: tuple[str, ...]
    stats: Mapping[str, TableStats]
    expected: tuple[tuple[str, ...], ...]  # MF codes per statement
    says: str = ""


def t(stats: TableStats, **changes: object) -> Mapping[str, TableStats]:
    return {"public.t": table(stats, **changes)}


ADD_NOT_NULL = 'alter table "public"."t" add column "v" integer not null'
UNIQUE_INDEX = "CREATE UNIQUE INDEX t_v_key ON public.t USING btree (v)"

CASES = [
    Case("not null column on empty table", (ADD_NOT_NULL,), t(EMPTY), ((),)),
    Case("not null column on table with rows", (ADD_NOT_NULL,), t(SMALL), (("MF101",),), "~200 rows"),
    Case("not null column, rows never analyzed", (ADD_NOT_NULL,), t(UNANALYZED), (("MF101",),), "never analyzed"),
    Case("not null column, size unknown", (ADD_NOT_NULL,), {}, (("MF101",),), "size unknown"),
    Case(
        "not null column with default",
        ('alter table "public"."t" add column "v" integer not null default 0',),
        t(SMALL),
        ((),),
    ),
    Case("nullable column", ('alter table "public"."t" add column "v" integer',), t(LARGE), ((),)),
    Case(
        "identity column fills itself",
        ('alter table "public"."t" add column "v" bigint generated always as identity',),
        t(SMALL),
        ((),),
    ),
    Case(
        "table created by the plan is empty",
        ('create table "public"."n" ("id" integer)', 'alter table "public"."n" add column "v" integer not null'),
        {},
        ((), ()),
    ),
    Case("unique index on empty table", (UNIQUE_INDEX,), t(EMPTY), ((),)),
    Case("unique index on table with rows", (UNIQUE_INDEX,), t(SMALL), (("MF102",),), "duplicates"),
    Case("plain index on table with rows", ("CREATE INDEX t_v ON public.t USING btree (v)",), t(SMALL), ((),)),
    Case(
        "unique constraint", ('alter table "public"."t" add constraint "t_v_key" UNIQUE (v)',), t(SMALL), (("MF102",),)
    ),
    Case(
        "primary key",
        ('alter table "public"."t" add constraint "t_pkey" PRIMARY KEY (id)',),
        t(SMALL),
        (("MF102",),),
        "NULLs",
    ),
    Case(
        "constraint using an existing index",
        ('alter table "public"."t" add constraint "t_pkey" PRIMARY KEY using index "t_pkey"',),
        t(SMALL),
        ((),),
    ),
    Case(
        "check constraint validated",
        ('alter table "public"."t" add constraint "c" CHECK ((v > 0))',),
        t(SMALL),
        (("MF103",),),
    ),
    Case(
        "check constraint NOT VALID",
        ('alter table "public"."t" add constraint "c" CHECK ((v > 0)) not valid',),
        t(SMALL),
        ((),),
    ),
    Case(
        "set not null with rows", ('alter table "public"."t" alter column "v" set not null',), t(SMALL), (("MF104",),)
    ),
    Case("set not null on empty table", ('alter table "public"."t" alter column "v" set not null',), t(EMPTY), ((),)),
    Case(
        "foreign key validated",
        ('alter table "public"."t" add constraint "f" FOREIGN KEY (u) REFERENCES u(id)',),
        t(SMALL),
        (("MF105",),),
        "public.u",
    ),
    Case(
        "migra's NOT VALID then VALIDATE",
        (
            'alter table "public"."t" add constraint "f" FOREIGN KEY (u) REFERENCES u(id) not valid',
            'alter table "public"."t" validate constraint "f"',
        ),
        t(SMALL),
        ((), ("MF106",)),
    ),
    Case("validate on empty table", ('alter table "public"."t" validate constraint "f"',), t(EMPTY), ((),)),
    Case(
        "recast to a recreated enum with rows",
        (
            "create type \"public\".\"mood\" as enum ('a', 'c')",
            'alter table "public"."t" alter column m type "public"."mood" using m::text::"public"."mood"',
        ),
        t(SMALL, columns={"m": "public.mood"}),
        ((), ("MF107",)),
        "lacks",
    ),
    Case(
        "recast to a recreated enum, empty table",
        (
            "create type \"public\".\"mood\" as enum ('a', 'c')",
            'alter table "public"."t" alter column m type "public"."mood" using m::text::"public"."mood"',
        ),
        t(EMPTY, columns={"m": "public.mood"}),
        ((), ()),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_data_dependent(case: Case) -> None:
    assert codes(case.sqls, case.stats, "MF") == list(case.expected)
    if case.says:
        assert case.says in messages(case.sqls, case.stats, "MF")
