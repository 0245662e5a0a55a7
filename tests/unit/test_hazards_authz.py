"""AZ1xx, table-driven, no database: who may see or change what."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hazard_helpers import codes, messages


@dataclass(frozen=True)
class Case:
    name: str
    sqls: tuple[str, ...]
    expected: tuple[tuple[str, ...], ...]  # AZ codes per statement
    says: str = ""


POLICY = 'create policy "own" on "public"."t" as permissive for all to public using ((owner = CURRENT_USER))'
DROP_POLICY = 'drop policy "own" on "public"."t"'

CASES = [
    Case("rls enabled", ('alter table "public"."t" enable row level security',), (("AZ101",),)),
    Case("rls disabled", ('alter table "public"."t" disable row level security',), (("AZ102",),), "every row"),
    Case("rls forced", ('alter table "public"."t" force row level security',), (("AZ103",),)),
    Case("rls no longer forced", ('alter table "public"."t" no force row level security',), (("AZ104",),)),
    Case("policy created", (POLICY,), (("AZ105",),), "own on public.t"),
    Case("policy changed (drop and create)", (DROP_POLICY, POLICY), (("AZ106",), ("AZ106",)), "statement 2"),
    Case("policy altered", ('alter policy "own" on "public"."t" using ((owner = CURRENT_USER))',), (("AZ106",),)),
    Case("policy altered to allow all", ('alter policy "own" on "public"."t" using (true)',), (("AZ106", "AZ114"),)),
    Case("policy dropped", (DROP_POLICY,), (("AZ107",),)),
    Case("select granted to public", ('grant select on table "public"."t" to "PUBLIC"',), (("AZ108",),)),
    Case("grant to public role", ("grant select on t to public",), (("AZ108",),), "PUBLIC: every role"),
    Case("privileges revoked", ('revoke insert on table "public"."t" from "app"',), (("AZ109",),), "insert"),
    Case("role membership granted", ("grant admin to alice",), (("AZ108",),)),
    Case("owner changed", ('alter table "public"."t" owner to "app"',), (("AZ110",),)),
    Case("function owner changed", ('alter function "public"."f"() owner to "app"',), (("AZ110",),)),
    Case(
        "security definer function",
        ("CREATE OR REPLACE FUNCTION public.g() RETURNS integer LANGUAGE sql SECURITY DEFINER AS $f$select 1$f$",),
        (("AZ111",),),
    ),
    Case(
        "security invoker function",
        ("CREATE FUNCTION public.g() RETURNS integer LANGUAGE sql AS $f$select 1$f$",),
        ((),),
    ),
    Case(
        "default privileges",
        ("alter default privileges in schema public grant select on tables to app",),
        (("AZ112",),),
    ),
    Case("plain table change", ('alter table "public"."t" add column "x" integer',), ((),)),
    Case("view security_invoker reset", ('ALTER VIEW "public"."v" RESET (security_invoker)',), (("AZ116",),), "v"),
    Case("view security_invoker off", ("alter view v set (security_invoker = false)",), (("AZ116",),)),
    Case("view security_invoker off (off)", ("alter view v set (security_invoker = off)",), (("AZ116",),)),
    Case("view security_invoker off ('0')", ("alter view v set (security_invoker = '0')",), (("AZ116",),)),
    Case("view security_invoker off (0)", ("alter view v set (security_invoker = 0)",), (("AZ116",),)),
    Case("view security_invoker on (1)", ("alter view v set (security_invoker = 1)",), ((),)),
    Case("view security_barrier reset", ("alter view v reset (check_option, security_barrier)",), (("AZ116",),)),
    Case("view security_barrier off", ("alter table v set (security_barrier = false)",), (("AZ116",),)),
    Case("view security_invoker on", ("alter view v set (security_invoker = true)",), ((),)),
    Case("view security_barrier on (bare)", ("alter view v set (security_barrier)",), ((),)),
    Case("table fillfactor set", ("alter table t set (fillfactor = 50)",), ((),)),
    Case("table fillfactor reset", ("alter table t reset (fillfactor)",), ((),)),
    Case("toast option reset", ("alter table t reset (toast.autovacuum_enabled)",), ((),)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_authorization(case: Case) -> None:
    assert codes(case.sqls, prefix="AZ") == list(case.expected)
    if case.says:
        assert case.says in messages(case.sqls, prefix="AZ")
