"""Markdown documentation of the desired schema, read from the catalog of its scratch build.

Schemas; tables with their columns (type, nullability, default, comment), keys, indexes, foreign keys, CHECK
constraints, triggers, row-level security and every policy; views and materialized views; functions; enums; and
an entity-relationship diagram in Mermaid. The output depends only on the schema (sorted by name, no timestamps,
no revision), so ``--check`` can compare it byte for byte with the committed file.

Names, comments and expressions come from desired-state authors: in table cells pipes and line breaks are escaped
and angle brackets written as entities, so a comment cannot break the page's structure or inject HTML.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .db import Connection, connect, database_errors
from .model import DesiredState
from .scratch import ScratchServer

_USER_SCHEMAS = "n.nspname not like 'pg\\_%' and n.nspname <> 'information_schema'"
_NOT_EXTENSION = "not exists (select 1 from pg_depend d where d.objid = {oid} and d.deptype = 'e')"

_QUERIES: dict[str, str] = {
    "schemas": f"""
        select n.nspname, coalesce(obj_description(n.oid, 'pg_namespace'), '')
        from pg_namespace n where {_USER_SCHEMAS} and {_NOT_EXTENSION.format(oid="n.oid")}
        order by 1""",
    "tables": f"""
        select n.nspname, c.relname, c.relkind::text, c.relrowsecurity, c.relforcerowsecurity,
               coalesce(obj_description(c.oid, 'pg_class'), ''), c.oid
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('r', 'p') and {_USER_SCHEMAS} and {_NOT_EXTENSION.format(oid="c.oid")}
        order by 1, 2""",
    "columns": """
        select a.attrelid, a.attname, format_type(a.atttypid, a.atttypmod), a.attnotnull,
               coalesce(pg_get_expr(d.adbin, d.adrelid), ''), a.attidentity::text, a.attgenerated::text,
               coalesce(col_description(a.attrelid, a.attnum), '')
        from pg_attribute a left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
        where a.attnum > 0 and not a.attisdropped order by a.attrelid, a.attnum""",
    "constraints": """
        select c.conrelid, c.contype::text, c.conname, pg_get_constraintdef(c.oid), c.confrelid
        from pg_constraint c where c.conrelid <> 0 and c.contype in ('p', 'u', 'f', 'c', 'x')
        order by c.conrelid, c.contype, c.conname""",
    "indexes": """
        select i.indrelid, ic.relname, pg_get_indexdef(i.indexrelid)
        from pg_index i join pg_class ic on ic.oid = i.indexrelid order by i.indrelid, ic.relname""",
    "triggers": """
        select t.tgrelid, t.tgname, pg_get_triggerdef(t.oid) from pg_trigger t
        where not t.tgisinternal order by t.tgrelid, t.tgname""",
    "policies": """
        select p.polrelid, p.polname, case p.polcmd when 'r' then 'SELECT' when 'a' then 'INSERT'
               when 'w' then 'UPDATE' when 'd' then 'DELETE' else 'ALL' end,
               case when p.polpermissive then 'permissive' else 'restrictive' end,
               case when p.polroles = '{0}' then 'public'
                    else array_to_string(array(select rolname from pg_roles where oid = any(p.polroles)
                                               order by rolname), ', ') end,
               coalesce(pg_get_expr(p.polqual, p.polrelid), ''), coalesce(pg_get_expr(p.polwithcheck, p.polrelid), '')
        from pg_policy p order by p.polrelid, p.polname""",
    "views": f"""
        select n.nspname, c.relname, c.relkind::text, pg_get_viewdef(c.oid, true),
               coalesce(obj_description(c.oid, 'pg_class'), '')
        from pg_class c join pg_namespace n on n.oid = c.relnamespace
        where c.relkind in ('v', 'm') and {_USER_SCHEMAS} and {_NOT_EXTENSION.format(oid="c.oid")}
        order by 1, 2""",
    "functions": f"""
        select n.nspname, p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid),
               l.lanname, case p.provolatile when 'i' then 'immutable' when 's' then 'stable' else 'volatile' end,
               p.prosecdef, coalesce(obj_description(p.oid, 'pg_proc'), '')
        from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
        where {_USER_SCHEMAS} and {_NOT_EXTENSION.format(oid="p.oid")}
        order by 1, 2, 3""",
    "enums": f"""
        select n.nspname, t.typname, array_to_string(array(select e.enumlabel from pg_enum e
               where e.enumtypid = t.oid order by e.enumsortorder), ', '),
               coalesce(obj_description(t.oid, 'pg_type'), '')
        from pg_type t join pg_namespace n on n.oid = t.typnamespace
        where t.typtype = 'e' and {_USER_SCHEMAS} and {_NOT_EXTENSION.format(oid="t.oid")}
        order by 1, 2""",
}


def read_catalog(dsn: str) -> dict[str, list[tuple[Any, ...]]]:
    """The rows of every catalog query, read from the database at ``dsn``."""
    what = "reading the catalog of the desired state"
    with database_errors(what), connect(dsn, what=what) as conn:
        return _read(conn)


def _read(conn: Connection) -> dict[str, list[tuple[Any, ...]]]:
    return {name: list(conn.execute(sql.encode())) for name, sql in _QUERIES.items()}


def generate_docs(scratch: ScratchServer, desired: DesiredState) -> str:
    """The Markdown documentation of ``desired``, built (or reused) in a scratch database."""
    return render_markdown(read_catalog(scratch.build_desired(desired).dsn))


# -- rendering --------------------------------------------------------------------------------------------------
def _one_line(text: object) -> str:
    return re.sub(r"\s*\n\s*", " ", str(text)).replace("|", "\\|").strip()


def cell(text: object) -> str:
    """``text`` safe inside a Markdown table cell: on one line, pipes escaped, no HTML."""
    return _one_line(str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def code(text: object) -> str:
    """``text`` as inline code inside a table cell (a code span shows HTML as text; empty stays empty)."""
    s = _one_line(text).replace("`", "'")
    return f"`{s}`" if s else ""


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    out += ["| " + " | ".join(r) + " |" for r in rows]
    return [*out, ""]


def _by_relation(rows: Sequence[tuple[Any, ...]]) -> dict[Any, list[tuple[Any, ...]]]:
    grouped: dict[Any, list[tuple[Any, ...]]] = defaultdict(list)
    for r in rows:
        grouped[r[0]].append(r[1:])
    return grouped


def render_markdown(cat: dict[str, list[tuple[Any, ...]]]) -> str:
    lines = [
        "# Database schema",
        "",
        "Generated by `reconciler docs` from the desired state; do not edit by hand "
        "(`reconciler docs --check` fails when this file is out of date).",
        "",
        "## Schemas",
        "",
        *_table(["schema", "comment"], [[code(s), cell(c)] for s, c in cat["schemas"]]),
        "## Entity-relationship diagram",
        "",
        *_mermaid(cat),
        "## Tables",
        "",
    ]
    for table in cat["tables"]:
        lines += _table_section(table, cat)
    lines += _views(cat["views"]) + _functions(cat["functions"]) + _enums(cat["enums"])
    return "\n".join(lines).rstrip("\n") + "\n"


def _column_rows(cols: Sequence[tuple[Any, ...]]) -> list[list[str]]:
    rows = []
    for name, typ, notnull, default, identity, generated, comment in cols:
        if identity:
            default = "generated " + ("always" if identity == "a" else "by default") + " as identity"
        elif generated:
            default = f"generated always as ({default}) stored"
        rows.append([code(name), code(typ), "no" if notnull else "yes", code(default), cell(comment)])
    return rows


def _table_section(table: tuple[Any, ...], cat: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    schema, name, kind, rls, forced, comment, oid = table
    title = f"### `{schema}.{name}`" + (" (partitioned)" if kind == "p" else "")
    out = [title, ""] + ([cell(comment), ""] if comment else [])
    out += _table(["column", "type", "nullable", "default", "comment"], _column_rows(_by_relation(cat["columns"])[oid]))
    kinds = {"p": "primary key", "u": "unique", "f": "foreign key", "c": "check", "x": "exclusion"}
    cons = [[kinds[k], code(n), code(d)] for k, n, d, _ in _by_relation(cat["constraints"])[oid]]
    if cons:
        out += ["**Constraints**", "", *_table(["kind", "name", "definition"], cons)]
    idx = [[code(n), code(d)] for n, d in _by_relation(cat["indexes"])[oid]]
    if idx:
        out += ["**Indexes**", "", *_table(["name", "definition"], idx)]
    trg = [[code(n), code(d)] for n, d in _by_relation(cat["triggers"])[oid]]
    if trg:
        out += ["**Triggers**", "", *_table(["name", "definition"], trg)]
    status = "enabled" + (", forced for the owner" if forced else "") if rls else "disabled"
    out += [f"**Row-level security**: {status}", ""]
    pols = [[code(n), c, p, cell(r), code(u), code(w)] for n, c, p, r, u, w in _by_relation(cat["policies"])[oid]]
    if pols:
        out += _table(["policy", "command", "kind", "roles", "using", "with check"], pols)
    return out


def _views(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    out = ["## Views", ""]
    if not rows:
        return [*out, "None.", ""]
    for schema, name, kind, definition, comment in rows:
        what = "materialized view" if kind == "m" else "view"
        out += [f"### `{schema}.{name}` ({what})", ""] + ([cell(comment), ""] if comment else [])
        out += ["```sql", definition.strip(), "```", ""]
    return out


def _functions(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    table = [
        [code(f"{s}.{n}({a})"), code(r), cell(lang), vol + (", security definer" if sd else ""), cell(c)]
        for s, n, a, r, lang, vol, sd, c in rows
    ]
    return ["## Functions", "", *_table(["function", "returns", "language", "volatility", "comment"], table)]


def _enums(rows: Sequence[tuple[Any, ...]]) -> list[str]:
    table = [[code(f"{s}.{n}"), cell(labels), cell(c)] for s, n, labels, c in rows]
    return ["## Enums", "", *_table(["type", "values", "comment"], table)]


def _entity(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def _mermaid(cat: dict[str, list[tuple[Any, ...]]]) -> list[str]:
    names = {t[6]: f"{t[0]}.{t[1]}" for t in cat["tables"]}
    columns = _by_relation(cat["columns"])
    out = ["```mermaid", "erDiagram"]
    for oid, name in names.items():
        out.append(f"    {_entity(name)} {{")
        out += [f"        {_entity(typ.split('(')[0])} {_entity(col)}" for col, typ, *_ in columns[oid]]
        out.append("    }")
    out += list(_relations(cat, names))
    return [*out, "```", ""]


def _relations(cat: dict[str, list[tuple[Any, ...]]], names: dict[Any, str]) -> Iterator[str]:
    for oid, kind, conname, _, target in cat["constraints"]:
        if kind == "f" and oid in names and target in names:
            yield f'    {_entity(names[target])} ||--o{{ {_entity(names[oid])} : "{_entity(conname)}"'


@dataclass(frozen=True)
class DocsOutcome:
    """What ``reconciler docs`` did: the file, whether it was written, whether it is (now) current."""

    path: str
    written: bool
    current: bool

    def to_json(self) -> dict[str, Any]:
        return {"path": self.path, "written": self.written, "current": self.current}


def is_current(path: str | Path, text: str) -> bool:
    p = Path(path)
    return p.is_file() and p.read_text(encoding="utf-8") == text


def write_docs(path: str | Path, text: str, *, check: bool) -> DocsOutcome:
    """Compare (``check``) or write ``text`` to ``path``; a file already current is not rewritten."""
    if is_current(path, text):
        return DocsOutcome(str(path), written=False, current=True)
    if check:
        return DocsOutcome(str(path), written=False, current=False)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(text, encoding="utf-8")
    return DocsOutcome(str(path), written=True, current=True)
