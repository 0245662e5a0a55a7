"""Residual drift: what the catalog descriptions of an environment and of the desired build still differ in, once
the plan's statements are counted as resolving the objects they name; and the statements that close the gaps
migra leaves (comments, FORCE ROW LEVEL SECURITY, relation options, replica identity).

The rule (README, "Unmanaged drift"): a difference on a row of the description is *resolved* by the plan when a
plan statement names the row's object (or the table, view, type or function it belongs to) and the statement is
of a sort that changes that aspect of it:

* ``COMMENT ON`` resolves comments; ``GRANT``/``REVOKE`` ACLs; ``ALTER DEFAULT PRIVILEGES`` default privileges;
  owner changes owners; ``ALTER TABLE ... FORCE/NO FORCE ROW LEVEL SECURITY``, ``REPLICA IDENTITY``,
  ``SET (...)``/``RESET (...)`` the aspect of that name; ``ALTER SEQUENCE`` sequences and their ``OWNED BY``;
* a ``DROP`` resolves every aspect of what it drops;
* any other statement resolves the structure of what it names (tables, columns, constraints, indexes, views,
  functions, types, triggers, policies, ...), never its comments, grants, options or owner.

Every other difference is unmanaged drift. With an empty plan nothing is resolved, so a plan is in sync only when
the two descriptions are equal: never while ``pg_dump --schema-only`` of the two differs beyond the normalisation.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from pglast import ast, parser
from pglast.enums import AlterTableType, ObjectType
from pglast.stream import RawStream

from .catalog import CatalogRow, DescribeOptions, by_object, describe
from .config import EnvironmentConfig
from .diff import diff, one_statement
from .inspect import Inspection
from .model import UnmanagedDrift

ALL = "*"  # an aspect that stands for every aspect (a DROP)
STRUCTURE = "structure"
# Aspects of an object that no structural statement changes: each needs a statement of its own.
ASPECTS = frozenset(
    {
        "comment",
        "acl",
        "default_privileges",
        "owner",
        "force_row_security",
        "replica_identity",
        "options",
        "sequence_owned_by",
        "builtin_acl",  # grants on built-in objects and languages: reported, never planned
        "property",  # compression, attribute and key-index options, typed tables, ...: migra writes none of them
    }
)

_AT_ASPECT = {
    AlterTableType.AT_ForceRowSecurity: "force_row_security",
    AlterTableType.AT_NoForceRowSecurity: "force_row_security",
    AlterTableType.AT_ReplicaIdentity: "replica_identity",
    AlterTableType.AT_SetRelOptions: "options",
    AlterTableType.AT_ResetRelOptions: "options",
    AlterTableType.AT_ChangeOwner: "owner",
}


@dataclass
class Touched:
    """The objects a plan's statements name, with the aspects they change (raw ``schema.name`` keys)."""

    aspects: dict[str, set[str]] = field(default_factory=dict)
    # Views a statement (re)defines: CREATE OR REPLACE VIEW without WITH (...) resets their options.
    redefined_views: set[str] = field(default_factory=set)
    # Columns whose ACL a column-level GRANT/REVOKE changes: (schema, table, column). A table-level GRANT or REVOKE
    # never counts for a column's own ACL row (it leaves the column's ACL items in place).
    column_acls: set[tuple[str, str, str]] = field(default_factory=set)
    # Sequences a statement creates without options (migra's CREATE SEQUENCE): their options come after.
    bare_sequences: set[str] = field(default_factory=set)

    def add(self, names: Iterable[str], aspects: Iterable[str]) -> None:
        got = set(aspects)
        for name in names:
            self.aspects.setdefault(name, set()).update(got)

    def resolves(self, row: CatalogRow) -> bool:
        aspect = row.kind if row.kind in ASPECTS else STRUCTURE
        column = column_of(row)
        if column is not None:
            aspect = ALL  # only a DROP of its table, or a statement on the column's own ACL (below), resolves it
            if column in self.column_acls:
                return True
        for name in _names_of(row):
            found = self.aspects.get(name, set()) | self.aspects.get(ALL, set())
            if ALL in found or aspect in found:
                return True
        return False


def _names_of(row: CatalogRow) -> Iterator[str]:
    yield row.key
    bare = row.object.split(" ")[-1].replace('"', "")
    yield bare
    yield bare.split("(")[0]


def column_of(row: CatalogRow) -> tuple[str, str, str] | None:
    """(schema, table, column) of a column's ACL row (``column "s"."t"."c"``), read with PostgreSQL's grammar so
    that a name holding a dot aliases no other; None for any other row."""
    if row.kind != "acl" or not row.object.startswith("column "):
        return None
    node = _single("SELECT " + row.object.removeprefix("column "))
    target = node.targetList[0].val if isinstance(node, ast.SelectStmt) and node.targetList else None
    fields = target.fields if isinstance(target, ast.ColumnRef) else ()
    parts = [str(f.sval) for f in fields or () if isinstance(f, ast.String)]
    return (parts[0], parts[1], parts[2]) if len(parts) == 3 else None


def _column_acls(stmt: ast.GrantStmt) -> set[tuple[str, str, str]]:
    """The columns a column-level GRANT/REVOKE on tables names."""
    cols = [str(c.sval) for p in stmt.privileges or () for c in p.cols or () if isinstance(c, ast.String)]
    return {(*_rel(o), c) for o in stmt.objects or () if isinstance(o, ast.RangeVar) for c in cols}


def _name_lists(node: ast.Node) -> Iterator[str]:
    """Every qualified name in a statement: relations, and lists of name strings (functions, types, schemas)."""
    if isinstance(node, ast.RangeVar):
        yield f"{node.schemaname or 'public'}.{node.relname}"
        return
    for attr in node:
        value = getattr(node, attr)
        if isinstance(value, str) and attr in ("schemaname", "extname", "servername", "idxname", "fdwname"):
            yield value
        yield from _names_in(value)


def _names_in(value: object) -> Iterator[str]:
    if isinstance(value, ast.Node):
        yield from _name_lists(value)
    elif isinstance(value, tuple) and value and all(isinstance(v, ast.String) for v in value):
        parts = [str(v.sval) for v in value]
        yield ".".join(parts)
        if len(parts) == 1:
            yield f"public.{parts[0]}"
    elif isinstance(value, tuple):
        for v in value:
            yield from _names_in(v)


def _aspects_of(stmt: ast.Node) -> set[str]:
    if isinstance(stmt, ast.DropStmt):
        return {ALL}
    if isinstance(stmt, ast.CommentStmt):
        return {"comment"}
    if isinstance(stmt, ast.GrantStmt):
        return {"acl"}
    if isinstance(stmt, ast.AlterDefaultPrivilegesStmt):
        return {"default_privileges"}
    if isinstance(stmt, ast.AlterOwnerStmt):
        return {"owner"}
    if isinstance(stmt, ast.CreateExtensionStmt):  # its script sets the extension's comment
        return {STRUCTURE, "comment"}
    if isinstance(stmt, ast.AlterSeqStmt | ast.CreateSeqStmt):
        return {STRUCTURE, "sequence_owned_by"}
    if isinstance(stmt, ast.AlterTableStmt):
        return {
            _AT_ASPECT.get(c.subtype, STRUCTURE) if c.subtype is not None else STRUCTURE
            for c in stmt.cmds or ()
            if isinstance(c, ast.AlterTableCmd)
        }
    return {STRUCTURE}


def touched(sqls: Sequence[str]) -> Touched:
    """What the statements name and change; a statement that does not parse counts as touching nothing."""
    out = Touched()
    for sql in sqls:
        try:
            raws = parser.parse_sql(sql)
        except parser.ParseError:
            continue
        for raw in raws:
            stmt = raw.stmt
            if stmt is None:
                continue
            names = set(_name_lists(stmt))
            if isinstance(stmt, ast.AlterDefaultPrivilegesStmt):
                names.add(ALL)
            if isinstance(stmt, ast.ViewStmt) and stmt.view is not None:
                out.redefined_views.update(_name_lists(stmt.view))
            if isinstance(stmt, ast.CreateSeqStmt) and not stmt.options and stmt.sequence is not None:
                out.bare_sequences.update(_name_lists(stmt.sequence))
            if isinstance(stmt, ast.GrantStmt) and (columns := _column_acls(stmt)):
                out.column_acls |= columns
                continue
            out.add(names, _aspects_of(stmt))
    return out


def differences(
    env: Iterable[CatalogRow], want: Iterable[CatalogRow]
) -> list[tuple[CatalogRow | None, CatalogRow | None]]:
    """Pairs (environment row, desired row) that differ, by (kind, object); None where one side lacks it."""
    have, need = by_object(env), by_object(want)
    out: list[tuple[CatalogRow | None, CatalogRow | None]] = []
    for k in sorted(have.keys() | need.keys()):
        a, b = have.get(k), need.get(k)
        if a is None or b is None or a.detail != b.detail:
            out.append((a, b))
    return out


def residual(env: Iterable[CatalogRow], want: Iterable[CatalogRow], sqls: Sequence[str]) -> tuple[UnmanagedDrift, ...]:
    """The differences that the plan ``sqls`` does not resolve (see the module's rule)."""
    t = touched(sqls)
    out: list[UnmanagedDrift] = []
    for a, b in differences(env, want):
        row = a or b
        assert row is not None
        if t.resolves(row):
            continue
        out.append(UnmanagedDrift(row.kind, row.object, _detail(a, b)))
    return tuple(out)


def _detail(env: CatalogRow | None, want: CatalogRow | None) -> str:
    if env is None:
        return f"missing from the environment (desired: {want.detail if want else ''})"
    if want is None:
        return f"not in the desired state (environment: {env.detail})"
    return f"environment: {env.detail}; desired: {want.detail}"


@functools.lru_cache(maxsize=16)
def desired_description(
    dsn: str, revision: str, options: DescribeOptions, connect_timeout: timedelta
) -> tuple[CatalogRow, ...]:
    """The desired build's description: read once per revision (and filter), like the desired inspection."""
    del revision  # part of the cache key: a new revision is built in a new database anyway
    return describe(dsn, options, connect_timeout=connect_timeout, what="describing the desired state")


# -- closing the gaps migra leaves ----------------------------------------------------------------------------------
#
# For each difference the migra statements leave unresolved, a statement of our own, appended after migra's (a
# comment after its object is created, a grant after its view is recreated). Aspects of an object that migra drops
# and recreates count as absent in the environment, so they are restored after the recreation.

# pg_identify_object's type names -> the object kind of COMMENT ON; the longest prefix wins.
_COMMENT_TYPES = (
    "materialized view column",
    "view column",
    "foreign table column",
    "composite type column",
    "materialized view",
    "foreign table",
    "table column",
    "table constraint",
    "domain constraint",
    "foreign-data wrapper",
    "text search configuration",
    "text search dictionary",
    "operator class",
    "operator family",
    "event trigger",
    "table",
    "view",
    "index",
    "sequence",
    "function",
    "procedure",
    "aggregate",
    "type",
    "domain",
    "schema",
    "collation",
    "trigger",
    "policy",
    "rule",
    "extension",
    "server",
    "operator",
    "conversion",
    "statistics object",
    "publication",
    "cast",
)
_COMMENT_KEYWORD = {
    "table column": "COLUMN",
    "materialized view column": "COLUMN",
    "view column": "COLUMN",
    "foreign table column": "COLUMN",
    "composite type column": "COLUMN",
    "table constraint": "CONSTRAINT",
    "foreign-data wrapper": "FOREIGN DATA WRAPPER",
    "statistics object": "STATISTICS",
}
_REL_KEYWORD = {
    "view": "VIEW",
    "materialized_view": "MATERIALIZED VIEW",
    "table": "TABLE",
    "foreign_table": "FOREIGN TABLE",
}
_ACL_KEYWORD = {
    "table": "TABLE",
    "view": "TABLE",
    "materialized_view": "TABLE",
    "foreign_table": "TABLE",
    "sequence": "SEQUENCE",
    "function": "ROUTINE",
    "procedure": "ROUTINE",
    "aggregate": "ROUTINE",
    "type": "TYPE",
    "schema": "SCHEMA",
}
_ACL_BASELINE = {
    "function": {"PUBLIC:EXECUTE"},
    "procedure": {"PUBLIC:EXECUTE"},
    "aggregate": {"PUBLIC:EXECUTE"},
    "type": {"PUBLIC:USAGE"},
}


def literal(text: str) -> str:
    """A SQL string literal (standard_conforming_strings is pinned on by every connection)."""
    return "'" + text.replace("'", "''") + "'"


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _role(name: str) -> str:
    return "PUBLIC" if name == "PUBLIC" else '"' + name.replace('"', '""') + '"'


def _split(obj: str, known: Iterable[str]) -> tuple[str, str]:
    for t in sorted(known, key=len, reverse=True):
        if obj.startswith(t + " "):
            return t, obj[len(t) + 1 :]
    return "", obj


def _comment(env: CatalogRow | None, want: CatalogRow | None, keys: set[str]) -> list[str]:
    row = want or env
    assert row is not None
    kind, ident = _split(row.object, _COMMENT_TYPES)
    if not kind or (want is None and row.key not in keys):
        return []  # an unknown kind stays unmanaged; a comment on an object the plan drops goes with it
    keyword = _COMMENT_KEYWORD.get(kind, kind.upper())
    if kind == "domain constraint":
        name, _, domain = ident.partition(" on ")
        keyword, ident = "CONSTRAINT", f"{name} ON DOMAIN {domain}"
    return [f"COMMENT ON {keyword} {ident} IS {literal(want.detail) if want else 'NULL'}"]


def _relation(row: CatalogRow, kinds: dict[str, str]) -> tuple[str, str]:
    kind, ident = _split(row.object, _REL_KEYWORD)
    return _REL_KEYWORD.get(kind or kinds.get(row.key, "table"), "TABLE"), ident


def _options(env: CatalogRow | None, want: CatalogRow | None, keys: set[str]) -> list[str]:
    row = want or env
    assert row is not None
    if want is None and row.key not in keys:
        return []
    keyword, ident = _relation(row, {})
    have = dict(o.split("=", 1) for o in env.detail.split(",")) if env and env.detail else {}
    need = dict(o.split("=", 1) for o in want.detail.split(",")) if want and want.detail else {}
    out = []
    if gone := sorted(set(have) - set(need)):
        out.append(f"ALTER {keyword} {ident} RESET ({', '.join(gone)})")
    if changed := {k: v for k, v in need.items() if have.get(k) != v}:
        out.append(
            f"ALTER {keyword} {ident} SET ({', '.join(f'{k} = {literal(v)}' for k, v in sorted(changed.items()))})"
        )
    return out


def _table_aspect(env: CatalogRow | None, want: CatalogRow | None, keys: set[str]) -> list[str]:
    row = want or env
    assert row is not None
    if want is None and row.key not in keys:
        return []
    if row.kind == "force_row_security":
        return [f"ALTER TABLE {row.object} {'FORCE' if want else 'NO FORCE'} ROW LEVEL SECURITY"]
    setting = (want.detail if want else "default").upper()
    if setting.startswith("USING INDEX "):
        setting = "USING INDEX " + want.detail[len("using index ") :] if want else setting
    return [f"ALTER TABLE {row.object} REPLICA IDENTITY {setting}"]


def _acl(env: CatalogRow | None, want: CatalogRow | None, keys: set[str]) -> list[str]:
    row = want or env
    assert row is not None
    if want is None and row.key not in keys:
        return []
    kind, ident = row.object.split(" ", 1)
    column = ""
    if (parts := column_of(row)) is not None:
        ident, column, kind = f"{_quote(parts[0])}.{_quote(parts[1])}", f" ({_quote(parts[2])})", "table"
    on = f"{_ACL_KEYWORD.get(kind, 'TABLE')} {ident}"
    have = set(env.detail.split(",")) if env else set(_ACL_BASELINE.get(kind, ()))
    need = set(want.detail.split(",")) if want and want.detail else set()
    return [
        f"GRANT {priv}{column} ON {on} TO {who}{extra}" if grant else f"REVOKE {priv}{column} ON {on} FROM {who}"
        for grant, priv, who, extra in _acl_changes(have, need)
    ]


def _acl_changes(have: set[str], need: set[str]) -> Iterator[tuple[bool, str, str, str]]:
    """(grant?, privilege, grantee, `` WITH GRANT OPTION`` or '') taking ACL items ``have`` to ``need``: revokes
    first; the owner's own items are never touched."""
    for grant, items in ((False, have - need), (True, need - have)):
        for item in sorted(items):
            grantee, _, priv = item.partition(":")
            if grantee != "<owner>" and item:
                extra = " WITH GRANT OPTION" if grant and priv.endswith("*") else ""
                yield grant, priv.rstrip("*"), _role(grantee), extra


# Default privileges: the object kind in the row -> the kind ALTER DEFAULT PRIVILEGES names, and the items a role
# holds without any pg_default_acl row (a global row's baseline; a row IN SCHEMA only adds to the global one).
_DEFACL_BASELINE = {"functions": {"PUBLIC:EXECUTE"}, "types": {"PUBLIC:USAGE"}}


def _default_privileges(env: CatalogRow | None, want: CatalogRow | None, keys: set[str]) -> list[str]:
    """``ALTER DEFAULT PRIVILEGES [FOR ROLE r] [IN SCHEMA s] GRANT|REVOKE ... ON <kind>`` for one row's difference.

    The row's object reads ``for role <r> [in schema <s>] on <kind>``; ``<owner>`` (the database owner or the role
    that applies) is left out, so the statement names the role that runs it."""
    row = want or env
    assert row is not None
    head, _, on = row.object.rpartition(" on ")
    role, _, schema = head.removeprefix("for role ").partition(" in schema ")
    prefix = "ALTER DEFAULT PRIVILEGES" + ("" if role == "<owner>" else f" FOR ROLE {_role(role)}")
    prefix += f" IN SCHEMA {schema}" if schema else ""
    baseline = set() if schema else set(_DEFACL_BASELINE.get(on, ()))
    have = set(env.detail.split(",")) if env and env.detail else baseline
    need = set(want.detail.split(",")) if want and want.detail else baseline
    return [
        f"{prefix} GRANT {priv} ON {on.upper()} TO {who}{extra}"
        if grant
        else f"{prefix} REVOKE {priv} ON {on.upper()} FROM {who}"
        for grant, priv, who, extra in _acl_changes(have, need)
    ]


# The sequence options of a ``sequence`` row's detail -> the ALTER SEQUENCE clause that sets each.
_SEQUENCE_CLAUSES = {
    "as": "AS {}",
    "increment": "INCREMENT BY {}",
    "min": "MINVALUE {}",
    "max": "MAXVALUE {}",
    "start": "START WITH {}",
    "cache": "CACHE {}",
}


def _sequence_options(detail: str) -> dict[str, str]:
    """``as bigint start 1 increment 1 min 1 max 9 cache 1 [cycle]`` (one part of the detail) as a dict."""
    part = next((p for p in detail.split(" | ") if p.startswith("as ")), "")
    words = part.split()
    out = dict(zip(words[0::2], words[1::2], strict=False))
    out["cycle"] = "cycle" if "cycle" in words else "no cycle"
    return out


def _sequence(env: CatalogRow | None, want: CatalogRow | None, keys: set[str]) -> list[str]:
    """``ALTER SEQUENCE ... AS/INCREMENT/MINVALUE/MAXVALUE/START/CACHE/[NO] CYCLE`` for the options that differ on
    a sequence both sides hold (migra creates and drops sequences)."""
    if env is None or want is None:
        return []
    have, need = _sequence_options(env.detail), _sequence_options(want.detail)
    clauses = [
        _SEQUENCE_CLAUSES[k].format(v) if k in _SEQUENCE_CLAUSES else v.upper()
        for k, v in need.items()
        if have.get(k) != v and (k in _SEQUENCE_CLAUSES or k == "cycle")
    ]
    return [f"ALTER SEQUENCE {want.object} {' '.join(clauses)}"] if clauses else []


# The options of a sequence made by ``CREATE SEQUENCE`` without any (as a ``sequence`` row's detail shows them).
_NEW_SEQUENCE = "as bigint start 1 increment 1 min 1 max 9223372036854775807 cache 1"


_OWNER_KEYWORD = {
    "materialized_view": "MATERIALIZED VIEW",
    "foreign_table": "FOREIGN TABLE",
}


def _owner(env: CatalogRow | None, want: CatalogRow | None, keys: set[str]) -> list[str]:
    """``ALTER <kind> ... OWNER TO`` the desired owner; ``<owner>`` (created by whoever builds or applies) is the
    role that applies the plan (``CURRENT_USER``)."""
    if want is None or (env is None and (want.detail == "<owner>" or want.key not in keys)):
        return []  # a new object belongs to the role that creates it; a dropped one needs no owner
    kind, ident = want.object.split(" ", 1)
    owner = "CURRENT_USER" if want.detail == "<owner>" else _role(want.detail)
    return [f"ALTER {_OWNER_KEYWORD.get(kind, kind.upper())} {ident} OWNER TO {owner}"]


_CLOSERS = {
    "comment": _comment,
    "options": _options,
    "force_row_security": _table_aspect,
    "replica_identity": _table_aspect,
    "acl": _acl,
    "default_privileges": _default_privileges,
    "sequence": _sequence,
    "owner": _owner,
}


def _domain_parts(detail: str) -> dict[str, str]:
    """A ``domain`` row's detail (``base integer | not null | default 1 | collate "C"``) as a dict."""
    out: dict[str, str] = {}
    for part in detail.split(" | "):
        word, _, rest = part.partition(" ")
        out["not null" if part == "not null" else word] = rest
    return out


def _domain_constraints(rows: Iterable[CatalogRow], domain: CatalogRow) -> dict[str, str]:
    """The constraints of ``domain`` among ``rows``: quoted name -> detail (``CHECK (...) [| not valid]``)."""
    prefix = domain.object + "."
    return {
        r.object[len(prefix) :]: r.detail
        for r in rows
        if r.kind == "constraint" and r.key == domain.key and r.object.startswith(prefix)
    }


def _add_domain_constraint(domain: str, name: str, detail: str) -> str:
    check, _, valid = detail.partition(" | ")
    return f"ALTER DOMAIN {domain} ADD CONSTRAINT {name} {check}{' NOT VALID' if valid == 'not valid' else ''}"


def _create_domain(domain: CatalogRow, constraints: dict[str, str]) -> list[str]:
    parts = _domain_parts(domain.detail)
    sql = f"CREATE DOMAIN {domain.object} AS {parts['base']}"
    sql += f" COLLATE {parts['collate']}" if "collate" in parts else ""
    sql += f" DEFAULT {parts['default']}" if "default" in parts else ""
    sql += " NOT NULL" if "not null" in parts else ""
    valid = {n: d for n, d in constraints.items() if not d.endswith(" | not valid")}
    sql += "".join(f" CONSTRAINT {n} {d}" for n, d in sorted(valid.items()))
    rest = [_add_domain_constraint(domain.object, n, d) for n, d in sorted(constraints.items()) if n not in valid]
    return [sql, *rest]


def _alter_domain(env: CatalogRow, want: CatalogRow, have_cons: dict[str, str], need_cons: dict[str, str]) -> list[str]:
    have, need, name = _domain_parts(env.detail), _domain_parts(want.detail), want.object
    out: list[str] = []
    if have.get("default") != need.get("default"):
        out.append(
            f"ALTER DOMAIN {name} " + (f"SET DEFAULT {need['default']}" if "default" in need else "DROP DEFAULT")
        )
    if ("not null" in have) != ("not null" in need):
        out.append(f"ALTER DOMAIN {name} {'SET' if 'not null' in need else 'DROP'} NOT NULL")
    out += [f"ALTER DOMAIN {name} DROP CONSTRAINT {n}" for n in sorted(have_cons) if have_cons[n] != need_cons.get(n)]
    out += [_add_domain_constraint(name, n, d) for n, d in sorted(need_cons.items()) if have_cons.get(n) != d]
    return out


def domain_statements(env: Sequence[CatalogRow], want: Sequence[CatalogRow]) -> tuple[list[str], list[str]]:
    """(before migra's statements, after them) for the domains of the managed schemas, which migra does not diff:
    new domains are created before the tables that use them; changes and drops follow migra's statements. A
    domain whose base type or collation changed gets no statement: it stays unmanaged drift (``domain``)."""
    have = {r.object: r for r in env if r.kind == "domain"}
    need = {r.object: r for r in want if r.kind == "domain"}
    before: list[str] = []
    after: list[str] = []
    for name in sorted(have.keys() | need.keys()):
        a, b = have.get(name), need.get(name)
        if a is None and b is not None:
            before += _create_domain(b, _domain_constraints(want, b))
        elif b is None and a is not None:
            after.append(f"DROP DOMAIN {name}")
        elif a is not None and b is not None:
            pa, pb = _domain_parts(a.detail), _domain_parts(b.detail)
            if (pa.get("base"), pa.get("collate")) == (pb.get("base"), pb.get("collate")):
                after += _alter_domain(a, b, _domain_constraints(env, a), _domain_constraints(want, b))
    return before, after


# The parts of an ``aggregate`` row's detail, as the catalog description prints them, last first.
_AGGREGATE_PARTS = ("kind", "initcond", "combinefunc", "finalfunc", "stype", "sfunc")
_PARALLEL = {"s": "SAFE", "r": "RESTRICTED", "u": "UNSAFE"}


def _aggregate_parts(detail: str) -> dict[str, str]:
    """``... | parallel u | sfunc f stype t [finalfunc f] [combinefunc f] [initcond x] kind n`` as a dict."""
    parts = detail.split(" | ")
    out = {p.partition(" ")[0]: p.partition(" ")[2] for p in parts[:-1]}
    rest = " " + parts[-1]
    for key in _AGGREGATE_PARTS:  # a label whose value is NULL is printed bare
        head, found, value = (rest + " ").rpartition(f" {key} ")
        if found:
            rest = head
            if value.strip():
                out[key] = value.strip()
    return out


def _aggregate_definition(row: CatalogRow, *, replace: bool) -> str | None:
    """``CREATE [OR REPLACE] AGGREGATE`` for a normal aggregate; None for an ordered-set or hypothetical one, or
    one with other options."""
    parts = _aggregate_parts(row.detail)
    if parts.get("kind") != "n" or "sfunc" not in parts or "stype" not in parts or "options" in parts:
        return None  # options beyond these (moving mode, serialisation, sort operator ...) stay unmanaged drift
    options = [f"SFUNC = {parts['sfunc']}", f"STYPE = {parts['stype']}"]
    options += [f"{k.upper()} = {parts[k]}" for k in ("finalfunc", "combinefunc") if k in parts]
    options += [f"INITCOND = {literal(parts['initcond'])}"] if "initcond" in parts else []
    options += [f"PARALLEL = {_PARALLEL[parts['parallel']]}"] if parts.get("parallel") in _PARALLEL else []
    return f"CREATE {'OR REPLACE ' if replace else ''}AGGREGATE {row.object} ({', '.join(options)})"


def aggregate_statements(env: Sequence[CatalogRow], want: Sequence[CatalogRow]) -> tuple[list[str], list[str]]:
    """(created or replaced, dropped) aggregates, which migra does not diff. An ordered-set or hypothetical
    aggregate gets no statement: it stays unmanaged drift (``aggregate``)."""
    have = {r.object: r for r in env if r.kind == "aggregate"}
    need = {r.object: r for r in want if r.kind == "aggregate"}
    made = [
        _aggregate_definition(b, replace=name in have)
        for name, b in sorted(need.items())
        if have.get(name) is None or have[name].detail != b.detail
    ]
    return [m for m in made if m is not None], [f"DROP AGGREGATE {name}" for name in sorted(have.keys() - need.keys())]


def closing_statements(env: Sequence[CatalogRow], want: Sequence[CatalogRow], sqls: Sequence[str]) -> list[str]:
    """Statements (after ``sqls``) for the differences ``sqls`` leave that the reconciler knows how to close."""
    done = touched(sqls)
    dropped = {k for k, aspects in done.aspects.items() if ALL in aspects}
    kept = [  # recreated: its aspects are gone; a redefined view: its options are
        r
        for r in env
        if not (r.kind in ASPECTS and r.key in dropped) and not (r.kind == "options" and r.key in done.redefined_views)
    ]
    keys = {r.key for r in want}
    out: list[str] = []
    for new in want:  # migra creates a sequence without options: a new one gets the desired options after it
        if new.kind == "sequence" and new.key in done.bare_sequences:
            out.extend(_sequence(CatalogRow(new.kind, new.object, _NEW_SEQUENCE, new.key), new, keys))
    for a, b in differences(kept, want):
        row = a or b
        assert row is not None
        closer = _CLOSERS.get(row.kind)
        recreated = row.key in dropped or (row.kind == "options" and row.key in done.redefined_views)
        if closer is None or (not recreated and done.resolves(row)):
            continue
        out.extend(closer(a, b, keys))
    return out


def describe_options(env: EnvironmentConfig) -> DescribeOptions:
    """What the catalog description of ``env`` compares."""
    return DescribeOptions(
        env.schemas, env.exclude_schemas, env.privileges, env.compare_owners, env.ignore_column_order
    )


def plan_statements(
    current: Inspection,
    want: Inspection,
    described: Sequence[CatalogRow],
    wanted: Sequence[CatalogRow],
    *,
    privileges: bool,
) -> list[str]:
    """migra's statements, then ours for the differences they leave that we know how to close."""
    migra = alter_changed_policies(diff(current, want, privileges=privileges), described)
    before, after = ([one_statement(s) for s in part] for part in domain_statements(described, wanted))
    made, dropped = ([one_statement(s) for s in part] for part in aggregate_statements(described, wanted))
    at, fns = _after_prerequisites(migra)
    sqls = with_matview_indexes(migra[:at] + before + migra[at:fns] + made + migra[fns:] + after + dropped, wanted)
    return sqls + closing_statements(described, wanted, sqls)


RelName = tuple[str, str]  # (schema, name), unquoted: a name holding a dot aliases no other


def _single(sql: str) -> ast.Node | None:
    try:
        raws = parser.parse_sql(sql)
    except parser.ParseError:
        return None
    return raws[0].stmt if len(raws) == 1 else None


def _rel(rv: ast.RangeVar) -> RelName:
    return (str(rv.schemaname or "public"), str(rv.relname))


def _dropped_matviews(nodes: Sequence[ast.Node | None]) -> set[RelName]:
    out: set[RelName] = set()
    for node in nodes:
        if isinstance(node, ast.DropStmt) and node.removeType == ObjectType.OBJECT_MATVIEW:
            for name in node.objects or ():
                parts = [str(p.sval) for p in name]
                out.add((parts[0], parts[1]) if len(parts) == 2 else ("public", parts[-1]))
    return out


def _desired_indexes(wanted: Sequence[CatalogRow]) -> dict[RelName, list[tuple[RelName, str]]]:
    """The desired indexes by the relation they index: ((schema, index name), ``CREATE INDEX`` statement)."""
    out: dict[RelName, list[tuple[RelName, str]]] = {}
    for row in wanted:
        if row.kind != "index":
            continue
        sql = row.detail.split(" | ")[0]
        node = _single(sql)
        if isinstance(node, ast.IndexStmt) and node.relation is not None and node.idxname:
            rel = _rel(node.relation)
            out.setdefault(rel, []).append(((rel[0], str(node.idxname)), sql))
    return out


def with_matview_indexes(sqls: Sequence[str], wanted: Sequence[CatalogRow]) -> list[str]:
    """``sqls`` with a ``CREATE INDEX`` for each desired index of a materialized view that ``sqls`` drop and create
    again, right after its creation: migra recreates a changed materialized view without its indexes. An index the
    statements create themselves is left to them."""
    nodes = [_single(s) for s in sqls]
    dropped = _dropped_matviews(nodes)
    built = {
        (str(n.relation.schemaname or "public") if n.relation else "", str(n.idxname))
        for n in nodes
        if isinstance(n, ast.IndexStmt) and n.idxname
    }
    indexes = _desired_indexes(wanted) if dropped else {}
    out: list[str] = []
    for sql, node in zip(sqls, nodes, strict=True):
        out.append(sql)
        into = node.into.rel if isinstance(node, ast.CreateTableAsStmt) and node.into else None
        if isinstance(node, ast.CreateTableAsStmt) and node.objtype == ObjectType.OBJECT_MATVIEW and into:
            rel = _rel(into)
            if rel in dropped:
                out += [create for name, create in indexes.get(rel, ()) if name not in built]
    return out


# What must exist before a domain is created: its schema, an extension or a type its base type may be.
_PREREQUISITES = (ast.CreateSchemaStmt, ast.CreateExtensionStmt, ast.CreateEnumStmt, ast.CreateRangeStmt)


def _after_prerequisites(sqls: Sequence[str]) -> tuple[int, int]:
    """The positions just after the last statement of ``sqls`` that creates a schema, an extension or a type (where
    domains go), and just after the last that creates a function (where aggregates go)."""
    at = fns = 0
    for i, sql in enumerate(sqls):
        try:
            raws = parser.parse_sql(sql)
        except parser.ParseError:
            continue
        if any(isinstance(r.stmt, _PREREQUISITES) for r in raws):
            at = i + 1
        if any(isinstance(r.stmt, ast.CreateFunctionStmt) for r in raws):
            fns = i + 1
    return at, max(at, fns)


# pg_policy.polcmd -> the command CREATE POLICY names.
_POLICY_COMMANDS = {"r": "select", "a": "insert", "w": "update", "d": "delete", "*": "all"}


def _env_policy(rows: Sequence[CatalogRow], table: str, name: str) -> dict[str, str] | None:
    """The environment's policy ``name`` on ``table`` (raw ``schema.table``): its detail's parts by first word."""
    quoted = '"' + name.replace('"', '""') + '"'
    for r in rows:
        if r.kind == "policy" and r.key == table and (r.object.endswith("." + name) or r.object.endswith("." + quoted)):
            return {p.partition(" ")[0]: p.partition(" ")[2] for p in r.detail.split(" | ")}
    return None


def _alterable(create: ast.CreatePolicyStmt, env: dict[str, str] | None) -> bool:
    """ALTER POLICY can take the environment's policy to ``create``: same command, same permissive/restrictive, and
    no USING or WITH CHECK clause to remove (ALTER POLICY cannot remove one)."""
    if env is None or _POLICY_COMMANDS.get(env.get("for", "")) != create.cmd_name:
        return False
    if ("permissive" in env) != bool(create.permissive):
        return False
    return not ("using" in env and create.qual is None) and not ("check" in env and create.with_check is None)


def alter_changed_policies(sqls: Sequence[str], env: Sequence[CatalogRow]) -> list[str]:
    """migra's statements with each changed policy's DROP POLICY plus CREATE POLICY replaced by one ALTER POLICY
    (at the CREATE's place), so the table never goes without the policy. A policy whose command or
    permissive/restrictive changes keeps migra's drop and create."""
    parsed: list[ast.Node | None] = []
    for sql in sqls:
        try:
            raws = parser.parse_sql(sql)
        except parser.ParseError:
            raws = ()
        parsed.append(raws[0].stmt if len(raws) == 1 else None)
    drops: dict[str, int] = {}
    for i, node in enumerate(parsed):
        objects = node.objects if isinstance(node, ast.DropStmt) else None
        if (
            isinstance(node, ast.DropStmt)
            and node.removeType == ObjectType.OBJECT_POLICY
            and objects
            and len(objects) == 1
        ):
            drops[".".join(str(n.sval) for n in objects[0])] = i
    out = list(sqls)
    gone: set[int] = set()
    for i, node in enumerate(parsed):
        if not isinstance(node, ast.CreatePolicyStmt) or node.table is None:
            continue
        table = f"{node.table.schemaname or 'public'}.{node.table.relname}"
        dropped = drops.get(f"{table}.{node.policy_name}")
        if dropped is not None and dropped < i and _alterable(node, _env_policy(env, table, str(node.policy_name))):
            out[i] = str(RawStream()(_alter_policy(node)))
            gone.add(dropped)
    return [sql for i, sql in enumerate(out) if i not in gone]


def _alter_policy(create: ast.CreatePolicyStmt) -> ast.AlterPolicyStmt:
    return ast.AlterPolicyStmt(
        policy_name=create.policy_name,
        table=create.table,
        roles=create.roles,
        qual=create.qual,
        with_check=create.with_check,
    )


def owner_change(sql: str) -> bool:
    """Whether ``sql`` only changes an owner (``ALTER ... OWNER TO``): a vetting clone, restored without owners,
    cannot show what such a statement changes."""
    try:
        raws = parser.parse_sql(sql)
    except parser.ParseError:
        return False
    stmt = raws[0].stmt if len(raws) == 1 else None
    if isinstance(stmt, ast.AlterTableStmt):
        cmds = [c for c in stmt.cmds or () if isinstance(c, ast.AlterTableCmd)]
        return bool(cmds) and all(c.subtype == AlterTableType.AT_ChangeOwner for c in cmds)
    return isinstance(stmt, ast.AlterOwnerStmt)
