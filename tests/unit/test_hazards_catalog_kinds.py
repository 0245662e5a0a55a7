"""The hazards of the statements the reconciler writes beside migra's (sequence options, domains, aggregates,
collations, owners, changed policies), table-driven, no database: each is judged by a check or held harmless,
never left to default deny (UC101)."""

from __future__ import annotations

import pytest
from hazard_helpers import codes

CASES = [
    ("ALTER SEQUENCE public.s AS smallint MAXVALUE 32767", ("MF108", "MF108")),
    ("ALTER SEQUENCE public.s CYCLE", ("MF108",)),
    ("ALTER SEQUENCE public.s NO CYCLE", ()),
    ("ALTER SEQUENCE public.s INCREMENT BY 5 START WITH 2 CACHE 3", ()),
    ("CREATE DOMAIN public.pos AS integer CONSTRAINT c CHECK (VALUE > 0)", ()),
    ("ALTER DOMAIN public.pos ADD CONSTRAINT c CHECK (VALUE > 0)", ("MF109",)),
    ("ALTER DOMAIN public.pos ADD CONSTRAINT c CHECK (VALUE > 0) NOT VALID", ()),
    ("ALTER DOMAIN public.pos SET NOT NULL", ("MF109",)),
    ("ALTER DOMAIN public.pos DROP CONSTRAINT c", ("PR111",)),
    ("ALTER DOMAIN public.pos DROP NOT NULL", ("PR111",)),
    ("ALTER DOMAIN public.pos SET DEFAULT 1", ()),
    ("DROP DOMAIN public.pos", ("DS105",)),
    ("CREATE AGGREGATE public.s(integer) (SFUNC = int4pl, STYPE = integer)", ("CX105",)),
    ("CREATE OR REPLACE AGGREGATE public.s(integer) (SFUNC = int4pl, STYPE = integer)", ("CX105",)),
    ("DROP AGGREGATE public.s(integer)", ("PR112",)),
    ("CREATE COLLATION public.c1 (locale = 'C')", ()),
    ("DROP COLLATION public.c1", ("DS115",)),
    ("ALTER TABLE public.t OWNER TO CURRENT_USER", ("AZ110",)),
    ("ALTER FUNCTION public.f(integer) OWNER TO CURRENT_USER", ("AZ110",)),
    ("ALTER POLICY p ON public.t TO drift_reader USING (id > 1)", ("AZ106",)),
]


@pytest.mark.parametrize(("sql", "expected"), CASES, ids=[c[0] for c in CASES])
def test_each_statement_is_classified(sql: str, expected: tuple[str, ...]) -> None:
    got = codes([sql])[0]
    assert "UC101" not in got
    assert tuple(c for c in got if c[:2] in ("MF", "PR", "DS", "CX", "AZ")) == expected
