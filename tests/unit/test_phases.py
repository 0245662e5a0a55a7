"""Non-transactional statements run in a phase after the transactional ones, unless a later statement needs them."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hazard_helpers import SMALL

from reconciler.cli_render import render_plan
from reconciler.config import EnvironmentConfig
from reconciler.hazards.phases import order_phases
from reconciler.model import Plan, QualifiedName, statement_phases
from reconciler.planning import classify

INDEX = 'create index "t_v" on "public"."t" using btree ("v")'  # built CONCURRENTLY: the table has rows
UNIQUE = 'create unique index "t_v_key" on "public"."t" using btree ("v")'
POLICY = 'create policy "p" on "public"."t" as permissive for all to public using (true)'
TRIGGER = 'create trigger "tr" before insert on "public"."t" for each row execute function public.f()'
GRANT = 'grant select on table "public"."t" to public'


@dataclass(frozen=True)
class Case:
    name: str
    sqls: tuple[str, ...]
    order: tuple[int, ...]  # positions in ``sqls``, in the order they run
    phases: tuple[str, ...]


CASES = [
    Case("moved after policy, trigger and grant", (POLICY, INDEX, TRIGGER, GRANT), (0, 2, 3, 1),
         ("transactional", "transactional", "transactional", "after")),
    Case("kept before a constraint USING INDEX", (UNIQUE, 'alter table "public"."t" add constraint "t_v_key" unique '
         'using index "t_v_key"', GRANT), (0, 1, 2), ("in place", "transactional", "transactional")),
    Case("kept before a foreign key that references its table", (UNIQUE, 'alter table "public"."u" add constraint "f" '
         'foreign key (v) references "public"."t" (v)'), (0, 1), ("in place", "transactional")),
    Case("kept before a column change of its table", (INDEX, 'alter table "public"."t" alter column "v" type bigint'),
         (0, 1), ("in place", "transactional")),
    Case("two builds keep their order", (INDEX, UNIQUE, GRANT), (2, 0, 1), ("transactional", "after", "after")),
    Case("a drop stays before the re-create of its name", ('drop index concurrently if exists "public"."t_v"', GRANT, INDEX),
         (1, 0, 2), ("transactional", "after", "after")),
]  # fmt: skip


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_non_transactional_statements_get_their_own_phase(case: Case) -> None:
    env = EnvironmentConfig(dsn="-", production=True)
    stats = {QualifiedName("public", "t"): SMALL, QualifiedName("public", "t_v"): SMALL}
    ordered = order_phases(classify(list(case.sqls), env, stats))
    assert [s.sql for s in ordered] == [case.sqls[i] for i in case.order]
    assert tuple(statement_phases(ordered)) == case.phases


def test_approvers_see_the_phases_in_plan_json_and_text() -> None:
    env = EnvironmentConfig(dsn="-", production=True)
    ordered = order_phases(classify([POLICY, INDEX, GRANT], env, {QualifiedName("public", "t"): SMALL}))
    plan = Plan("dev", "r" * 40, tuple(ordered))
    assert [(s["phase"], s["units"]) for s in plan.to_json()["statements"]] == [
        ("transactional", [1]),
        ("transactional", [1]),
        ("after", [2]),
    ]
    assert "non-transactional phase, after every transactional unit: statement(s) 3" in render_plan(plan)
