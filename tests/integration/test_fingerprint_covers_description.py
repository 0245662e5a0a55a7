"""Whatever the catalog description tells apart, the fingerprint tells apart too, for every pair of the drift corpus
and of the drift hunt.

The daemon's fast path ("fingerprint unchanged: in sync") and vetting's proof of convergence ("the clone
fingerprints like the desired build: nothing left to plan") both rest on it: a difference the description sees
(and a plan would close, or report as unmanaged drift) must move the fingerprint.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
from test_drift_corpus import CASES, Case, icu, reader_role  # noqa: F401  (fixtures the cases need)
from test_drift_hunt import CASES as HUNTED

from reconciler.catalog import DescribeOptions, describe
from reconciler.inspect import environment_fingerprint

FDW = (
    "create foreign data wrapper w; create server srv foreign data wrapper w;"
    " create foreign table ft (id int) server srv;"
)

# Differences the fingerprint once missed (found on review): the corpus's pairs, and these.
MISSED = [
    Case("domain collation", "create domain d text;", 'create domain d text collate "C";', ""),
    Case("comment on a foreign server", FDW, FDW + " comment on server srv is 'the warehouse';", ""),
]


@pytest.mark.parametrize("case", CASES + MISSED + HUNTED, ids=[c.name for c in CASES + MISSED + HUNTED])
def test_a_difference_the_description_sees_moves_the_fingerprint(
    case: Case,
    reader_role: str,  # noqa: F811
    icu: bool,  # noqa: F811
    make_db: Callable[..., str],
) -> None:
    if case.needs_icu and not icu:
        pytest.skip("this PostgreSQL build has no ICU support (CREATE COLLATION ... provider = icu fails)")
    env, built = make_db(case.current), make_db(case.desired)
    options = DescribeOptions(privileges=True, compare_owners=case.owners)
    unowned = dataclasses.replace(options, compare_owners=False)  # as vetting compares a clone
    for opts in dict.fromkeys((options, unowned)):  # once when the case does not compare owners
        rows = [{(r.kind, r.object, r.detail) for r in describe(dsn, opts, what="test")} for dsn in (env, built)]
        prints = [environment_fingerprint(dsn, opts) for dsn in (env, built)]
        assert rows[0] == rows[1] or prints[0] != prints[1], sorted(rows[0] ^ rows[1])
