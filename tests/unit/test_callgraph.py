"""What a function body calls, read with pglast, and who reaches a function transitively."""

from __future__ import annotations

import pytest

from reconciler.hazards.callgraph import BodyRefs, CallGraph, body_refs
from reconciler.model import QualifiedName

BODIES = [
    ("sql", "select auth.role_of() = 'admin'", {("auth", "role_of")}, {"="}, False),
    ("plpgsql", "begin perform public.g(1); return h(2)::lvl + 1; end", {("public", "g"), (None, "h")}, {"+"}, False),
    ("plpgsql", "begin execute 'select auth.role_of()'; return true; end", set(), set(), True),
    ("plv8", "return plv8.execute('select 1')", set(), set(), True),
]


@pytest.mark.parametrize(("language", "body", "functions", "operators", "opaque"), BODIES)
def test_body_refs(language: str, body: str, functions: set[object], operators: set[str], opaque: bool) -> None:
    refs = body_refs(language, body)
    assert (set(refs.functions), set(refs.operators), refs.opaque is not None) == (functions, operators, opaque)


def test_callers_are_found_through_functions_operators_casts_and_unreadable_bodies() -> None:
    g = CallGraph(
        names={1: QualifiedName("auth", "role_of"), 2: QualifiedName("auth", "is_admin"), 3: QualifiedName("a", "eq"),
               4: QualifiedName("a", "uses_op"), 5: QualifiedName("a", "dyn"), 6: QualifiedName("a", "other")},
        bodies={2: body_refs("sql", "select auth.role_of() = 'admin'"), 3: body_refs("sql", "select is_admin()"),
                4: body_refs("sql", "select 'x' === 'y'"), 5: BodyRefs(opaque="execute 'select uses_op()'"),
                6: body_refs("sql", "select 1")},
        operators={"===": {3}},
    )  # fmt: skip
    via = g.callers({1})
    assert set(via) == {1, 2, 3, 4, 5}
    assert [str(n) for n in g.path(via, 5)] == ["a.dyn", "a.uses_op", "a.eq", "auth.is_admin", "auth.role_of"]
