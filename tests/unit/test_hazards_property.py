"""Property: no generated statement is decided ``auto`` unless every shape of it is checked or on the allow-list,
and none carrying a never-unattended hazard is ever ``auto``. No database.

Statements come from two generators: SQL text (ALTER TABLE with one to three of many subcommands, and statements of
many node types, with hostile identifiers and user or built-in functions), and parse trees of every pglast node
type and every ALTER TABLE subcommand built directly.
"""

from __future__ import annotations

from typing import Any

from hazard_helpers import EMPTY, LARGE, SMALL, UNANALYZED, run
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pglast import ast, enums, parser

from reconciler.config import EnvironmentConfig
from reconciler.hazards.context import ParsedStatement, PlanContext
from reconciler.hazards.engine import hazards_of
from reconciler.hazards.registry import never_unattended
from reconciler.hazards.shapes import CHECKED, HARMLESS, shapes
from reconciler.model import Decision, Hazard
from reconciler.policy import decide

AT = enums.AlterTableType
OT = enums.ObjectType

IDENTS = st.sampled_from(['"t"', '"a.b"."t"', '"we""ird"', "t", '"public"."t"'])
FUNCS = st.sampled_from(["now()", "public.f()", "f()", "pg_catalog.lower('x')", "evil.g(1)", "random()"])
SUBCOMMANDS = [
    "add column c int",
    "add column c int default {f}",
    "add column c int generated always as ({f}) stored",
    "add column c int not null",
    "drop column c",
    "alter column c type bigint",
    "alter column c type text using {f}",
    "alter column c set default {f}",
    "alter column c drop default",
    "alter column c set not null",
    "alter column c drop not null",
    "alter column c drop identity",
    "alter column c add generated always as identity",
    "alter column c set statistics 100",
    "alter column c set storage external",
    "add constraint k check (c > 0)",
    "add constraint k check ({f} is not null) not valid",
    "add constraint k unique (c)",
    "add constraint k foreign key (c) references u (id)",
    "drop constraint k",
    "validate constraint k",
    "set unlogged",
    "set logged",
    "enable row level security",
    "disable row level security",
    "force row level security",
    "no force row level security",
    "owner to someone",
    "disable trigger all",
    "enable trigger tr",
    "disable rule r",
    "no inherit p",
    "not of",
    "detach partition p",
    "attach partition p for values in (1)",
    "set tablespace ts",
    "set (fillfactor = 50)",
    "replica identity full",
    "set access method heap",
    "cluster on i",
    "set without cluster",
    "inherit p",
]
STATEMENTS = [
    "create table {t} (a int default {f})",
    "create index i on {t} (({f}))",
    "create unique index i on {t} (a)",
    "create index i on {t} (a) where {f} > 0",
    "drop index i",
    "drop table {t}",
    "drop view v",
    "drop function public.f()",
    "drop trigger tr on {t}",
    "drop rule r on {t}",
    "drop policy p on {t}",
    "drop cast (int as text)",
    "drop operator public.=== (int, int)",
    "create or replace function public.f() returns int language sql as $$ select 1 $$",
    "create trigger tr before insert on {t} for each row execute function public.f()",
    "create materialized view m as select {f}",
    "create materialized view m as select 1 with no data",
    "refresh materialized view m",
    "create table x as select {f}",
    "create policy p on {t} using (true)",
    "create policy p on {t} as restrictive using ({f})",
    "create extension hstore",
    "grant select on {t} to public",
    "revoke select on {t} from public",
    "select {f}",
    "insert into {t} values ({f})",
    "update {t} set a = 1",
    "delete from {t}",
    "truncate {t}",
    "do $$ begin null; end $$",
    "call public.p()",
    "set search_path = evil",
    "alter sequence s restart",
    "alter function public.f() security definer",
    "alter type mood rename value 'a' to 'b'",
    "create schema s",
    "comment on table {t} is 'x'",
    "create view v as select {f}",
    "copy {t} to program 'id'",
    "lock table {t}",
    "vacuum {t}",
    "cluster {t}",
    "reindex table {t}",
    "alter table {t} rename to u",
    "alter table {t} set schema s",
]


def _fill(template: str, t: str, f: str) -> str:
    return template.format(t=t, f=f)


@st.composite
def sql_statements(draw: Any) -> str:
    t, f = draw(IDENTS), draw(FUNCS)
    if draw(st.booleans()):
        cmds = draw(st.lists(st.sampled_from(SUBCOMMANDS), min_size=1, max_size=3))
        return f"alter table {t} " + ", ".join(_fill(c, t, f) for c in cmds)
    return _fill(draw(st.sampled_from(STATEMENTS)), t, f)


FIGURES = st.sampled_from([None, EMPTY, SMALL, LARGE, UNANALYZED])
ENVS = st.builds(lambda production: EnvironmentConfig(dsn="postgresql://x/y", production=production), st.booleans())


def _allowed(node: Any) -> bool:
    return all(s in CHECKED or s in HARMLESS for s in shapes(node))


def _assert_default_deny(node: Any, hazards: tuple[Hazard, ...], env: EnvironmentConfig) -> None:
    decision = decide(hazards, env)
    if decision is Decision.AUTO:
        assert _allowed(node), f"{shapes(node)} decided auto without being checked or allowed"
        assert not any(never_unattended(h.kind, h.code) for h in hazards)
    if not _allowed(node):
        assert decision is not Decision.AUTO


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(sql=sql_statements(), figures=FIGURES, env=ENVS)
def test_generated_sql_is_auto_only_when_allowed(sql: str, figures: Any, env: EnvironmentConfig) -> None:
    stats = {} if figures is None else {"public.t": figures, "a.b.t": figures}
    [found] = run([sql], stats)
    try:
        [raw] = parser.parse_sql(sql)
    except parser.ParseError:  # a combination PostgreSQL's grammar refuses: UP001, never auto
        assert [h.code for h in found.hazards] == ["UP001"] and decide(found.hazards, env) is not Decision.AUTO
        return
    _assert_default_deny(raw.stmt, found.hazards, env)


@st.composite
def parse_trees(draw: Any) -> Any:
    kind = draw(st.sampled_from(["node", "alter", "drop"]))
    if kind == "alter":  # subcommands nobody classified (the SQL generator mixes them with checked ones)
        unknown = [
            s for s in AT if f"AlterTableStmt.{s.name}" not in CHECKED and f"AlterTableStmt.{s.name}" not in HARMLESS
        ]
        cmds = tuple(
            ast.AlterTableCmd(subtype=s, name="c")
            for s in draw(st.lists(st.sampled_from(unknown), min_size=1, max_size=3))
        )
        return ast.AlterTableStmt(
            relation=ast.RangeVar(schemaname="public", relname="t"), cmds=cmds, objtype=OT.OBJECT_TABLE
        )
    if kind == "drop":
        return ast.DropStmt(removeType=draw(st.sampled_from(list(OT))), objects=())
    names = [n for n in dir(ast) if isinstance(getattr(ast, n), type) and issubclass(getattr(ast, n), ast.Node)]
    node = getattr(ast, draw(st.sampled_from(sorted(set(names) - {"Node", "Expr"}))))()
    return node


@settings(max_examples=300, deadline=None)
@given(node=parse_trees(), env=ENVS)
def test_generated_parse_trees_are_auto_only_when_allowed(node: Any, env: EnvironmentConfig) -> None:
    if _allowed(node):
        return  # a real statement of a checked shape is exercised by the SQL generator above
    hazards = hazards_of(ParsedStatement(0, "(generated)", node), PlanContext())
    _assert_default_deny(node, hazards, env)
