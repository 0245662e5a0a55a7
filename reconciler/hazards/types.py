"""Column type changes: is the new type wider, narrower or lossy, and does the change rewrite the table?

Both sides become a :class:`TypeRef` through PostgreSQL's own grammar: the new type from the statement's
``TypeName`` node, the old one (as ``format_type`` printed it in the environment) by parsing ``NULL::<type>``
with pglast. The rules below follow PostgreSQL's casts and ``ATColumnChangeRequiresRewrite``; what they do not
know is reported as a plain change (DS107), never as safe.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from pglast import ast, parser

Verdict = Literal["same", "wider", "narrower", "changed"]

_INTS = {"int2": 2, "int4": 4, "int8": 8}
_INT_DIGITS = {"int2": 5, "int4": 10, "int8": 19}
_FLOATS = {"float4": 4, "float8": 8}
_TEXTS = {"text", "varchar", "bpchar"}
_TIMES = {"timestamp", "timestamptz", "time", "timetz", "interval"}
_SHOWN = {
    "int2": "smallint",
    "int4": "integer",
    "int8": "bigint",
    "float4": "real",
    "float8": "double precision",
    "varchar": "varchar",
    "bpchar": "char",
    "bool": "boolean",
    "timestamptz": "timestamptz",
}


@dataclass(frozen=True)
class TypeRef:
    """A type as PostgreSQL's grammar sees it: schema (None for built-ins or unqualified), name, modifiers."""

    schema: str | None
    name: str
    mods: tuple[int, ...] = ()
    array: bool = False

    def __str__(self) -> str:
        base = _SHOWN.get(self.name, self.name)
        if self.schema:
            base = f"{self.schema}.{base}"
        if self.mods:
            base += "(" + ",".join(str(m) for m in self.mods) + ")"
        return base + ("[]" if self.array else "")

    @property
    def builtin(self) -> bool:
        return self.schema is None


@dataclass(frozen=True)
class TypeChange:
    verdict: Verdict
    rewrite: bool
    reason: str = ""


def from_type_name(tn: Any) -> TypeRef | None:
    """A TypeRef from a pglast ``TypeName`` (None for ``%TYPE`` references and the like)."""
    if not isinstance(tn, ast.TypeName) or not tn.names or tn.pct_type:
        return None
    parts = [str(n.sval) for n in tn.names if isinstance(n, ast.String)]
    if not parts:
        return None
    schema = parts[-2] if len(parts) >= 2 else None
    if schema == "pg_catalog":
        schema = None
    mods: list[int] = []
    for m in tn.typmods or ():
        val: Any = getattr(m, "val", None)
        if isinstance(val, ast.Integer):
            mods.append(int(val.ival or 0))
        else:
            return TypeRef(schema, parts[-1], (-1,), bool(tn.arrayBounds))
    return TypeRef(schema, parts[-1], tuple(mods), bool(tn.arrayBounds))


def parse_type(text: str) -> TypeRef | None:
    """A TypeRef from a type as ``format_type`` prints it (``character varying(20)``, ``public.mood[]``)."""
    try:
        stmts = parser.parse_sql(f"select null::{text}")
    except parser.ParseError:
        return None
    if len(stmts) != 1:
        return None
    select: Any = stmts[0].stmt
    target = select.targetList[0].val if getattr(select, "targetList", None) else None
    return from_type_name(target.typeName) if isinstance(target, ast.TypeCast) else None


def same_type(a: TypeRef, b: TypeRef) -> bool:
    """Whether two references name the same type; an unqualified name matches ``public`` or any schema."""
    if a.name != b.name or a.mods != b.mods or a.array != b.array:
        return False
    return a.schema is None or b.schema is None or a.schema == b.schema


def _mod(t: TypeRef, i: int) -> int | None:
    return t.mods[i] if len(t.mods) > i else None


def _numeric(old: TypeRef, new: TypeRef) -> TypeChange:
    if not new.mods:
        return TypeChange("wider", False)
    if not old.mods:
        return TypeChange("narrower", True, f"unconstrained numeric values are rounded or rejected by {new}")
    p1, s1 = old.mods[0], _mod(old, 1) or 0
    p2, s2 = new.mods[0], _mod(new, 1) or 0
    if s2 < s1:
        return TypeChange("narrower", True, f"values are rounded to {s2} decimal places")
    if p2 - s2 < p1 - s1:
        return TypeChange("narrower", True, f"values with more than {p2 - s2} integer digits are rejected")
    return TypeChange("wider", not (s2 == s1 and p2 >= p1))


def _texts(old: TypeRef, new: TypeRef) -> TypeChange:
    n1, n2 = _mod(old, 0), _mod(new, 0)
    if new.name == "bpchar":
        if n2 is None and old.name == "bpchar":
            return TypeChange("wider", False)  # unbounded bpchar keeps every value of char(n)
        if old.name != "bpchar":
            return TypeChange("narrower", True, f"values are cut or padded to {n2 or 1} characters")
        if n2 is not None and n2 < (n1 or 1):
            return TypeChange("narrower", True, f"values longer than {n2} characters are cut")
        return TypeChange("wider", True)
    if old.name == "bpchar":
        return TypeChange("narrower", True, "trailing blanks of char values are dropped")
    if n2 is not None and (n1 is None or n2 < n1):
        return TypeChange("narrower", True, f"values longer than {n2} characters are cut")
    return TypeChange("wider", False)


def _ints_floats(old: TypeRef, new: TypeRef) -> TypeChange | None:
    o, n = old.name, new.name
    if o in _INTS and n in _INTS:
        if _INTS[n] >= _INTS[o]:
            return TypeChange("wider", True)
        return TypeChange("narrower", True, f"values outside the range of {new} are rejected")
    if o in _INTS and n == "numeric":
        if new.mods and new.mods[0] - (_mod(new, 1) or 0) < _INT_DIGITS[o]:
            return TypeChange("narrower", True, f"values with more than {new.mods[0]} digits are rejected")
        return TypeChange("wider", True)
    if o in _INTS and n in _FLOATS:
        exact = {"float4": ("int2",), "float8": ("int2", "int4")}[n]
        if o in exact:
            return TypeChange("wider", True)
        return TypeChange("narrower", True, f"large integers lose precision in {new}")
    if o in _FLOATS and n in _FLOATS:
        if _FLOATS[n] >= _FLOATS[o]:
            return TypeChange("wider", True)
        return TypeChange("narrower", True, "values lose precision")
    if (o in _FLOATS or o == "numeric") and n in _INTS:
        return TypeChange("narrower", True, "fractions are rounded away and large values are rejected")
    if o == "numeric" and n in _FLOATS:
        return TypeChange("narrower", True, "values lose precision")
    if o in _FLOATS and n == "numeric":
        return _numeric(TypeRef(None, "numeric"), new) if new.mods else TypeChange("wider", True)
    return None


def _times(old: TypeRef, new: TypeRef) -> TypeChange | None:
    o, n = old.name, new.name
    if o == n and o in _TIMES:
        p1, p2 = _mod(old, 0), _mod(new, 0)
        if p2 is not None and (p1 is None or p2 < p1):
            return TypeChange("narrower", True, f"fractional seconds are rounded to {p2} digits")
        return TypeChange("wider", False)
    if o in ("timestamp", "timestamptz") and n == "date":
        return TypeChange("narrower", True, "the time of day is dropped")
    if o == "date" and n in ("timestamp", "timestamptz"):
        return TypeChange("wider", True)
    if {o, n} == {"timestamp", "timestamptz"}:
        return TypeChange("changed", True, "values are reinterpreted in the session's time zone")
    return None


def compare(old: TypeRef, new: TypeRef) -> TypeChange:
    """What changing a column from ``old`` to ``new`` does to its values and to the table."""
    if same_type(old, new):
        return TypeChange("same", False)
    if old.array != new.array:
        return TypeChange("changed", True, "values change between arrays and scalars")
    if not (old.builtin and new.builtin):
        return TypeChange("changed", True, f"values are cast from {old} to {new}")
    o, n = old.name, new.name
    if o == n == "numeric":
        return _numeric(old, new)
    if o in _TEXTS and n in _TEXTS:
        return _texts(old, new)
    if (o, n) in (("varbit", "varbit"), ("bit", "bit")):
        n1, n2 = _mod(old, 0), _mod(new, 0)
        if n2 is not None and (n1 is None or n2 < n1):
            return TypeChange("narrower", True, f"bit strings longer than {n2} are rejected or cut")
        return TypeChange("wider", o == "bit")
    for rule in (_ints_floats, _times):
        verdict = rule(old, new)
        if verdict is not None:
            return verdict
    if (o, n) == ("json", "jsonb"):
        return TypeChange("narrower", True, "duplicate keys, key order and whitespace are not kept")
    if (o, n) in (("jsonb", "json"), ("cidr", "inet")):
        return TypeChange("wider", o == "jsonb")
    if n in ("text", "varchar") and not new.mods:
        return TypeChange("wider", True)
    return TypeChange("changed", True, f"values are cast from {old} to {new} and may be rejected")
