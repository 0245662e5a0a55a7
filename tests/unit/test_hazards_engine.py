"""The hazard engine itself: registry rules, parsing, figures per statement, online-safe steps. No database."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest
from hazard_helpers import EMPTY, LARGE, SMALL, table

from reconciler.hazards import LargeTable, affected_relations, examine, known_codes, parse_plan
from reconciler.hazards.registry import DuplicateCheckError, check
from reconciler.model import ExecStep, HazardKind, Severity, TableStats

README = Path(__file__).resolve().parents[2] / "README.md"


def test_duplicate_code_is_an_error() -> None:
    with pytest.raises(DuplicateCheckError, match="DS101"):
        check("DS101", HazardKind.DESTRUCTIVE, Severity.DANGER, "again", nodes=["DropStmt"])(lambda n, s, c: ())


@pytest.mark.parametrize("code", ["DS1", "ds101", "DS1011", "D5101"])
def test_code_format(code: str) -> None:
    with pytest.raises(ValueError, match="two capital letters and three digits"):
        check(code, HazardKind.DESTRUCTIVE, Severity.DANGER, "bad", nodes=[])


@pytest.mark.parametrize("code", sorted(known_codes()))
def test_every_code_is_documented(code: str) -> None:
    chk = known_codes()[code]
    rows = [line for line in README.read_text().splitlines() if line.startswith(f"| {code} |")]
    assert len(rows) == 1, f"{code} needs exactly one row in the README's hazard table"
    assert f"| {chk.kind.value} |" in rows[0] and f"| {chk.severity.value} |" in rows[0]


def test_unparseable_statement() -> None:
    [found] = examine(["alter tabel x"])
    assert [h.code for h in found.hazards] == ["UP001"]
    assert parse_plan(["select 1; select 2"])[0].parse_error == "expected one statement, found 2"


def test_affected_relations() -> None:
    sqls = [
        'alter table "public"."o" add constraint "f" FOREIGN KEY (u) REFERENCES u(id) not valid',
        'drop trigger if exists "tr" on "app"."t"',
        'drop index if exists "public"."o_i"',
        'drop function if exists "public"."f"(a integer)',
        'create or replace view "public"."v" as select * from "public"."o" join s.x using (id)',
    ]
    assert affected_relations(parse_plan(sqls)) == ["public.o", "public.u", "app.t", "public.o_i", "public.v", "s.x"]


def test_figures_travel_with_the_statement() -> None:
    stats = {"public.t": SMALL, "public.u": EMPTY}
    [found] = examine(['alter table "public"."t" add constraint "f" FOREIGN KEY (u) REFERENCES u(id) not valid'], stats)
    assert found.tables == stats


@dataclass(frozen=True)
class Rewrite:
    name: str
    sql: str
    stats: Mapping[str, TableStats]
    steps: tuple[ExecStep, ...]  # empty: runs as written


LARGE_T = {"public.t": LARGE}
CASES = [
    Rewrite("small table: as written", "CREATE INDEX t_v ON public.t USING btree (v)", {"public.t": SMALL}, ()),
    Rewrite(
        "index built concurrently",
        "CREATE INDEX t_v ON public.t USING btree (v)",
        LARGE_T,
        (ExecStep("CREATE INDEX CONCURRENTLY t_v ON public.t (v)", transactional=False),),
    ),
    Rewrite(
        "unique index built concurrently",
        "CREATE UNIQUE INDEX t_v_key ON public.t USING btree (v) WHERE (v > 0)",
        LARGE_T,
        (ExecStep("CREATE UNIQUE INDEX CONCURRENTLY t_v_key ON public.t (v) WHERE v > 0", transactional=False),),
    ),
    Rewrite(
        "invalid leftover dropped first (large table)",
        "CREATE INDEX t_v ON public.t USING btree (v)",
        {"public.t": table(LARGE, invalid_indexes=("t_v",))},
        (
            ExecStep('DROP INDEX CONCURRENTLY IF EXISTS "public"."t_v"', transactional=False),
            ExecStep("CREATE INDEX CONCURRENTLY t_v ON public.t (v)", transactional=False),
        ),
    ),
    Rewrite(
        "invalid leftover dropped first (small table)",
        "CREATE INDEX t_v ON public.t USING btree (v)",
        {"public.t": table(SMALL, invalid_indexes=("t_v",))},
        (
            ExecStep('DROP INDEX CONCURRENTLY IF EXISTS "public"."t_v"', transactional=False),
            ExecStep("CREATE INDEX t_v ON public.t USING btree (v)"),
        ),
    ),
    Rewrite(
        "partitioned table: as written",
        "CREATE INDEX t_v ON public.t USING btree (v)",
        {"public.t": table(LARGE, kind="p")},
        (),
    ),
    Rewrite(
        "index dropped concurrently",
        'drop index if exists "public"."t_i"',
        {"public.t_i": table(LARGE, kind="i")},
        (ExecStep("DROP INDEX CONCURRENTLY IF EXISTS public.t_i", transactional=False),),
    ),
    Rewrite(
        "validate in a transaction of its own",
        'alter table "public"."t" validate constraint "f"',
        LARGE_T,
        (ExecStep('alter table "public"."t" validate constraint "f"', transactional=False),),
    ),
    Rewrite(
        "check added NOT VALID, then validated",
        'alter table "public"."t" add constraint "c" CHECK ((v > 0))',
        LARGE_T,
        (
            ExecStep("ALTER TABLE public.t ADD CONSTRAINT c CHECK (v > 0) NOT VALID"),
            ExecStep('ALTER TABLE "public"."t" VALIDATE CONSTRAINT "c"', transactional=False),
        ),
    ),
    Rewrite(
        "foreign key added NOT VALID, then validated",
        'alter table "public"."t" add constraint "f" FOREIGN KEY (u) REFERENCES u(id) ON DELETE CASCADE',
        LARGE_T,
        (
            ExecStep(
                "ALTER TABLE public.t ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id) ON DELETE CASCADE NOT VALID"
            ),
            ExecStep('ALTER TABLE "public"."t" VALIDATE CONSTRAINT "f"', transactional=False),
        ),
    ),
    Rewrite(
        "set not null proven by a validated check",
        'alter table "public"."t" alter column "v" set not null',
        LARGE_T,
        (
            ExecStep('ALTER TABLE "public"."t" DROP CONSTRAINT IF EXISTS "reconciler_nn_proof_v"'),
            ExecStep(
                'ALTER TABLE "public"."t" ADD CONSTRAINT "reconciler_nn_proof_v" CHECK ("v" IS NOT NULL) NOT VALID'
            ),
            ExecStep('ALTER TABLE "public"."t" VALIDATE CONSTRAINT "reconciler_nn_proof_v"', transactional=False),
            ExecStep('ALTER TABLE "public"."t" ALTER COLUMN "v" SET NOT NULL'),
            ExecStep('ALTER TABLE "public"."t" DROP CONSTRAINT "reconciler_nn_proof_v"'),
        ),
    ),
    Rewrite(
        "two subcommands: as written",
        'alter table "public"."t" alter column "v" set not null, alter column "w" set not null',
        LARGE_T,
        (),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_online_rewrite(case: Rewrite) -> None:
    [found] = examine([case.sql], case.stats, large=LargeTable())
    assert found.steps == case.steps


def test_rewrites_can_be_switched_off() -> None:
    [found] = examine(["CREATE INDEX t_v ON public.t USING btree (v)"], LARGE_T, online_rewrites=False)
    assert found.steps == ()


def test_rewritten_sql_parses_back() -> None:
    # What executes is PostgreSQL syntax too (deparsed from the parse tree, never pasted together).
    for case in CASES:
        for step in examine([case.sql], case.stats)[0].steps:
            assert parse_plan([step.sql])[0].node is not None, step.sql
            assert not re.search(r"\bNone\b", step.sql)
