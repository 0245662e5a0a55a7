"""The rule for unmanaged drift, without a database: which differences a plan's statements resolve."""

from __future__ import annotations

from reconciler.catalog import CatalogRow
from reconciler.drift import (
    alter_changed_policies,
    closing_statements,
    domain_statements,
    residual,
    with_matview_indexes,
)

TABLE = CatalogRow("table", "public.t", "", "public.t")
COMMENT = CatalogRow("comment", "table public.t", "people", "public.t")
FORCE = CatalogRow("force_row_security", "public.t", "forced", "public.t")
VIEW_OPTS = CatalogRow("options", "view public.v", "security_invoker=true", "public.v")
VIEW = CatalogRow("view", "public.v", "SELECT 1;", "public.v")


def test_with_no_statement_every_difference_is_unmanaged() -> None:
    got = residual([TABLE], [TABLE, COMMENT], [])
    assert [(d.kind, d.object) for d in got] == [("comment", "table public.t")]


def test_equal_descriptions_leave_nothing() -> None:
    assert residual([TABLE, COMMENT], [TABLE, COMMENT], []) == ()


def test_a_structural_statement_does_not_resolve_a_comment() -> None:
    got = residual([], [TABLE, COMMENT], ["create table public.t (id int)"])
    assert [d.kind for d in got] == ["comment"]


def test_a_comment_statement_resolves_the_comment() -> None:
    assert residual([TABLE], [TABLE, COMMENT], ["COMMENT ON TABLE public.t IS 'people'"]) == ()


def test_a_drop_resolves_every_aspect_of_what_it_drops() -> None:
    assert residual([TABLE, COMMENT, FORCE], [], ['drop table "public"."t"']) == ()


def test_closing_statements_for_comment_and_force() -> None:
    got = closing_statements([TABLE], [TABLE, COMMENT, FORCE], [])
    assert got == ["COMMENT ON TABLE public.t IS 'people'", "ALTER TABLE public.t FORCE ROW LEVEL SECURITY"]


def test_a_comment_is_quoted_as_a_literal() -> None:
    evil = CatalogRow("comment", "table public.t", "x'; drop table t; --", "public.t")
    assert closing_statements([TABLE], [TABLE, evil], []) == ["COMMENT ON TABLE public.t IS 'x''; drop table t; --'"]


def test_a_redefined_view_gets_its_options_back() -> None:
    got = closing_statements([VIEW, VIEW_OPTS], [VIEW, VIEW_OPTS], ['create or replace view "public"."v" as select 1'])
    assert got == ["ALTER VIEW public.v SET (security_invoker = 'true')"]


def test_a_comment_on_a_dropped_object_is_not_cleared() -> None:
    assert closing_statements([TABLE, COMMENT], [], ['drop table "public"."t"']) == []


POLICY = CatalogRow("policy", "public.t.p", "for * | permissive | to public | using (id > 0)", "public.t")
DROP_P = 'drop policy "p" on "public"."t"'


def test_a_changed_policy_is_altered_in_place() -> None:
    create = 'create policy "p" on "public"."t" as permissive for all to drift_reader using ((id > 1))'
    got = alter_changed_policies([DROP_P, create], [POLICY])
    assert got == ["ALTER POLICY p ON public.t TO drift_reader USING (id > 1)"]


def test_a_policy_made_restrictive_keeps_drop_and_create() -> None:
    create = 'create policy "p" on "public"."t" as restrictive for all to public using ((id > 1))'
    assert alter_changed_policies([DROP_P, create], [POLICY]) == [DROP_P, create]


def test_a_new_domain_comes_before_and_a_dropped_one_after() -> None:
    new = CatalogRow("domain", "app.d", "base text | not null", "app.d")
    check = CatalogRow("constraint", "app.d.c", "CHECK ((VALUE <> ''::text))", "app.d")
    old = CatalogRow("domain", "public.old", "base integer", "public.old")
    before, after = domain_statements([old], [new, check])
    assert before == ["CREATE DOMAIN app.d AS text NOT NULL CONSTRAINT c CHECK ((VALUE <> ''::text))"]
    assert after == ["DROP DOMAIN public.old"]


COLUMN_ACL = CatalogRow("acl", 'column "a.b"."t"."v"', "drift_reader:SELECT", "a.b.t")
DOTTED_TABLE = CatalogRow("table", '"a.b".t', "", "a.b.t")


def test_a_table_grant_does_not_resolve_a_column_acl() -> None:
    got = residual([DOTTED_TABLE, COLUMN_ACL], [DOTTED_TABLE], ['GRANT SELECT ON TABLE "a.b".t TO drift_reader'])
    assert [(d.kind, d.object) for d in got] == [("acl", 'column "a.b"."t"."v"')]


def test_a_column_grant_resolves_only_its_own_column() -> None:
    assert residual([DOTTED_TABLE, COLUMN_ACL], [DOTTED_TABLE], ['REVOKE SELECT (v) ON "a.b".t FROM r']) == ()
    # schema "a", table "b.t": the same dotted text, another object
    assert residual([DOTTED_TABLE, COLUMN_ACL], [DOTTED_TABLE], ['REVOKE SELECT (v) ON a."b.t" FROM r']) != ()


def test_the_column_revoke_is_planned_beside_a_table_grant() -> None:
    got = closing_statements([DOTTED_TABLE, COLUMN_ACL], [DOTTED_TABLE], ['GRANT SELECT ON "a.b".t TO drift_reader'])
    assert got == ['REVOKE SELECT ("v") ON TABLE "a.b"."t" FROM "drift_reader"']


MV_INDEX = CatalogRow("index", "public.mv_i", "CREATE INDEX mv_i ON public.mv USING btree (id)", "public.mv")
RECREATE_MV = ['DROP MATERIALIZED VIEW "public"."mv"', 'CREATE MATERIALIZED VIEW "public"."mv" AS SELECT 1 AS id']


def test_a_recreated_materialized_view_gets_its_indexes_back() -> None:
    assert with_matview_indexes(RECREATE_MV, [MV_INDEX]) == [*RECREATE_MV, MV_INDEX.detail]


def test_a_new_materialized_view_or_an_index_already_built_is_left_to_migra() -> None:
    assert with_matview_indexes(RECREATE_MV[1:], [MV_INDEX]) == RECREATE_MV[1:]
    built = [*RECREATE_MV, "CREATE INDEX mv_i ON public.mv (id)"]
    assert with_matview_indexes(built, [MV_INDEX]) == built
