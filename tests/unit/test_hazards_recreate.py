"""RC1xx, EX1xx and RN1xx, table-driven, no database: recreated objects (dependants named), extension changes,
and drops plus adds that look like renames."""

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
    prefix: str
    expected: tuple[tuple[str, ...], ...]  # codes with that prefix, per statement
    stats: Mapping[str, TableStats] = field(default_factory=dict)
    says: tuple[str, ...] = ()


VIEWS = (
    'drop view if exists "public"."v2"',
    'drop view if exists "public"."v1"',
    'create or replace view "public"."v1" as  SELECT t.v FROM t',
    'create or replace view "public"."v2" as  SELECT v1.v FROM v1',
)
MATVIEW = (
    'drop materialized view if exists "public"."m"',
    'create materialized view "public"."m" as  SELECT t.id, t.v FROM t',
)
ENUM = (
    'alter type "public"."mood" rename to "mood__old_version_to_be_dropped"',
    "create type \"public\".\"mood\" as enum ('a', 'b', 'c')",
    'alter table "public"."t" alter column m type "public"."mood" using m::text::"public"."mood"',
    'drop type "public"."mood__old_version_to_be_dropped"',
)

CASES = [
    Case(
        "views dropped and recreated",
        VIEWS,
        "RC",
        (("RC101",), ("RC101",), (), ()),
        {"public.v1": table(EMPTY, kind="v", dependants=("public.v2",), has_grants=True)},
        ("view public.v2", "grants", "statement 3"),
    ),
    Case("view dropped for good", ('drop view if exists "public"."v"',), "RC", ((),)),
    Case("view replaced in place", ('create or replace view "public"."v" as select 1 as x',), "RC", ((),)),
    Case(
        "function with a new signature",
        (
            'drop function if exists "public"."f"(a integer)',
            "CREATE OR REPLACE FUNCTION public.f(a bigint) RETURNS trigger LANGUAGE plpgsql AS $f$begin return new; end$f$",
            'drop trigger if exists "tr" on "public"."t"',
            "CREATE TRIGGER tr BEFORE INSERT ON public.t FOR EACH ROW EXECUTE FUNCTION f()",
        ),
        "RC",
        (("RC102",), (), ("RC103",), ()),
        {},
        ("trigger public.t.tr", "EXECUTE grants"),
    ),
    Case(
        "materialized view recreated without its indexes",
        MATVIEW,
        "RC",
        (("RC104",), ()),
        {"public.m": table(SMALL, kind="m", indexes=("m_id",))},
        ("indexes m_id are not recreated",),
    ),
    Case(
        "materialized view recreated with its indexes",
        (*MATVIEW, "CREATE INDEX m_id ON public.m USING btree (id)"),
        "RC",
        (("RC104",), (), ()),
        {"public.m": table(SMALL, kind="m", indexes=("m_id",))},
    ),
    Case(
        "enum recreated", ENUM, "RC", ((), (), (), ("RC105",)), {"public.t": table(EMPTY, columns={"m": "public.mood"})}
    ),
    Case("type dropped for good", ('drop type "public"."mood"',), "RC", ((),)),
    Case("extension updated", ("alter extension \"pg_trgm\" update to '1.6'",), "EX", (("EX101",),), {}, ("1.6",)),
    Case(
        "extension created",
        ('create extension if not exists "pgcrypto" with schema "public" version \'1.3\'',),
        "EX",
        (("EX102",),),
        {},
        ("pgcrypto version 1.3 in schema public",),
    ),
    Case("extension moved", ('alter extension "pgcrypto" set schema "ext"',), "EX", (("EX103",),)),
    Case(
        "column rename hint",
        ('alter table "public"."t" drop column "a"', 'alter table "public"."t" add column "b" text'),
        "RN",
        (("RN101",), ("RN101",)),
        {"public.t": table(SMALL, columns={"id": "integer", "a": "text"})},
        ("RENAME COLUMN a TO b", "expand/contract"),
    ),
    Case(
        "column of another type is no rename",
        ('alter table "public"."t" drop column "a"', 'alter table "public"."t" add column "b" integer'),
        "RN",
        ((), ()),
        {"public.t": table(SMALL, columns={"id": "integer", "a": "text"})},
    ),
    Case(
        "table rename hint",
        ('drop table "public"."t"', 'create table "public"."t2" ("id" integer, "a" text)'),
        "RN",
        (("RN102",), ("RN102",)),
        {"public.t": table(SMALL, columns={"id": "integer", "a": "text"})},
        ("ALTER TABLE public.t RENAME TO t2",),
    ),
    Case(
        "table with other columns is no rename",
        ('drop table "public"."t"', 'create table "public"."t2" ("id" integer, "a" text, "b" text)'),
        "RN",
        ((), ()),
        {"public.t": table(SMALL, columns={"id": "integer", "a": "text"})},
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_recreate_extension_rename(case: Case) -> None:
    assert codes(case.sqls, case.stats, case.prefix) == list(case.expected)
    text = messages(case.sqls, case.stats, case.prefix)
    for phrase in case.says:
        assert phrase in text
