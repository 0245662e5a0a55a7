"""The hazard engine itself: registry rules, parsing, figures per statement, online-safe steps. No database."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from hazard_helpers import EMPTY, LARGE, SMALL, TIMEOUTS, keyed, run, table

from reconciler.hazards import LargeTable, StepTimeouts, affected_relations, examine, known_codes, parse_plan
from reconciler.hazards.registry import DuplicateCheckError, check
from reconciler.model import ExecStep, HazardKind, QualifiedName, Severity, TableStats

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
    [found] = examine(["alter tabel x"], timeouts=TIMEOUTS)
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
    assert [str(n) for n in affected_relations(parse_plan(sqls))] == [
        "public.o", "public.u", "app.t", "public.o_i", "public.v", "s.x"
    ]  # fmt: skip


def test_figures_travel_with_the_statement() -> None:
    stats = {"public.t": SMALL, "public.u": EMPTY}
    [found] = run(['alter table "public"."t" add constraint "f" FOREIGN KEY (u) REFERENCES u(id) not valid'], stats)
    assert found.tables == stats


@dataclass(frozen=True)
class Rewrite:
    name: str
    sql: str
    stats: Mapping[str, TableStats]
    steps: tuple[ExecStep, ...]


def plain(sql: str) -> ExecStep:
    """A step in the plan's transaction, with the statement and lock timeouts."""
    return ExecStep(sql, True, TIMEOUTS.statement, TIMEOUTS.lock)


def alone(sql: str) -> ExecStep:
    """A step in a transaction of its own, with the statement and lock timeouts."""
    return ExecStep(sql, False, TIMEOUTS.statement, TIMEOUTS.lock)


def concurrently(sql: str, index: str | None = None) -> ExecStep:
    """A concurrent index build (of ``index``), drop or reindex: alone, with the concurrent statement timeout."""
    return ExecStep(sql, False, TIMEOUTS.concurrent_statement, TIMEOUTS.lock, index)


INDEX_T_V = "CREATE INDEX t_v ON public.t USING btree (v)"
LARGE_T = {"public.t": LARGE}
CASES = [
    Rewrite("small table: as written", INDEX_T_V, {"public.t": SMALL}, (plain(INDEX_T_V),)),
    Rewrite(
        "index built concurrently",
        INDEX_T_V,
        LARGE_T,
        (concurrently("CREATE INDEX CONCURRENTLY t_v ON public.t (v)", '"public"."t_v"'),),
    ),
    Rewrite(
        "unique index built concurrently",
        "CREATE UNIQUE INDEX t_v_key ON public.t USING btree (v) WHERE (v > 0)",
        LARGE_T,
        (concurrently("CREATE UNIQUE INDEX CONCURRENTLY t_v_key ON public.t (v) WHERE v > 0", '"public"."t_v_key"'),),
    ),
    Rewrite(
        "invalid leftover dropped first (large table)",
        INDEX_T_V,
        {"public.t": table(LARGE, invalid_indexes=("t_v",))},
        (
            concurrently('DROP INDEX CONCURRENTLY IF EXISTS "public"."t_v"'),
            concurrently("CREATE INDEX CONCURRENTLY t_v ON public.t (v)", '"public"."t_v"'),
        ),
    ),
    Rewrite(
        "invalid leftover dropped first (small table)",
        INDEX_T_V,
        {"public.t": table(SMALL, invalid_indexes=("t_v",))},
        (concurrently('DROP INDEX CONCURRENTLY IF EXISTS "public"."t_v"'), plain(INDEX_T_V)),
    ),
    Rewrite("partitioned table: as written", INDEX_T_V, {"public.t": table(LARGE, kind="p")}, (plain(INDEX_T_V),)),
    Rewrite(
        "index dropped concurrently",
        'drop index if exists "public"."t_i"',
        {"public.t_i": table(LARGE, kind="i")},
        (concurrently("DROP INDEX CONCURRENTLY IF EXISTS public.t_i"),),
    ),
    Rewrite(
        "validate in a transaction of its own",
        'alter table "public"."t" validate constraint "f"',
        LARGE_T,
        (alone('alter table "public"."t" validate constraint "f"'),),
    ),
    Rewrite(
        "check added NOT VALID, then validated",
        'alter table "public"."t" add constraint "c" CHECK ((v > 0))',
        LARGE_T,
        (
            plain("ALTER TABLE public.t ADD CONSTRAINT c CHECK (v > 0) NOT VALID"),
            alone('ALTER TABLE "public"."t" VALIDATE CONSTRAINT "c"'),
        ),
    ),
    Rewrite(
        "foreign key added NOT VALID, then validated",
        'alter table "public"."t" add constraint "f" FOREIGN KEY (u) REFERENCES u(id) ON DELETE CASCADE',
        LARGE_T,
        (
            plain(
                "ALTER TABLE public.t ADD CONSTRAINT f FOREIGN KEY (u) REFERENCES u (id) ON DELETE CASCADE NOT VALID"
            ),
            alone('ALTER TABLE "public"."t" VALIDATE CONSTRAINT "f"'),
        ),
    ),
    Rewrite(
        "set not null proven by a validated check",
        'alter table "public"."t" alter column "v" set not null',
        LARGE_T,
        (
            plain('ALTER TABLE "public"."t" DROP CONSTRAINT IF EXISTS "reconciler_nn_proof_v"'),
            plain('ALTER TABLE "public"."t" ADD CONSTRAINT "reconciler_nn_proof_v" CHECK ("v" IS NOT NULL) NOT VALID'),
            alone('ALTER TABLE "public"."t" VALIDATE CONSTRAINT "reconciler_nn_proof_v"'),
            plain('ALTER TABLE "public"."t" ALTER COLUMN "v" SET NOT NULL'),
            plain('ALTER TABLE "public"."t" DROP CONSTRAINT "reconciler_nn_proof_v"'),
        ),
    ),
    Rewrite(
        "two subcommands: as written",
        'alter table "public"."t" alter column "v" set not null, alter column "w" set not null',
        LARGE_T,
        (plain('alter table "public"."t" alter column "v" set not null, alter column "w" set not null'),),
    ),
    # Statements that are concurrent as written run alone too, with the concurrent statement timeout.
    Rewrite(
        "concurrent build as written",
        'create index concurrently "i" on "public"."t" using btree ("a")',
        LARGE_T,
        (concurrently('create index concurrently "i" on "public"."t" using btree ("a")', '"public"."i"'),),
    ),
    Rewrite(
        "concurrent build of an unqualified table as written",
        "create index concurrently i on t (a)",
        {},
        (concurrently("create index concurrently i on t (a)", '"i"'),),
    ),
    Rewrite(
        "concurrent drop as written",
        'drop index concurrently if exists "public"."i"',
        {},
        (concurrently('drop index concurrently if exists "public"."i"'),),
    ),
    Rewrite(
        "concurrent reindex as written",
        'reindex (concurrently) index "public"."i"',
        {},
        (concurrently('reindex (concurrently) index "public"."i"'),),
    ),
    Rewrite("plain reindex as written", 'reindex index "public"."i"', {}, (plain('reindex index "public"."i"'),)),
    Rewrite(
        "unparseable: as written",
        "create index concurrently broken syntax here (",
        {},
        (plain("create index concurrently broken syntax here ("),),
    ),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_steps_of_a_statement(case: Rewrite) -> None:
    [found] = examine([case.sql], keyed(case.stats), timeouts=TIMEOUTS, large=LargeTable())
    assert found.steps == case.steps


def test_rewrites_can_be_switched_off() -> None:
    [found] = examine([INDEX_T_V], keyed(LARGE_T), timeouts=TIMEOUTS, online_rewrites=False)
    assert found.steps == (plain(INDEX_T_V),)


def test_concurrent_steps_get_the_longer_statement_timeout() -> None:
    # A concurrent_statement_timeout shorter than statement_timeout never shortens a concurrent build's.
    short = StepTimeouts(statement=timedelta(minutes=20), concurrent_statement=timedelta(minutes=1), lock=timedelta(1))
    [build, alter] = examine([INDEX_T_V, 'alter table "public"."t" add column "c" int'], keyed(LARGE_T), timeouts=short)
    assert [(s.statement_timeout, s.lock_timeout) for s in (*build.steps, *alter.steps)] == [
        (timedelta(minutes=20), timedelta(1)),
        (timedelta(minutes=20), timedelta(1)),
    ]


def test_steps_round_trip_as_json() -> None:
    step = concurrently("CREATE INDEX CONCURRENTLY t_v ON public.t (v)", '"public"."t_v"')
    assert step.to_json() == {
        "sql": "CREATE INDEX CONCURRENTLY t_v ON public.t (v)",
        "transactional": False,
        "statement_timeout_seconds": 7200.0,
        "lock_timeout_seconds": 5.0,
        "concurrent_index": '"public"."t_v"',
    }
    assert ExecStep.from_json(step.to_json()) == step
    assert ExecStep.from_json({"sql": "select 1", "transactional": True}) == ExecStep("select 1")
    assert ExecStep("select 1").to_json()["statement_timeout_seconds"] is None


def test_rewritten_sql_parses_back() -> None:
    # What executes is PostgreSQL syntax too (deparsed from the parse tree, never pasted together).
    for case in CASES:
        steps = examine([case.sql], keyed(case.stats), timeouts=TIMEOUTS)[0].steps
        for step in (s for s in steps if s.sql != case.sql):  # what the engine wrote, not the statement itself
            assert parse_plan([step.sql])[0].node is not None, step.sql
            assert not re.search(r"\bNone\b", step.sql)


def test_relations_are_keyed_by_schema_and_name_not_by_a_dotted_string() -> None:
    sqls = ['alter table "a.b"."c" add column x int', 'alter table "a"."b.c" add column x int', 'drop table "X"."y"']
    names = affected_relations(parse_plan(sqls))
    assert names == [QualifiedName("a.b", "c"), QualifiedName("a", "b.c"), QualifiedName("X", "y")]
    assert [str(n) for n in names] == ['"a.b".c', 'a."b.c"', '"X".y']
