"""LK1xx, table-driven, no database: the same statement is harmless on an empty or small table and a lock hazard
on a large one; an online-safe rewrite takes the hazard away."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pytest
from hazard_helpers import EMPTY, LARGE, SMALL, UNANALYZED, codes, messages, run, table

from reconciler.hazards import LargeTable
from reconciler.model import TableStats


@dataclass(frozen=True)
class Case:
    name: str
    sqls: tuple[str, ...]
    stats: Mapping[str, TableStats]
    expected: tuple[tuple[str, ...], ...]  # LK codes per statement
    online: bool = True
    says: str = ""


def t(stats: TableStats, **changes: object) -> Mapping[str, TableStats]:
    return {"public.t": table(stats, **changes)}


INDEX = "CREATE INDEX t_v ON public.t USING btree (v)"
FK_ADD = 'alter table "public"."t" add constraint "t_u_fkey" FOREIGN KEY (u) REFERENCES u(id) not valid'
FK_VALIDATE = 'alter table "public"."t" validate constraint "t_u_fkey"'
SET_NOT_NULL = 'alter table "public"."t" alter column "v" set not null'
CHECK = 'alter table "public"."t" add constraint "t_v_check" CHECK ((v > 0))'
FK = 'alter table "public"."t" add constraint "t_u_fkey" FOREIGN KEY (u) REFERENCES u(id)'

CASES = [
    Case("index on empty table", (INDEX,), t(EMPTY), ((),)),
    Case("index on small table", (INDEX,), t(SMALL), ((),)),
    Case("index on large table runs concurrently", (INDEX,), t(LARGE), ((),)),
    Case(
        "index on large table, rewrites off",
        (INDEX,),
        t(LARGE),
        (("LK101",),),
        online=False,
        says="online_rewrites is off",
    ),
    Case("index on large partitioned table", (INDEX,), t(LARGE, kind="p"), (("LK101",),), says="partitioned"),
    Case("index on table of unknown size", (INDEX,), {}, (("LK101",),), says="size unknown"),
    Case("index on unanalyzed small table", (INDEX,), t(UNANALYZED), ((),)),
    Case("index already concurrent", ("CREATE INDEX CONCURRENTLY t_v ON public.t (v)",), t(LARGE), ((),), online=False),
    Case(
        "index on a table the plan creates",
        ('create table "public"."n" ("v" integer)', "CREATE INDEX n_v ON public.n USING btree (v)"),
        {},
        ((), ()),
    ),
    Case(
        "int to bigint rewrites a large table",
        ('alter table "public"."t" alter column "v" set data type bigint using "v"::bigint',),
        t(LARGE, columns={"v": "integer"}),
        (("LK102",),),
        says="~5,000,000 rows, 2048 MB",
    ),
    Case(
        "int to bigint on a small table",
        ('alter table "public"."t" alter column "v" set data type bigint using "v"::bigint',),
        t(SMALL, columns={"v": "integer"}),
        ((),),
    ),
    Case(
        "varchar widened needs no rewrite",
        (
            'alter table "public"."t" alter column "v" set data type character varying(50) using "v"::character varying(50)',
        ),
        t(LARGE, columns={"v": "character varying(20)"}),
        ((),),
    ),
    Case(
        "volatile default rewrites",
        ('alter table "public"."t" add column "w" uuid default gen_random_uuid()',),
        t(LARGE),
        (("LK103",),),
        says="gen_random_uuid",
    ),
    Case(
        "serial column rewrites",
        ('alter table "public"."t" add column "s" integer not null default nextval(\'t_s_seq\'::regclass)',),
        t(LARGE),
        (("LK103",),),
    ),
    Case(
        "identity column rewrites",
        ('alter table "public"."t" add column "s" bigint generated always as identity',),
        t(LARGE),
        (("LK103",),),
    ),
    Case(
        "stable default is a brief lock only",
        ('alter table "public"."t" add column "at" timestamptz default now()',),
        t(LARGE),
        (("LK107",),),
    ),
    Case("nullable column on large table", ('alter table "public"."t" add column "w" text',), t(LARGE), (("LK107",),)),
    Case("nullable column on small table", ('alter table "public"."t" add column "w" text',), t(SMALL), ((),)),
    Case("set not null proven online", (SET_NOT_NULL,), t(LARGE), ((),)),
    Case("set not null, rewrites off", (SET_NOT_NULL,), t(LARGE), (("LK104",),), online=False),
    Case("set not null on partitioned table", (SET_NOT_NULL,), t(LARGE, kind="p"), (("LK104",),)),
    Case("check without NOT VALID, rewritten", (CHECK,), t(LARGE), ((),)),
    Case("check without NOT VALID, rewrites off", (CHECK,), t(LARGE), (("LK105",),), online=False),
    Case("fk without NOT VALID, rewrites off", (FK,), t(LARGE), (("LK106",),), online=False, says="public.u"),
    Case("fk NOT VALID then validated on its own", (FK_ADD, FK_VALIDATE), t(LARGE), ((), ())),
    Case(
        "fk validated in the adding transaction",
        (FK_ADD, FK_VALIDATE),
        t(LARGE),
        ((), ("LK109",)),
        online=False,
        says="statement 1",
    ),
    Case(
        "drop index on a large table, rewritten",
        ('drop index if exists "public"."t_i"',),
        {"public.t_i": table(LARGE, kind="i")},
        ((),),
    ),
    Case(
        "drop index on a large table, rewrites off",
        ('drop index if exists "public"."t_i"',),
        {"public.t_i": table(LARGE, kind="i")},
        (("LK107",),),
        online=False,
    ),
    Case(
        "unique constraint built by alter table",
        ('alter table "public"."t" add constraint "t_v_key" UNIQUE (v)',),
        t(LARGE),
        (("LK108",),),
    ),
    Case(
        "unique constraint using an index",
        ('alter table "public"."t" add constraint "t_v_key" UNIQUE using index "t_v_key"',),
        t(LARGE),
        (("LK107",),),
    ),
    Case("policy on a large table", ('create policy "p" on "public"."t" using (true)',), t(LARGE), (("LK107",),)),
    Case("validate alone takes no strong lock", (FK_VALIDATE,), t(LARGE), ((),), online=False),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_locks(case: Case) -> None:
    assert codes(case.sqls, case.stats, "LK", online=case.online) == list(case.expected)
    if case.says:
        found = run(case.sqls, case.stats, online=case.online)
        assert case.says in "\n".join(h.message for e in found for h in e.hazards if h.code.startswith("LK"))


def test_threshold_is_configurable() -> None:
    small = {"public.t": SMALL}
    assert [
        h.code for e in run((INDEX,), small, large=LargeTable(bytes=1024, rows=10**9), online=False) for h in e.hazards
    ] == ["LK101"]
    assert [
        h.code for e in run((INDEX,), small, large=LargeTable(bytes=10**12, rows=100), online=False) for h in e.hazards
    ] == ["LK101"]
    assert messages((INDEX,), small) == ""
