"""The code-execution (CX), protection-removed (PR) and new authorization and durability checks; type-change
suppression only for migra's exact enum swap. Table-driven, no database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import pytest
from hazard_helpers import EMPTY, LARGE, SMALL, TIMEOUTS, codes, keyed, run, table

from reconciler.hazards import LargeTable, examine
from reconciler.model import QualifiedName, TableStats

T = "public.t"
WITH_COLUMNS = table(SMALL, columns={"c": "character(5)", "e": "public.mood", "d": "text", "n": "integer"})
SWAP = [
    'alter type "public"."mood" rename to "mood__old_version_to_be_dropped"',
    "create type \"public\".\"mood\" as enum ('a', 'b')",
]


@dataclass(frozen=True)
class Case:
    name: str
    sqls: tuple[str, ...]
    expected: tuple[tuple[str, ...], ...]
    stats: Mapping[str, TableStats] = field(default_factory=lambda: {T: SMALL})
    prefix: str = ""


CASES = [
    Case("function created", ("create function public.f() returns int language sql as 'select 1'",), (("CX101",),)),
    Case("function altered", ("alter function public.f() set search_path = public",), (("CX101",),)),
    Case(
        "trigger created",
        ("create trigger tr before insert on t for each row execute function public.f()",),
        (("CX102",),),
    ),
    Case("trigger enabled", ("alter table t enable trigger tr",), (("CX102",),)),
    Case("matview with data", ("create materialized view m as select public.f()",), (("CX103",),)),
    Case("matview with no data", ("create materialized view m as select public.f() with no data",), ((),)),
    Case("refresh", ("refresh materialized view m",), (("CX103",),)),
    Case(
        "default calls a user function",
        ("alter table t add column c int default public.f()",),
        (("CX104",),),
        prefix="CX",
    ),
    Case("default calls a built-in", ("alter table t add column c timestamptz default now()",), ((),)),
    Case("default calls pg_catalog", ("alter table t add column c text default pg_catalog.lower('A')",), ((),)),
    Case("unqualified user function", ("alter table t add column c int default f()",), (("CX104",),), prefix="CX"),
    Case(
        "user function on an empty table",
        ("alter table t add column c int default public.f()",),
        ((),),
        {T: EMPTY},
        "CX",
    ),
    Case(
        "check calls a user function",
        ("alter table t add constraint k check (public.ok(n))",),
        (("CX104",),),
        prefix="CX",
    ),
    Case("expression index", ("create index i on t ((public.f(n)))",), (("CX104",),), prefix="CX"),
    Case("user operator", ("create index i on t (n) where n operator(evil.===) 1",), (("CX104",),), prefix="CX"),
    Case("constraint dropped", ("alter table t drop constraint k",), (("PR101",),)),
    Case(
        "unique index dropped", ("drop index public.i",), (("PR102",),), {"public.i": table(SMALL, unique_index=True)}
    ),
    Case("plain index dropped", ("drop index public.i",), ((),), {"public.i": table(SMALL, unique_index=False)}),
    Case("index of unknown uniqueness", ("drop index public.i",), (("PR102",),), {}),
    Case("trigger dropped", ("drop trigger tr on t",), (("PR103",),)),
    Case("function dropped", ("drop function public.f()",), (("PR104",),)),
    Case("procedure dropped", ("drop procedure public.p()",), (("PR104",),)),
    Case("view dropped", ("drop view public.v",), (("PR105",),)),
    Case("drop not null", ("alter table t alter column c drop not null",), (("PR106",),)),
    Case("drop identity", ("alter table t alter column c drop identity",), (("PR107",),)),
    Case("detach partition", ("alter table t detach partition p",), (("PR108",),)),
    Case("no inherit", ("alter table t no inherit p",), (("PR109",),)),
    Case("trigger disabled", ("alter table t disable trigger all",), (("PR110",),)),
    Case("rule dropped", ("drop rule r on t",), (("PR110",),)),
    Case("set unlogged", ("alter table t set unlogged",), (("DS114",),)),
    Case("set logged on a large table", ("alter table t set logged",), (("LK110",),), {T: LARGE}, "LK110"),
    Case("permissive true", ("create policy p on t using (true)",), (("AZ105", "AZ114"),), prefix="AZ"),
    Case("restrictive true", ("create policy p on t as restrictive using (true)",), (("AZ105",),), prefix="AZ"),
    Case("with check true", ("create policy p on t for insert with check (true)",), (("AZ105", "AZ114"),), prefix="AZ"),
    Case(
        "function used by a policy of the plan",
        (
            "create function auth.is_admin() returns bool language sql as 'select true'",
            "create policy p on t using (auth.is_admin())",
        ),
        (("AZ113",), ("AZ105",)),
        prefix="AZ",
    ),
    Case(
        "function used by a trigger of the plan",
        (
            "create function public.f() returns trigger language plpgsql as $$ begin return new; end $$",
            "create trigger tr before insert on t for each row execute function public.f()",
        ),
        (("AZ113",), ()),
        prefix="AZ",
    ),
    Case("extension created", ("create extension hstore",), (("AZ115",),), prefix="AZ"),
    Case(
        "unbounded bpchar is wider than char(5)",
        ("alter table public.t alter column c type bpchar",),
        ((),),
        {T: WITH_COLUMNS},
    ),
    Case(
        "char(3) narrows char(5)",
        ("alter table public.t alter column c type character(3)",),
        (("DS111",),),
        {T: WITH_COLUMNS},
    ),
    Case(
        "widening with USING is lossy",
        ("alter table public.t alter column n type bigint using (n * 2)",),
        (("DS107",),),
        {T: WITH_COLUMNS},
    ),
    Case(
        "recast to a new domain",
        (
            "create domain public.short as varchar(2)",
            "alter table public.t alter column d type public.short using d::public.short",
        ),
        ((), ("DS107",)),
        {T: WITH_COLUMNS},
        "DS",
    ),
    Case(
        "migra's exact enum swap",
        (*SWAP, 'alter table "public"."t" alter column "e" type "public"."mood" using "e"::text::"public"."mood"'),
        ((), (), ()),
        {T: WITH_COLUMNS},
        "DS",
    ),
    Case(
        "an enum swap with another USING",
        (
            *SWAP,
            'alter table "public"."t" alter column "e" type "public"."mood" using upper("e"::text)::"public"."mood"',
        ),
        ((), (), ("DS107",)),
        {T: WITH_COLUMNS},
        "DS",
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_families(case: Case) -> None:
    assert codes(case.sqls, case.stats, case.prefix) == list(case.expected)


def test_environment_users_of_a_changed_function_are_named() -> None:
    [found] = examine(
        ["create function auth.is_admin() returns bool language sql as 'select true'"],
        {},
        timeouts=TIMEOUTS,
        function_users={QualifiedName("auth", "is_admin"): ("policy admins on public.users",)},
    )
    [az] = [h for h in found.hazards if h.code == "AZ113"]
    assert "policy admins on public.users" in az.message


def test_catalog_builtins_decide_unqualified_calls() -> None:
    sql = ["alter table public.t add column c int default my_builtin()"]
    [found] = examine(sql, keyed({T: SMALL}), timeouts=TIMEOUTS, builtin_functions=frozenset({"my_builtin"}))
    assert [h.code for h in found.hazards if h.code.startswith("CX")] == []


@pytest.mark.parametrize(("production", "online"), [(True, True), (False, False)])
def test_production_builds_indexes_on_tables_with_rows_concurrently(production: bool, online: bool) -> None:
    [found] = examine(
        ['create index "i" on "public"."t" using btree ("n")'],
        keyed({T: SMALL}),
        timeouts=TIMEOUTS,
        large=LargeTable(),
        production=production,
    )
    assert ("CONCURRENTLY" in found.steps[-1].sql.upper()) is online
    assert all(not s.transactional for s in found.steps) is online


def test_no_online_form_between_a_drop_and_its_re_create() -> None:
    sqls = [
        'drop policy "p" on "public"."t"',
        'create index "i" on "public"."t" using btree ("n")',
        'create policy "p" on "public"."t" as restrictive using ((n > 0))',
    ]
    found = run(sqls, {T: LARGE})
    assert all(step.transactional for e in found for step in e.steps)
