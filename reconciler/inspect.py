"""The only module that imports schemainspect: inspect a database's schema once, filter it per environment."""

from __future__ import annotations

import copy
import functools
import importlib.util
import sys
import threading
import warnings
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from .catalog import (
    BUILTIN_ACLS,
    FUNCTION_SOURCE,
    MANAGED_SCHEMAS_WHERE,
    RANGE_OPCLASS,
    UNLISTED_KINDS,
    UNSCHEMED_COMMENTS,
    DescribeOptions,
    describe,
    extend_fingerprint,
)
from .db import Connection, connect, database_errors, engine_for, fetch_all

Inspection = Any  # schemainspect.pg.obj.PostgreSQL; untyped upstream

# Schemas that are never part of a managed schema.
ALWAYS_EXCLUDED = ("pg_catalog", "information_schema", "pg_toast")


def inspect_database(dsn: str, *, what: str, connect_timeout: timedelta = timedelta(seconds=10)) -> Inspection:
    """Read the whole schema of the database at ``dsn`` with schemainspect."""
    tolerant = _schemainspect()[1]
    engine = engine_for(dsn, what=what, connect_timeout=connect_timeout)
    try:
        with database_errors(what), engine.connect() as conn:
            return tolerant(conn)
    finally:
        engine.dispose()


# The indexes and constraints that PostgreSQL creates on a partition because its parent has them (attached to a
# parent index, or with a parent constraint): creating the partition, or the parent's index, creates them too.
_INHERITED_SQL = """
select 'index' as kind, n.nspname as schema, c.relname as name
  from pg_inherits i join pg_class c on c.oid = i.inhrelid join pg_namespace n on n.oid = c.relnamespace
 where c.relkind in ('i', 'I')
union all
select 'constraint', n.nspname, k.conname
  from pg_constraint k join pg_namespace n on n.oid = k.connamespace
 where k.conparentid <> 0 and k.conrelid <> 0
"""


# The functions with a SQL-standard body (``RETURN ...``, ``BEGIN ATOMIC ... END``), and that body deparsed.
_SQL_BODIES_SQL = """
select n.nspname as schema, p.proname as name, pg_get_function_identity_arguments(p.oid) as arguments,
       pg_get_function_sqlbody(p.oid) as body
  from pg_proc p join pg_namespace n on n.oid = p.pronamespace
 where p.prosqlbody is not null
"""


def _with_sql_bodies(functions: Iterable[Any], rows: Iterable[Any]) -> None:
    """Give each function with a SQL-standard body that body as its definition. schemainspect reads ``prosrc``,
    which PostgreSQL leaves empty for such a body, so migra saw two different bodies as equal and planned nothing.
    (migra creates a function from ``pg_get_functiondef``, which prints the body: only the comparison was blind.)"""
    bodies = {(r.schema, r.name, r.arguments): r.body for r in rows}
    for function in functions:
        body = bodies.get((function.schema, function.name, function.identity_arguments))
        if body is not None:
            function.definition = body


_IMPORTING = threading.Lock()
"""Held while schemainspect is imported: a plan imports it from two threads at once (desired and environment)."""


def import_schemainspect() -> None:
    """:func:`_import_schemainspect`, once per process, whichever thread asks first."""
    with _IMPORTING:
        _import_schemainspect()


@functools.cache
def _import_schemainspect() -> None:
    """Import schemainspect (and so make migra's import cheap), in a fraction of its usual time.

    On import, schemainspect reads its SQL files through ``misc.external_caller``, which calls ``inspect.stack()``:
    that reads the source of every frame and scans every loaded module, 17 times; in a process that has loaded the
    CLI it takes seconds. Its ``misc`` module is loaded first here, and its ``external_caller`` replaced by one
    that walks the frames to the same answer (the first module that is not ``misc``) without reading any source.
    """
    with warnings.catch_warnings():
        # schemainspect imports pkg_resources, which warns on import with setuptools 80 and 81.
        warnings.simplefilter("ignore", UserWarning)
        spec = importlib.util.find_spec("schemainspect")
        if "schemainspect.misc" not in sys.modules and spec is not None and spec.origin:
            misc_spec = importlib.util.spec_from_file_location(
                "schemainspect.misc", Path(spec.origin).with_name("misc.py")
            )
            if misc_spec is not None and misc_spec.loader is not None:
                misc = importlib.util.module_from_spec(misc_spec)
                sys.modules["schemainspect.misc"] = misc
                misc_spec.loader.exec_module(misc)
                misc.__dict__["external_caller"] = _external_caller
        import schemainspect.pg.obj  # noqa: F401

        # As a regular import would: the package names its submodule (migra reads ``schemainspect.misc``).
        sys.modules["schemainspect"].__dict__.setdefault("misc", sys.modules["schemainspect.misc"])


def _external_caller() -> str:
    """The name of the first module on the stack that is not ``schemainspect.misc`` (what schemainspect's own
    ``external_caller`` finds with ``inspect.stack()``)."""
    frame = sys._getframe(1)
    while frame.f_back is not None and frame.f_globals.get("__name__") == "schemainspect.misc":
        frame = frame.f_back
    return str(frame.f_globals["__name__"])


def _schemainspect() -> tuple[str, Any]:
    """:func:`_tolerant_inspector`, made once per process, whichever thread asks first."""
    with _IMPORTING:
        return _tolerant_inspector()


@functools.cache
def _tolerant_inspector() -> tuple[str, Any]:
    """schemainspect's PROPS and our tolerant inspector class, imported on first use: the import alone takes about
    half a second, which commands that never inspect (and every CLI start) should not pay."""
    _import_schemainspect()
    from schemainspect.pg.obj import PROPS, PostgreSQL

    class Tolerant(PostgreSQL):  # type: ignore[misc]
        """schemainspect, minus the constraints of relations it does not model (a foreign table's CHECK
        constraint made it raise KeyError). Those constraints are left to the catalog description, which reports
        them as unmanaged drift when they differ."""

        def load_all(self) -> None:
            """Also read what schemainspect does not: ``inherited_indexes`` and ``inherited_constraints``, the
            ``(schema, name)`` of each index and constraint of a partition that comes from its parent."""
            from sqlalchemy import text

            super().load_all()
            rows = list(self.execute(text(_INHERITED_SQL)))
            self.inherited_indexes = frozenset((r.schema, r.name) for r in rows if r.kind == "index")
            self.inherited_constraints = frozenset((r.schema, r.name) for r in rows if r.kind == "constraint")
            _with_sql_bodies(self.functions.values(), self.execute(text(_SQL_BODIES_SQL)))

        def load_all_relations(self) -> None:
            try:
                super().load_all_relations()
            except KeyError:
                unknown = [k for k, c in self.constraints.items() if c.quoted_full_table_name not in self.relations]
                if not unknown:
                    raise
                for k in unknown:
                    del self.constraints[k]
                for c in self.constraints.values():
                    self.relations[c.quoted_full_table_name].constraints[c.quoted_full_name] = c

        def __reduce__(self) -> tuple[Any, ...]:  # the class is made here, so pickle rebuilds it by a function
            return _restored, (self.__dict__,)

    return str(PROPS), Tolerant


def _restored(state: dict[str, Any]) -> Inspection:
    out = object.__new__(_schemainspect()[1])
    out.__dict__.update(state)
    return out


def portable(inspection: Inspection) -> Inspection:
    """A shallow copy of ``inspection`` without its (closed) connection, engine and dialect: it can be pickled."""
    out = copy.copy(inspection)
    out.c = out.engine = None
    out.dialect = "postgresql"
    return out


def filtered(inspection: Inspection, schemas: Iterable[str] = (), exclude_schemas: Iterable[str] = ()) -> Inspection:
    """A shallow copy of ``inspection`` keeping only objects in ``schemas`` (all if empty), minus excluded ones.

    The original is left untouched, so one inspection of the desired state serves every environment.
    """
    keep = set(schemas)
    drop = set(exclude_schemas)
    if not keep and not drop:
        return inspection
    out = copy.copy(inspection)
    for prop in _schemainspect()[0].split():
        items = getattr(inspection, prop)
        setattr(
            out,
            prop,
            type(items)((k, v) for k, v in items.items() if (not keep or v.schema in keep) and v.schema not in drop),
        )
    return out


# -- schema fingerprint -----------------------------------------------------------------------------
#
# One catalog query lists every object of the managed schemas as (kind, identity, definition) rows, in a canonical
# order; the fingerprint is a sha256 over that listing. Object ids, column numbers (a column is listed by its
# position among the table's live columns, and keys and indexes name their columns), owners and the planner's
# statistics (not the targets that pg_dump prints) are left out, so the fingerprint changes when the schema changes (by the reconciler or by hand) and not
# otherwise, and two databases whose schemas ``pg_dump`` prints alike fingerprint alike (a dropped column's gap in
# the column numbers does not count).
# Grants are part of it only when the environment manages privileges. Extension members are represented by their
# extension (name and version).
#
# Speed: a fleet sweep reads it once per environment on a fresh session, where every relation a deparse function
# opens (pg_get_indexdef, pg_get_constraintdef, pg_get_expr with a relation) costs a relation-cache load. So plain
# indexes, primary/unique/foreign keys and column defaults are listed from their catalog columns (the whole
# pg_index / pg_constraint row minus its object ids, with names for the objects those ids point to), and only what
# needs deparsing is deparsed: expression or partial indexes and those with an operator class of the database's
# own, check and exclusion constraints, generated columns, views, triggers, policies. Comments are looked up only
# for objects outside the built-in range (oid 16384 on), plus schemas.

_ROWS_SQL = (
    (
        r"""
with ns as (
    select n.oid, n.nspname, n.nspacl
    from pg_namespace n
"""
        + MANAGED_SCHEMAS_WHERE
        + r"""),
ext as (select classid, objid from pg_depend where deptype = 'e'),
rel as (
    select c.oid, c.relname, c.relkind, c.relacl, ns.nspname,
           quote_ident(ns.nspname) || '.' || quote_ident(c.relname) as ident
    from pg_class c join ns on ns.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f', 'c')
      and not exists (select 1 from ext where ext.classid = 'pg_class'::regclass and ext.objid = c.oid)
),
fn as (
    select p.*, ns.nspname,
           quote_ident(ns.nspname) || '.' || quote_ident(p.proname)
             || '(' || pg_get_function_identity_arguments(p.oid) || ')' as ident
    from pg_proc p join ns on ns.oid = p.pronamespace
    where not exists (select 1 from ext where ext.classid = 'pg_proc'::regclass and ext.objid = p.oid)
),
typ as (
    select t.*, ns.nspname, quote_ident(ns.nspname) || '.' || quote_ident(t.typname) as ident
    from pg_type t join ns on ns.oid = t.typnamespace
    where t.typtype in ('e', 'd', 'r', 'b', 'm')
      and not exists (select 1 from ext where ext.classid = 'pg_type'::regclass and ext.objid = t.oid)
      and not (t.typtype = 'b' and t.typcategory = 'A')
)
select kind, ident, def from (
    select 'schema' as kind, quote_ident(nspname) as ident,
           case when %(privileges)s then coalesce(nspacl::text, '') else '' end as def
    from ns
    where not exists (select 1 from ext where ext.classid = 'pg_namespace'::regclass and ext.objid = ns.oid)
  union all
    select 'extension', e.extname, e.extversion || ' in ' || n.nspname
    from pg_extension e join pg_namespace n on n.oid = e.extnamespace
    where n.nspname in (select nspname from ns) or n.nspname = 'pg_catalog'
  union all
    select 'relation', rel.ident,
           concat_ws(' | ', c.relkind::text, c.relpersistence::text, c.relreplident::text, am.amname,
                     'options=' || coalesce(c.reloptions::text, ''),
                     'rls=' || c.relrowsecurity || '/' || c.relforcerowsecurity,
                     'partkey=' || coalesce(case when c.relkind = 'p' then pg_get_partkeydef(c.oid) end, ''),
                     'bound=' || coalesce(pg_get_expr(c.relpartbound, c.oid), ''),
                     'inherits=' || coalesce((select string_agg(i.inhparent::regclass::text, ',' order by i.inhseqno)
                                              from pg_inherits i where i.inhrelid = c.oid), ''),
                     'view=' || coalesce(case when c.relkind in ('v', 'm') then pg_get_viewdef(c.oid) end, ''),
                     'seq=' || coalesce((select concat_ws(',', format_type(s.seqtypid, null), s.seqstart,
                                                          s.seqincrement, s.seqmax, s.seqmin, s.seqcache, s.seqcycle)
                                         from pg_sequence s where s.seqrelid = c.oid), ''),
                     'acl=' || case when %(privileges)s then coalesce(c.relacl::text, '') else '' end)
    from rel join pg_class c on c.oid = rel.oid left join pg_am am on am.oid = c.relam
  union all
    select 'column', rel.ident || '.' || quote_ident(a.attname),
           concat_ws(' | ', row_number() over (partition by a.attrelid order by a.attnum), format_type(a.atttypid, a.atttypmod),
                     case when a.attnotnull then 'not null' else 'null' end,
                     'default=' || coalesce(pg_get_expr(d.adbin, case when a.attgenerated <> '' then d.adrelid else 0 end),
                                            ''),
                     'identity=' || a.attidentity::text, 'generated=' || a.attgenerated::text,
                     'collation=' || coalesce(case when a.attcollation <> t.typcollation
                                                   then a.attcollation::regcollation::text end, ''),
                     'storage=' || a.attstorage::text,
                     'statistics=' || case when a.attstattarget >= 0 then a.attstattarget::text else '' end,
                     'acl=' || case when %(privileges)s then coalesce(a.attacl::text, '') else '' end)
    from rel join pg_attribute a on a.attrelid = rel.oid
    join pg_type t on t.oid = a.atttypid
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where a.attnum > 0 and not a.attisdropped and rel.relkind <> 'S'
  union all
    select 'constraint', coalesce(rel.ident, typ.ident) || '.' || quote_ident(co.conname),
           concat_ws(' | ', case when co.contype in ('p', 'u', 'f') and co.contypid = 0
                                 then concat_ws(' ', co.confrelid::regclass::text, co.conindid::regclass::text,
                                                'columns=' || (select string_agg(quote_ident(a.attname), ',' order by k.i) from unnest(co.conkey) with ordinality k(n, i)
                                                                 join pg_attribute a on a.attrelid = co.conrelid and a.attnum = k.n),
                                                'references=' || coalesce((select string_agg(quote_ident(a.attname), ',' order by k.i)
                                                                           from unnest(co.confkey) with ordinality k(n, i)
                                                                           join pg_attribute a on a.attrelid = co.confrelid and a.attnum = k.n), ''),
                                                (to_jsonb(co) - '{oid,connamespace,conrelid,contypid,conindid,conparentid,confrelid,conpfeqop,conppeqop,conffeqop,conexclop,conbin,conkey,confkey}'::text[])::text)
                                 else pg_get_constraintdef(co.oid) end,
                     'valid=' || co.convalidated)
    from pg_constraint co
    left join rel on rel.oid = co.conrelid
    left join typ on typ.oid = co.contypid
    where rel.oid is not null or typ.oid is not null
  union all
    select 'index', rel.ident || '.' || quote_ident(ic.relname),
           concat_ws(' | ', am.amname, 'options=' || coalesce(ic.reloptions::text, ''),
                     'collations=' || i.indcollation::oid[]::regcollation[]::text,
                     'columns=' || (select string_agg(coalesce(quote_ident(a.attname), '(expression)'), ',' order by k.i)
                                    from unnest(i.indkey::int2[]) with ordinality k(n, i)
                                    left join pg_attribute a on a.attrelid = i.indrelid and a.attnum = k.n),
                     (to_jsonb(i) - '{indexrelid,indrelid,indcheckxmin,indcollation,indclass,indexprs,indpred,indkey}'::text[])::text,
                     case when i.indexprs is not null or i.indpred is not null or 16384 <= any(i.indclass::oid[])
                          then pg_get_indexdef(i.indexrelid)
                          else 'opclasses=' || i.indclass::text end)
    from pg_index i join rel on rel.oid = i.indrelid join pg_class ic on ic.oid = i.indexrelid
    join pg_am am on am.oid = ic.relam
  union all
    select 'trigger', rel.ident || '.' || quote_ident(tg.tgname),
           concat_ws(' | ', pg_get_triggerdef(tg.oid), 'enabled=' || tg.tgenabled::text)
    from pg_trigger tg join rel on rel.oid = tg.tgrelid
    where not tg.tgisinternal
  union all
    select 'rule', rel.ident || '.' || quote_ident(r.rulename), pg_get_ruledef(r.oid)
    from pg_rewrite r join rel on rel.oid = r.ev_class
    where r.rulename <> '_RETURN'
  union all
    select 'policy', rel.ident || '.' || quote_ident(p.polname),
           concat_ws(' | ', p.polcmd, case when p.polpermissive then 'permissive' else 'restrictive' end,
                     'roles=' || coalesce((select string_agg(case when r = 0 then 'public' else r::regrole::text end,
                                                             ',' order by 1)
                                           from unnest(p.polroles) r), ''),
                     'using=' || coalesce(pg_get_expr(p.polqual, p.polrelid), ''),
                     'check=' || coalesce(pg_get_expr(p.polwithcheck, p.polrelid), ''))
    from pg_policy p join rel on rel.oid = p.polrelid
  union all
    select 'function', fn.ident,
           concat_ws(' | ', fn.prokind, pg_get_function_result(fn.oid), l.lanname, fn.provolatile, fn.proisstrict,
                     fn.prosecdef, fn.proleakproof, fn.proparallel, fn.proretset, 'cost=' || fn.procost,
                     'config=' || coalesce(fn.proconfig::text, ''), 'bin=' || coalesce(fn.probin, ''),
                     'src=' || md5(__FN_SOURCE__),
                     'agg=' || coalesce((select row_to_json(ag)::text  -- every option; ids are stable in one db
                                         from pg_aggregate ag where ag.aggfnoid = fn.oid), ''),
                     'acl=' || case when %(privileges)s then coalesce(fn.proacl::text, '') else '' end)
    from fn join pg_language l on l.oid = fn.prolang
  union all
    select 'type', typ.ident,
           concat_ws(' | ', typ.typtype,
                     'labels=' || coalesce((select string_agg(quote_literal(e.enumlabel), ',' order by e.enumsortorder)
                                            from pg_enum e where e.enumtypid = typ.oid), ''),
                     'base=' || case when typ.typtype = 'd' then format_type(typ.typbasetype, typ.typtypmod) else '' end,
                     'notnull=' || typ.typnotnull, 'default=' || coalesce(typ.typdefault, ''),
                     'range=' || coalesce((select concat_ws(' ', format_type(rg.rngsubtype, null),
                                                           nullif(rg.rngcollation, 0)::regcollation::text,
                                                           __RANGE_OPCLASS__, rg.rngcanonical::text,
                                                           rg.rngsubdiff::text) from pg_range rg
                                           where rg.rngtypid = typ.oid), ''),
                     'collation=' || case when typ.typcollation <> 0 then typ.typcollation::regcollation::text
                                          else '' end,
                     'acl=' || case when %(privileges)s then coalesce(typ.typacl::text, '') else '' end)
    from typ
  union all
    select 'statistics', quote_ident(ns.nspname) || '.' || quote_ident(s.stxname), pg_get_statisticsobjdef(s.oid)
    from pg_statistic_ext s join ns on ns.oid = s.stxnamespace
  union all
    select 'collation', quote_ident(ns.nspname) || '.' || quote_ident(co.collname),
           concat_ws(' | ', co.collprovider, co.collisdeterministic, co.collcollate, co.collctype)
    from pg_collation co join ns on ns.oid = co.collnamespace
    where not exists (select 1 from ext where ext.classid = 'pg_collation'::regclass and ext.objid = co.oid)
  union all
    select 'comment', (pg_identify_object(d.classoid, d.objoid, d.objsubid)).identity, d.description
    from pg_description d
    where (d.objoid >= 16384 and (pg_identify_object(d.classoid, d.objoid, d.objsubid)).schema in (select nspname from ns))
       or (d.classoid = 'pg_namespace'::regclass and d.objoid in (select oid from ns))
       or (d.classoid = 'pg_foreign_server'::regclass and d.objoid >= 16384)
       __UNSCHEMED_COMMENTS__
  union all
    select 'default_acl', coalesce(n.nspname, '*') || '.' || da.defaclobjtype::text || '.' || da.defaclrole::regrole::text,
           da.defaclacl::text
    from pg_default_acl da left join pg_namespace n on n.oid = da.defaclnamespace
    where %(privileges)s and (n.oid is null or n.nspname in (select nspname from ns))
) listing
"""
    )
    .replace("__FN_SOURCE__", FUNCTION_SOURCE)
    .replace("__RANGE_OPCLASS__", RANGE_OPCLASS)
    .replace("__UNSCHEMED_COMMENTS__", UNSCHEMED_COMMENTS)
)

_ORDER = 'order by kind collate "C", ident collate "C", def collate "C"'

_LISTING_SQL = "select * from (" + _ROWS_SQL + ") listing " + _ORDER

# The server hashes the listing (one row crosses the wire): each row as a JSON array, one per line, in order.
_HASH_SQL = (
    "select encode(sha256(convert_to(coalesce(string_agg(json_build_array(kind, ident, def)::text, E'\\n' "
    + _ORDER
    + "), ''), 'UTF8')), 'hex') from ("
    + _ROWS_SQL
    + ") listing"
)


def schema_listing(
    conn_or_dsn: Connection | str,
    schemas: Iterable[str] = (),
    exclude_schemas: Iterable[str] = (),
    *,
    privileges: bool = False,
    connect_timeout: timedelta = timedelta(seconds=10),
    what: str = "reading the schema fingerprint",
) -> list[tuple[str, str, str]]:
    """The canonical listing that :func:`schema_fingerprint` hashes: (kind, identity, definition) rows, sorted."""
    params = {"schemas": list(schemas), "exclude": list(exclude_schemas), "privileges": privileges}
    rows = fetch_all(conn_or_dsn, _LISTING_SQL, params, what=what, connect_timeout=connect_timeout)
    return [(str(k), str(i), str(d) if d is not None else "") for k, i, d in rows]


def schema_fingerprint(
    conn_or_dsn: Connection | str,
    schemas: Iterable[str] = (),
    exclude_schemas: Iterable[str] = (),
    *,
    privileges: bool = False,
    connect_timeout: timedelta = timedelta(seconds=10),
    what: str = "reading the schema fingerprint",
) -> str:
    """A sha256 of the managed schemas' catalog listing, read with ONE catalog query that returns one row.

    It changes whenever an object of the managed schemas changes (tables, columns, types, constraints, indexes,
    views, functions, triggers, policies, sequences, comments, extensions; grants when ``privileges``), whether
    the reconciler or a person changed it. Approvals bind to it; drift checks can use it to skip a full diff.
    The server computes the hash over the listing of :func:`schema_listing`, so only the digest crosses the wire.
    """
    params = {"schemas": list(schemas), "exclude": list(exclude_schemas), "privileges": privileges}
    rows = fetch_all(conn_or_dsn, _HASH_SQL, params, what=what, connect_timeout=connect_timeout)
    return str(rows[0][0])


def environment_fingerprint(
    conn_or_dsn: Connection | str,
    options: DescribeOptions,
    *,
    what: str = "reading the schema fingerprint",
    connect_timeout: timedelta = timedelta(seconds=10),
) -> str:
    """The fingerprint compared for an environment described with ``options``: the listing's hash and the
    description rows of :data:`~reconciler.catalog.UNLISTED_KINDS` (two catalog queries on one connection)."""
    if isinstance(conn_or_dsn, str):
        with database_errors(what), connect(conn_or_dsn, what=what, connect_timeout=connect_timeout) as conn:
            return environment_fingerprint(conn, options, what=what)
    listing = schema_fingerprint(
        conn_or_dsn, options.schemas, options.exclude_schemas, privileges=options.privileges, what=what
    )
    return extend_fingerprint(listing, describe(conn_or_dsn, options, kinds=UNLISTED_KINDS, what=what))


# -- catalog stamp ----------------------------------------------------------------------------------
#
# The fast path's first, cheaper query (about 7 ms on a warm session of a 200-table database, against about 40 ms
# for the listing and as much again for the description rows it does not cover). Every committed change to a
# catalog row writes a new row version, with the writing transaction's id as its ``xmin``; the stamp hashes the
# count and the ``xmin`` of every row, of every catalog a fingerprint could read, for objects outside the
# built-in range (a filter column per catalog: oid 16384 on), plus the role names and attributes (a role
# renamed changes every ACL and owner that names it) and the index state flags (which CREATE / DROP INDEX
# CONCURRENTLY set in place, without a new row version), and which server, database and run of the server it
# is (transaction ids can repeat after a failover that lost transactions, a restore, a cluster rebuilt by the
# same script). So when the stamp is equal, no catalog row of a user object that a fingerprint reads has changed,
# and the fingerprint is the one read with the stamp last time. Not seen: a superuser's change to a built-in
# object (renaming a built-in function or type that a view names); the trust bound on a stamp
# (planning.STAMP_TRUSTED_FOR) bounds that. The converse does not hold, and need not: a stamp that changed
# (temporary tables, VACUUM FULL of a catalog, a change in a schema that is not managed) only costs the full
# fingerprint read.
#
# Catalogs left out, with the reason (tests/integration/test_catalog_stamp.py holds every catalog of the
# running server to one list or the other): data, not schema (pg_statistic, pg_statistic_ext_data,
# pg_largeobject, pg_largeobject_metadata, pg_subscription_rel: a subscription's per-table sync state),
# pg_user_mapping (not readable without privileges: its view's content is hashed instead), and the shared
# catalogs (pg_roles is hashed by content; the others hold nothing a fingerprint reads).

STAMPED_CATALOGS: tuple[tuple[str, str | None], ...] = (
    ("pg_aggregate", "aggfnoid::oid"),
    ("pg_am", None),
    ("pg_amop", "oid"),
    ("pg_amproc", "oid"),
    ("pg_attrdef", None),
    ("pg_attribute", "attrelid"),
    ("pg_cast", "oid"),
    ("pg_class", "oid"),
    ("pg_collation", "oid"),
    ("pg_constraint", None),
    ("pg_conversion", "oid"),
    ("pg_default_acl", None),
    ("pg_depend", "objid"),
    ("pg_description", "objoid"),
    ("pg_enum", None),
    ("pg_event_trigger", None),
    ("pg_extension", None),
    ("pg_foreign_data_wrapper", None),
    ("pg_foreign_server", None),
    ("pg_foreign_table", None),
    ("pg_index", "indexrelid"),
    ("pg_inherits", None),
    ("pg_init_privs", "objoid"),
    ("pg_language", None),
    ("pg_namespace", None),
    ("pg_opclass", "oid"),
    ("pg_operator", "oid"),
    ("pg_opfamily", "oid"),
    ("pg_partitioned_table", None),
    ("pg_policy", None),
    ("pg_proc", "oid"),
    ("pg_publication", None),
    ("pg_publication_namespace", None),
    ("pg_publication_rel", None),
    ("pg_range", "rngtypid"),
    ("pg_rewrite", "oid"),
    ("pg_seclabel", None),
    ("pg_sequence", None),
    ("pg_statistic_ext", None),
    ("pg_transform", None),
    ("pg_trigger", None),
    ("pg_ts_config", "oid"),
    ("pg_ts_config_map", "mapcfg"),
    ("pg_ts_dict", "oid"),
    ("pg_ts_parser", "oid"),
    ("pg_ts_template", "oid"),
    ("pg_type", "oid"),
)

NOT_STAMPED_CATALOGS = frozenset(
    {
        "pg_statistic",
        "pg_statistic_ext_data",
        "pg_largeobject",
        "pg_largeobject_metadata",
        "pg_subscription_rel",
        "pg_user_mapping",
    }
)


def _stamp_part(catalog: str, key: str | None) -> str:
    where = f" where {key} >= 16384" if key else ""
    if catalog == "pg_description":  # comments on schemas, ``public`` (a built-in oid) among them
        where += " or classoid = 'pg_catalog.pg_namespace'::pg_catalog.regclass"
    return (
        f"select '{catalog}' as c, count(*)::text || ' ' || coalesce(md5(string_agg(xmin::text, ',')), '') as h "
        f"from pg_catalog.{catalog}{where}"
    )


# Catalogs that are younger than the oldest major version the stamp reads: left out of older servers' stamps.
_STAMPED_SINCE = {"pg_publication_namespace": 15}


@functools.cache
def _stamp_sql(major: int) -> str:
    """The stamp query for a server of ``major`` version (only the catalogs it has)."""
    parts = [_stamp_part(c, k) for c, k in STAMPED_CATALOGS if _STAMPED_SINCE.get(c, 0) <= major]
    parts += [
        "select 'index_flags', md5(string_agg(indexrelid::text || indisvalid::text || indisready::text"
        " || indislive::text, ',')) from pg_catalog.pg_index where indexrelid >= 16384",
        "select 'roles', md5(string_agg(r::text, ',')) from pg_catalog.pg_roles r",
        # grants on built-in objects (below the oid range the catalogs' parts read) and languages
        "select 'builtin_acls', md5(string_agg(b.classid::oid::text || ' ' || b.oid::text || ' ' || b.acl::text, ','"
        " order by b.classid, b.oid)) from (" + BUILTIN_ACLS + ") b",
        "select 'user_mappings', md5(string_agg(m::text, ',')) from pg_catalog.pg_user_mappings m",
        # Which server, database and run of the server: transaction ids, and so row versions, can repeat on
        # another server (a failover that lost transactions, a restore, a cluster rebuilt by the same script).
        "select 'server', pg_postmaster_start_time()::text || ' ' || (select system_identifier::text from"
        " pg_control_system()) || ' ' || (select oid::text from pg_database where datname = current_database())",
    ]
    return "select md5(string_agg(c || '=' || coalesce(h, ''), ';')) from (" + "\nunion all ".join(parts) + ") s"


def catalog_stamp(
    conn_or_dsn: Connection | str,
    *,
    what: str = "reading the catalog stamp",
    connect_timeout: timedelta = timedelta(seconds=10),
) -> str:
    """A hash of the row versions of every catalog a fingerprint reads (one query, one row): equal stamps of one
    database mean an unchanged fingerprint. Changes for reasons a fingerprint ignores too (see above)."""
    if isinstance(conn_or_dsn, str):
        with database_errors(what), connect(conn_or_dsn, what=what, connect_timeout=connect_timeout) as conn:
            return catalog_stamp(conn, what=what)
    sql = _stamp_sql(conn_or_dsn.info.server_version // 10000)
    return str(fetch_all(conn_or_dsn, sql, {}, what=what)[0][0])
