"""Figures of the environment's tables, for data-aware hazards: one catalog query per plan.

For every relation a plan touches: the planner's row estimate (``pg_class.reltuples``), the total size with indexes
and TOAST (``pg_total_relation_size``) and the size of the rows alone (``pg_relation_size``: 0 means certainly
empty, whatever the estimate says), summed over the partitions of a partitioned table. For an index, the figures
of its table. Besides: column types (as ``format_type`` prints them with only ``pg_catalog`` on the search path,
so user types come out schema-qualified), the valid and the INVALID indexes, the views that depend on it, and
whether it has grants.

Also here: the INVALID indexes of an environment (left by a failed ``CREATE INDEX CONCURRENTLY``), which the
environment's inspection must not count as existing.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta

from .db import Connection, connect, database_errors, quote_ident
from .hazards.callgraph import CallGraph, body_refs
from .inspect import Inspection
from .model import QualifiedName, TableStats

_STATS_SQL = """
with q(nsp, rel) as (select * from unnest(%(nsp)s::text[], %(rel)s::text[]))
select q.nsp, q.rel, c.relkind::text,
       s.rows_known, s.rows, s.total, s.heap,
       coalesce((select json_object_agg(a.attname, format_type(a.atttypid, a.atttypmod) order by a.attnum)
                 from pg_attribute a
                 where a.attrelid = t.oid and a.attnum > 0 and not a.attisdropped), '{}'::json) as columns,
       array(select ic.relname::text from pg_index i join pg_class ic on ic.oid = i.indexrelid
             where i.indrelid = t.oid and i.indisvalid order by ic.relname) as indexes,
       array(select ic.relname::text from pg_index i join pg_class ic on ic.oid = i.indexrelid
             where i.indrelid = t.oid and not i.indisvalid order by ic.relname) as invalid_indexes,
       array(select distinct vn.nspname || '.' || v.relname
             from pg_depend d
             join pg_rewrite r on r.oid = d.objid
             join pg_class v on v.oid = r.ev_class
             join pg_namespace vn on vn.oid = v.relnamespace
             where d.classid = 'pg_rewrite'::regclass and d.refclassid = 'pg_class'::regclass
               and d.refobjid = t.oid and v.oid <> t.oid) as dependants,
       t.relacl is not null as has_grants,
       ix.indisunique as unique_index
from q
join pg_namespace n on n.nspname = q.nsp
join pg_class c on c.relnamespace = n.oid and c.relname = q.rel
left join pg_index ix on ix.indexrelid = c.oid
join pg_class t on t.oid = coalesce(ix.indrelid, c.oid)
cross join lateral (
    select array(select t.oid where t.relkind <> 'p'
                 union all
                 select pt.relid from pg_partition_tree(t.oid) pt where pt.isleaf and t.relkind = 'p') as oids
) leaves
cross join lateral (
    select coalesce(bool_and(p.reltuples >= 0 or pg_relation_size(p.oid) = 0), true) as rows_known,
           coalesce(sum(greatest(p.reltuples, 0)), 0)::bigint as rows,
           coalesce(sum(pg_total_relation_size(p.oid)), 0)::bigint as total,
           coalesce(sum(pg_relation_size(p.oid)), 0)::bigint as heap
    from pg_class p where p.oid = any(leaves.oids)
) s
"""

_INVALID_SQL = """
select n.nspname::text, c.relname::text
from pg_index i
join pg_class c on c.oid = i.indexrelid
join pg_namespace n on n.oid = c.relnamespace
where not i.indisvalid and c.relkind = 'i'
"""


def query_table_stats(conn: Connection, names: Iterable[QualifiedName]) -> dict[QualifiedName, TableStats]:
    """Figures of the relations ``names`` that exist, keyed by (schema, name) as the catalog spells them: never a
    dotted string, which a schema named ``a.b`` could alias (a desired-state author's attack)."""
    pairs = list(dict.fromkeys(names))
    if not pairs:
        return {}
    with conn.transaction():
        conn.execute("set local search_path = pg_catalog")
        rows = conn.execute(
            _STATS_SQL.encode(), {"nsp": [p[0] for p in pairs], "rel": [p[1] for p in pairs]}
        ).fetchall()
    out: dict[QualifiedName, TableStats] = {}
    for nsp, rel, kind, rows_known, nrows, total, heap, columns, indexes, invalid, dependants, grants, unique in rows:
        out[QualifiedName(str(nsp), str(rel))] = TableStats(
            rows=int(nrows) if rows_known else None,
            bytes=int(total),
            heap_bytes=int(heap),
            kind=str(kind),
            columns={str(k): str(v) for k, v in (columns or {}).items()},
            indexes=tuple(indexes or ()),
            invalid_indexes=tuple(invalid or ()),
            dependants=tuple(sorted(dependants or ())),
            has_grants=bool(grants),
            unique_index=None if unique is None else bool(unique),
        )
    return out


def read_table_stats(
    dsn: str, names: Iterable[QualifiedName], *, what: str, connect_timeout: timedelta = timedelta(seconds=10)
) -> dict[QualifiedName, TableStats]:
    """Connect to ``dsn`` and read the figures of ``names`` with one catalog query."""
    wanted = list(names)
    if not wanted:
        return {}
    with database_errors(what), connect(dsn, what=what, connect_timeout=connect_timeout, autocommit=True) as conn:
        return query_table_stats(conn, wanted)


def invalid_indexes(conn: Connection) -> set[tuple[str, str]]:
    """(schema, name) of every INVALID index (a failed concurrent build leaves one behind)."""
    rows = conn.execute(_INVALID_SQL.encode()).fetchall()
    if not conn.autocommit:
        conn.rollback()
    return {(str(s), str(n)) for s, n in rows}


def without_indexes(inspection: Inspection, names: set[tuple[str, str]]) -> Inspection:
    """A shallow copy of ``inspection`` in which the indexes ``names`` do not exist.

    An INVALID index is not used by queries; counted as existing, it would make an environment whose concurrent
    index build failed look in sync. Without it, the diff builds the index again (and the online-safe rewrite
    drops the invalid one first).
    """
    if not names:
        return inspection
    out = copy.copy(inspection)
    out.indexes = type(inspection.indexes)(
        (k, v) for k, v in inspection.indexes.items() if (v.schema, v.name) not in names
    )
    return out


_RESOLVE_SQL = """
select n.nspname::text, c.relname::text
from pg_catalog.pg_class c join pg_catalog.pg_namespace n on n.oid = c.relnamespace
where c.oid = pg_catalog.to_regclass(%s)
"""


def row_counts(
    dsn: str,
    figures: Mapping[str, TableStats],
    *,
    what: str,
    exact_below_bytes: int = 8 * 1024 * 1024,
    connect_timeout: timedelta = timedelta(seconds=10),
) -> dict[str, tuple[int | None, bool]]:
    """Rows of each table of ``figures`` as ``(count, exact)``: counted with ``count(*)`` when the table is small
    enough for that to be cheap (under ``exact_below_bytes``), else the planner's estimate (``exact`` False).
    A table that is gone since the figures were read keeps its estimate. ``figures`` is keyed by the text of each
    table's :class:`~reconciler.model.QualifiedName` (as plans store it), which quotes what needs quoting: the
    server resolves that text, so ``"a.b".c`` and ``a."b.c"`` stay apart."""
    out: dict[str, tuple[int | None, bool]] = {name: (st.rows, False) for name, st in figures.items()}
    cheap = [name for name, st in figures.items() if st.bytes < exact_below_bytes]
    if not cheap:
        return out
    with database_errors(what), connect(dsn, what=what, connect_timeout=connect_timeout, autocommit=True) as conn:
        for name in cheap:
            with conn.transaction():
                conn.execute("set local statement_timeout = '5s'")
                found = conn.execute(_RESOLVE_SQL.encode(), (name,)).fetchone()
                if found and found[0] is not None:
                    sql = f"select count(*) from {quote_ident(str(found[0]))}.{quote_ident(str(found[1]))}"
                    row = conn.execute(sql.encode()).fetchone()
                    out[name] = (int(row[0]) if row else 0, True)
    return out


_BUILTINS_SQL = "select distinct proname::text from pg_catalog.pg_proc where pronamespace = 'pg_catalog'::regnamespace"

# A SQL-standard body (``RETURN ...``, ``BEGIN ATOMIC ... END``) has an empty prosrc: its function's whole
# definition is read instead, which parses as SQL with the body in it.
_GRAPH_FUNCTIONS_SQL = """
select p.oid::bigint, n.nspname::text, p.proname::text, l.lanname::text,
       case when p.prosqlbody is not null then pg_get_functiondef(p.oid) else coalesce(p.prosrc, '') end, p.prosecdef,
       p.oid::regprocedure::text
from pg_proc p join pg_namespace n on n.oid = p.pronamespace join pg_language l on l.oid = p.prolang
where n.nspname not in ('pg_catalog', 'information_schema') and l.lanname not in ('internal', 'c')
"""
_GRAPH_OPERATORS_SQL = """
select o.oprname::text, o.oprcode::oid::bigint from pg_operator o
where o.oprnamespace <> 'pg_catalog'::regnamespace and o.oprcode <> 0
"""
_GRAPH_CASTS_SQL = """
select t.typname::text, c.castfunc::bigint from pg_cast c join pg_type t on t.oid = c.casttarget
join pg_proc p on p.oid = c.castfunc where p.pronamespace <> 'pg_catalog'::regnamespace
"""
_GUARDS_SQL = """
select 'policy ' || quote_ident(pol.polname) || ' on ' || pol.polrelid::regclass::text,
       array(select d.refobjid::bigint from pg_depend d where d.classid = 'pg_policy'::regclass
             and d.objid = pol.oid and d.refclassid = 'pg_proc'::regclass
             union
             select o.oprcode::oid::bigint from pg_depend d join pg_operator o on o.oid = d.refobjid
             where d.classid = 'pg_policy'::regclass and d.objid = pol.oid
               and d.refclassid = 'pg_operator'::regclass)
from pg_policy pol
union all
select 'trigger ' || quote_ident(t.tgname) || ' on ' || t.tgrelid::regclass::text, array[t.tgfoid::bigint]
from pg_trigger t where not t.tgisinternal
"""


def _read_graph(conn: Connection) -> tuple[CallGraph, dict[int, str], list[tuple[str, list[int]]]]:
    """The call graph of the environment's functions, its SECURITY DEFINER functions (oid -> signature), and
    its policies and triggers with the functions each uses."""
    graph, definers = CallGraph(), {}
    for oid, nsp, name, lang, src, secdef, signature in conn.execute(_GRAPH_FUNCTIONS_SQL.encode()).fetchall():
        graph.names[int(oid)] = QualifiedName(str(nsp), str(name))
        graph.bodies[int(oid)] = body_refs(str(lang), str(src))
        if secdef:
            definers[int(oid)] = str(signature)
    for name, fn in conn.execute(_GRAPH_OPERATORS_SQL.encode()).fetchall():
        graph.operators.setdefault(str(name), set()).add(int(fn))
    for name, fn in conn.execute(_GRAPH_CASTS_SQL.encode()).fetchall():
        graph.casts.setdefault(str(name), set()).add(int(fn))
    guards = [(str(what), [int(f) for f in fns or ()]) for what, fns in conn.execute(_GUARDS_SQL.encode()).fetchall()]
    return graph, definers, guards


def _users(
    graph: CallGraph, definers: Mapping[int, str], guards: list[tuple[str, list[int]]], fn: QualifiedName
) -> tuple[str, ...]:
    """What uses ``fn``, directly or through other functions, operators and casts (named on the way)."""
    via = graph.callers(graph.oids_of(fn))

    def through(oid: int) -> str:
        path = graph.path(via, oid)[:-1]
        return f" (through {' -> '.join(str(p) for p in path)})" if path else ""

    out = {f"{what}{through(f)}" for what, fns in guards for f in fns if f in via}
    out |= {f"SECURITY DEFINER function {sig}{through(via[oid])}" for oid, sig in definers.items()
            if oid in via and via[oid] != oid}  # fmt: skip
    return tuple(sorted(out))


def query_code_facts(
    conn: Connection, functions: Iterable[QualifiedName]
) -> tuple[frozenset[str], dict[QualifiedName, tuple[str, ...]]]:
    """The names of pg_catalog's functions (an unqualified call of one is built-in), and for each of
    ``functions`` ((schema, name) that a plan changes) what in the environment uses it, also through other
    functions, operators and casts (:mod:`.hazards.callgraph`): policies (``pg_depend``), triggers, and
    SECURITY DEFINER functions."""
    wanted = list(dict.fromkeys(functions))
    with conn.transaction():
        conn.execute("set local search_path = pg_catalog")
        builtins = frozenset(str(r[0]) for r in conn.execute(_BUILTINS_SQL.encode()).fetchall())
        if not wanted:
            return builtins, {}
        graph, definers, guards = _read_graph(conn)
    users = {fn: _users(graph, definers, guards, fn) for fn in wanted}
    return builtins, {fn: u for fn, u in users.items() if u}


@dataclass(frozen=True)
class Figures:
    """What the hazard checks read from an environment's catalog for one plan (one connection)."""

    tables: dict[QualifiedName, TableStats]
    builtin_functions: frozenset[str] | None = None
    function_users: dict[QualifiedName, tuple[str, ...]] = field(default_factory=dict)


def read_figures(
    dsn: str,
    relations: Iterable[QualifiedName],
    functions: Iterable[QualifiedName],
    *,
    what: str,
    connect_timeout: timedelta = timedelta(seconds=10),
) -> Figures:
    """Table figures of ``relations`` and the code facts of ``functions``, on one connection."""
    with database_errors(what), connect(dsn, what=what, connect_timeout=connect_timeout, autocommit=True) as conn:
        tables = query_table_stats(conn, list(relations))
        builtins, users = query_code_facts(conn, functions)
    return Figures(tables, builtins, users)
