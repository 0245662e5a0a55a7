"""The catalog description: every object of the managed schemas as (kind, object, detail) rows, read with one query.

Where the fingerprint (``inspect.schema_listing``) only has to change when the schema changes, the description has
to be *compared* between two databases (an environment and the desired build in a scratch database), so it is
broken down by object and aspect (a view's definition, its options, its comment and its grants are separate rows)
and normalised for what legitimately differs between two databases that ``pg_dump --schema-only`` prints the same:

* object ids are never shown: objects are named by their schema-qualified identity;
* whitespace in view definitions is collapsed;
* a column's position is its rank among the live columns (dropped columns leave holes in ``attnum``), and is left
  out entirely with ``ignore_column_order``;
* ACLs are compared as sets of (grantee, privilege, grantable) with the grantor left out; a NULL ACL counts as the
  object kind's built-in default (as ``pg_dump`` does); the object's owner is shown as ``<owner>`` (who owns it
  is the ``owner`` row's business); ACLs and default privileges are left out unless the environment manages
  ``privileges``;
* owners are left out unless ``compare_owners``; an owner that is the describing role (the role that applies, on an
  environment; the build role, on the desired build) is ``<owner>``;
* user mappings are listed by (server, user) only: their options (passwords) are never read;
* objects that belong to an extension are represented by the extension (name, version, schema).

Each row also carries the raw ``schema.name`` of the top-level object it belongs to (``key``), so a plan statement
that names the object can be matched to the rows it resolves (see ``drift.residual``).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import timedelta

from .db import Connection, fetch_all


@dataclass(frozen=True, order=True)
class CatalogRow:
    """One aspect of one object: ``kind`` (a low-cardinality name), ``object`` (its identity), ``detail``."""

    kind: str
    object: str
    detail: str
    key: str  # raw "schema.name" of the top-level object (table of a column, ...), for matching plan statements


@dataclass(frozen=True)
class DescribeOptions:
    """What the description compares (from the environment's configuration)."""

    schemas: tuple[str, ...] = ()
    exclude_schemas: tuple[str, ...] = ()
    privileges: bool = False
    compare_owners: bool = False
    ignore_column_order: bool = False


def _acl(acl: str, objtype: str, owner: str, *, default: bool = True) -> str:
    """SQL for a normalised ACL: sorted ``grantee:privilege[*]`` items; NULL means the built-in default."""
    source = f"coalesce({acl}, acldefault('{objtype}', {owner}))" if default else f"coalesce({acl}, '{{}}')"
    role = (
        f"case when x.grantee = 0 then 'PUBLIC' when x.grantee = {owner} then '<owner>' "
        "else pg_get_userbyid(x.grantee) end"
    )
    item = f"{role} || ':' || x.privilege_type || case when x.is_grantable then '*' else '' end"
    return (
        f"(select coalesce(string_agg(e, ',' order by e), '') from (select {item} as e from aclexplode({source}) x) s)"
    )


# The managed schemas (``schemas`` / ``exclude_schemas``), as the fingerprint and the description both read them.
MANAGED_SCHEMAS_WHERE = r"""
    where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')
      and n.nspname not like 'pg\_temp\_%%' and n.nspname not like 'pg\_toast\_temp\_%%'
      and (cardinality(%(schemas)s::text[]) = 0 or n.nspname = any(%(schemas)s::text[]))
      and not (n.nspname = any(%(exclude)s::text[]))
"""

_DESCRIBE_SQL = (
    r"""
with ns as (
    select n.oid, n.nspname, n.nspacl, n.nspowner
    from pg_namespace n
"""
    + MANAGED_SCHEMAS_WHERE
    + r"""),
ext as (select classid, objid from pg_depend where deptype = 'e'),
rel as (
    select c.*, ns.nspname, ns.nspname || '.' || c.relname as key,
           quote_ident(ns.nspname) || '.' || quote_ident(c.relname) as ident,
           case c.relkind when 'r' then 'table' when 'p' then 'table' when 'v' then 'view'
                when 'm' then 'materialized_view' when 'S' then 'sequence' when 'f' then 'foreign_table'
                when 'c' then 'composite_type' end as kindname
    from pg_class c join ns on ns.oid = c.relnamespace
    where c.relkind in ('r', 'p', 'v', 'm', 'S', 'f', 'c')
      and not exists (select 1 from ext where ext.classid = 'pg_class'::regclass and ext.objid = c.oid)
),
fn as (
    select p.*, ns.nspname, ns.nspname || '.' || p.proname as key,
           quote_ident(ns.nspname) || '.' || quote_ident(p.proname)
             || '(' || pg_get_function_identity_arguments(p.oid) || ')' as ident,
           case p.prokind when 'p' then 'procedure' when 'a' then 'aggregate' else 'function' end as kindname
    from pg_proc p join ns on ns.oid = p.pronamespace
    where not exists (select 1 from ext where ext.classid = 'pg_proc'::regclass and ext.objid = p.oid)
),
typ as (
    select t.*, ns.nspname, ns.nspname || '.' || t.typname as key,
           quote_ident(ns.nspname) || '.' || quote_ident(t.typname) as ident,
           case t.typtype when 'd' then 'domain' when 'e' then 'enum' when 'r' then 'range' when 'm' then 'range'
                else 'type' end as kindname
    from pg_type t join ns on ns.oid = t.typnamespace
    where t.typtype in ('e', 'd', 'r', 'b', 'm')
      and not exists (select 1 from ext where ext.classid = 'pg_type'::regclass and ext.objid = t.oid)
      and not (t.typtype = 'b' and t.typcategory = 'A')
      and not (t.typtype = 'm')
),
srv as (
    select s.*, w.fdwname from pg_foreign_server s join pg_foreign_data_wrapper w on w.oid = s.srvfdw
    where (cardinality(%(schemas)s::text[]) = 0
           or s.oid in (select ft.ftserver from pg_foreign_table ft join rel on rel.oid = ft.ftrelid))
      and not exists (select 1 from ext where ext.classid = 'pg_foreign_server'::regclass and ext.objid = s.oid)
)
select kind, object, detail, key from (
    select 'schema' as kind, quote_ident(nspname) as object, '' as detail, nspname as key
    from ns where not exists (select 1 from ext where ext.classid = 'pg_namespace'::regclass and ext.objid = ns.oid)
  union all
    select 'acl', 'schema ' || quote_ident(nspname), __SCHEMA_ACL__, nspname from ns where %(privileges)s
  union all
    select 'owner', 'schema ' || quote_ident(nspname), __OWNER__(nspowner), nspname from ns where %(owners)s
  union all
    select 'extension', quote_ident(e.extname), e.extversion || ' in ' || n.nspname, e.extname
    from pg_extension e join pg_namespace n on n.oid = e.extnamespace
    where n.nspname in (select nspname from ns) or n.nspname = 'pg_catalog'
  union all
    select rel.kindname, rel.ident,
           concat_ws(' | ', case rel.relpersistence when 'u' then 'unlogged' when 't' then 'temporary' end,
                     case when rel.relkind = 'p' then 'partition by ' || pg_get_partkeydef(rel.oid) end,
                     case when rel.relispartition then 'partition ' || pg_get_expr(rel.relpartbound, rel.oid) end,
                     (select 'inherits ' || string_agg(i.inhparent::regclass::text, ',' order by i.inhseqno)
                      from pg_inherits i where i.inhrelid = rel.oid and not rel.relispartition),
                     case when rel.relkind in ('v', 'm')
                          then regexp_replace(btrim(pg_get_viewdef(rel.oid)), '\s+', ' ', 'g') end,
                     (select concat_ws(' ', 'as', format_type(s.seqtypid, null), 'start', s.seqstart,
                                       'increment', s.seqincrement, 'min', s.seqmin, 'max', s.seqmax,
                                       'cache', s.seqcache, case when s.seqcycle then 'cycle' end)
                      from pg_sequence s where s.seqrelid = rel.oid),
                     (select 'server ' || fs.srvname || coalesce(' options ' || ft.ftoptions::text, '')
                      from pg_foreign_table ft join pg_foreign_server fs on fs.oid = ft.ftserver
                      where ft.ftrelid = rel.oid)),
           rel.key
    from rel
  union all
    select 'options', rel.kindname || ' ' || rel.ident, array_to_string(array(select unnest(rel.reloptions) order by 1), ','),
           rel.key
    from rel where rel.reloptions is not null and cardinality(rel.reloptions) > 0
  union all
    select 'row_security', rel.ident, 'enabled', rel.key from rel where rel.relrowsecurity
  union all
    select 'force_row_security', rel.ident, 'forced', rel.key from rel where rel.relforcerowsecurity
  union all
    select 'replica_identity', rel.ident,
           case rel.relreplident when 'n' then 'nothing' when 'f' then 'full'
                when 'i' then 'using index ' || coalesce((select quote_ident(ic.relname) from pg_index i
                                                          join pg_class ic on ic.oid = i.indexrelid
                                                          where i.indrelid = rel.oid and i.indisreplident), '?')
           end, rel.key
    from rel where rel.relkind in ('r', 'p', 'm') and rel.relreplident <> 'd'
  union all
    select 'acl', rel.kindname || ' ' || rel.ident, __REL_ACL__, rel.key
    from rel where %(privileges)s and rel.relkind <> 'c'
  union all
    select 'owner', rel.kindname || ' ' || rel.ident, __OWNER__(rel.relowner), rel.key
    from rel where %(owners)s and rel.relkind <> 'c'
  union all
    select 'sequence_owned_by', rel.ident, dr.ident || '.' || quote_ident(a.attname), rel.key
    from rel join pg_depend d on d.classid = 'pg_class'::regclass and d.objid = rel.oid
         and d.refclassid = 'pg_class'::regclass and d.refobjsubid > 0 and d.deptype = 'a'
    join rel dr on dr.oid = d.refobjid
    join pg_attribute a on a.attrelid = d.refobjid and a.attnum = d.refobjsubid
    where rel.relkind = 'S'
  union all
    select 'column', rel.ident || '.' || quote_ident(a.attname),
           concat_ws(' | ',
                     case when not %(ignore_order)s
                          then 'position ' || rank() over (partition by a.attrelid order by a.attnum) end,
                     format_type(a.atttypid, a.atttypmod),
                     case when a.attnotnull then 'not null' end,
                     case when a.attgenerated = 's' then 'generated ' || pg_get_expr(d.adbin, d.adrelid)
                          when d.adbin is not null then 'default ' || pg_get_expr(d.adbin, d.adrelid) end,
                     case a.attidentity when 'a' then 'identity always' when 'd' then 'identity by default' end,
                     case when a.attcollation <> t.typcollation then 'collate ' || a.attcollation::regcollation::text end,
                     case when a.attstorage <> t.typstorage then 'storage ' || a.attstorage::text end,
                     case when a.attstattarget >= 0 then 'statistics ' || a.attstattarget end,
                     case when a.attfdwoptions is not null then 'options ' || a.attfdwoptions::text end),
           rel.key
    from rel join pg_attribute a on a.attrelid = rel.oid
    join pg_type t on t.oid = a.atttypid
    left join pg_attrdef d on d.adrelid = a.attrelid and d.adnum = a.attnum
    where a.attnum > 0 and not a.attisdropped and rel.relkind <> 'S'
  union all
    select 'acl', 'column ' || rel.ident || '.' || quote_ident(a.attname), __COL_ACL__, rel.key
    from rel join pg_attribute a on a.attrelid = rel.oid
    where %(privileges)s and a.attnum > 0 and not a.attisdropped and a.attacl is not null and cardinality(a.attacl) > 0
  union all
    select 'constraint', coalesce(rel.ident, typ.ident) || '.' || quote_ident(co.conname),
           concat_ws(' | ', pg_get_constraintdef(co.oid), case when not co.convalidated then 'not valid' end),
           coalesce(rel.key, typ.key)
    from pg_constraint co
    left join rel on rel.oid = co.conrelid
    left join typ on typ.oid = co.contypid
    where (rel.oid is not null or typ.oid is not null) and co.conparentid = 0
  union all
    select 'index', quote_ident(rel.nspname) || '.' || quote_ident(ic.relname),
           concat_ws(' | ', pg_get_indexdef(i.indexrelid), case when not i.indisvalid then 'invalid' end,
                     case when i.indisclustered then 'clustered' end),
           rel.key
    from pg_index i join rel on rel.oid = i.indrelid join pg_class ic on ic.oid = i.indexrelid
    where not exists (select 1 from pg_constraint co where co.conindid = i.indexrelid and co.conrelid = i.indrelid
                      and co.contype in ('p', 'u', 'x'))
      and not exists (select 1 from pg_inherits inh where inh.inhrelid = i.indexrelid)
  union all
    select 'trigger', rel.ident || '.' || quote_ident(tg.tgname),
           concat_ws(' | ', pg_get_triggerdef(tg.oid),
                     case tg.tgenabled when 'D' then 'disabled' when 'R' then 'replica' when 'A' then 'always' end),
           rel.key
    from pg_trigger tg join rel on rel.oid = tg.tgrelid
    where not tg.tgisinternal and tg.tgparentid = 0
  union all
    select 'rule', rel.ident || '.' || quote_ident(r.rulename), pg_get_ruledef(r.oid), rel.key
    from pg_rewrite r join rel on rel.oid = r.ev_class
    where r.rulename <> '_RETURN'
  union all
    select 'policy', rel.ident || '.' || quote_ident(p.polname),
           concat_ws(' | ', 'for ' || p.polcmd::text, case when p.polpermissive then 'permissive' else 'restrictive' end,
                     'to ' || coalesce((select string_agg(case when r = 0 then 'public' else r::regrole::text end,
                                                          ',' order by 1)
                                        from unnest(p.polroles) r), ''),
                     'using ' || pg_get_expr(p.polqual, p.polrelid),
                     'check ' || pg_get_expr(p.polwithcheck, p.polrelid)),
           rel.key
    from pg_policy p join rel on rel.oid = p.polrelid
  union all
    select fn.kindname, fn.ident,
           concat_ws(' | ', 'returns ' || pg_get_function_result(fn.oid), 'language ' || l.lanname,
                     'volatility ' || fn.provolatile::text, case when fn.proisstrict then 'strict' end,
                     case when fn.prosecdef then 'security definer' end,
                     case when fn.proleakproof then 'leakproof' end, 'parallel ' || fn.proparallel::text,
                     case when fn.procost <> 100 and fn.prolang <> 12 then 'cost ' || fn.procost end,
                     'config ' || fn.proconfig::text, 'bin ' || fn.probin,
                     case when fn.prokind <> 'a' then 'source md5 ' || md5(__FN_SOURCE__) end,
                     (select concat_ws(' | ', 'options ' || nullif(concat_ws(' ', __AGG_OPTIONS__), ''),
                                       concat_ws(' ', 'sfunc', ag.aggtransfn::regproc::text,
                                       'stype', format_type(ag.aggtranstype, null),
                                       'finalfunc', nullif(ag.aggfinalfn::regproc::text, '-'),
                                       'combinefunc', nullif(ag.aggcombinefn::regproc::text, '-'),
                                       'initcond', ag.agginitval, 'kind', ag.aggkind::text))
                      from pg_aggregate ag where ag.aggfnoid = fn.oid)),
           fn.key
    from fn join pg_language l on l.oid = fn.prolang
  union all
    select 'acl', fn.kindname || ' ' || fn.ident, __FN_ACL__, fn.key from fn where %(privileges)s
  union all
    select 'owner', fn.kindname || ' ' || fn.ident, __OWNER__(fn.proowner), fn.key from fn where %(owners)s
  union all
    select typ.kindname, typ.ident,
           concat_ws(' | ',
                     (select 'labels ' || string_agg(quote_literal(e.enumlabel), ',' order by e.enumsortorder)
                      from pg_enum e where e.enumtypid = typ.oid),
                     case when typ.typtype = 'd' then 'base ' || format_type(typ.typbasetype, typ.typtypmod) end,
                     case when typ.typnotnull then 'not null' end, 'default ' || typ.typdefault,
                     case when typ.typtype = 'd' and typ.typcollation <> 0
                               and typ.typcollation <> (select bt.typcollation from pg_type bt where bt.oid = typ.typbasetype)
                          then 'collate ' || typ.typcollation::regcollation::text end,
                     (select concat_ws(' ', 'subtype', format_type(rg.rngsubtype, null),
                                       'collation', nullif(rg.rngcollation, 0)::regcollation::text,
                                       'opclass', __RANGE_OPCLASS__,
                                       'canonical', nullif(rg.rngcanonical::text, '-'),
                                       'subdiff', nullif(rg.rngsubdiff::text, '-'))
                      from pg_range rg where rg.rngtypid = typ.oid),
                     case when typ.typtype = 'b' then 'input ' || typ.typinput::text || ' output ' || typ.typoutput::text end),
           typ.key
    from typ
  union all
    select 'acl', 'type ' || typ.ident, __TYP_ACL__, typ.key from typ where %(privileges)s
  union all
    select 'owner', 'type ' || typ.ident, __OWNER__(typ.typowner), typ.key from typ where %(owners)s
  union all
    select 'statistics', quote_ident(ns.nspname) || '.' || quote_ident(s.stxname), pg_get_statisticsobjdef(s.oid),
           ns.nspname || '.' || s.stxname
    from pg_statistic_ext s join ns on ns.oid = s.stxnamespace
  union all
    select 'collation', quote_ident(ns.nspname) || '.' || quote_ident(co.collname),
           concat_ws(' | ', 'provider ' || co.collprovider::text, case when not co.collisdeterministic then 'nondeterministic' end,
                     'collate ' || co.collcollate, 'ctype ' || co.collctype,
                     'locale ' || coalesce(to_jsonb(co) ->> 'colliculocale', to_jsonb(co) ->> 'colllocale')),
           ns.nspname || '.' || co.collname
    from pg_collation co join ns on ns.oid = co.collnamespace
    where not exists (select 1 from ext where ext.classid = 'pg_collation'::regclass and ext.objid = co.oid)
  union all
    select 'comment', o.type || ' ' || o.identity, d.description,
           coalesce((select rel.key from rel where d.classoid = 'pg_class'::regclass and rel.oid = d.objoid),
                    (select rel.key from pg_index i join rel on rel.oid = i.indrelid
                     where d.classoid = 'pg_class'::regclass and i.indexrelid = d.objoid),
                    (select coalesce(r2.key, t2.key) from pg_constraint co left join rel r2 on r2.oid = co.conrelid
                     left join typ t2 on t2.oid = co.contypid
                     where d.classoid = 'pg_constraint'::regclass and co.oid = d.objoid),
                    (select rel.key from pg_trigger tg join rel on rel.oid = tg.tgrelid
                     where d.classoid = 'pg_trigger'::regclass and tg.oid = d.objoid),
                    (select rel.key from pg_policy p join rel on rel.oid = p.polrelid
                     where d.classoid = 'pg_policy'::regclass and p.oid = d.objoid),
                    (select fn.key from fn where d.classoid = 'pg_proc'::regclass and fn.oid = d.objoid),
                    (select typ.key from typ where d.classoid = 'pg_type'::regclass and typ.oid = d.objoid),
                    coalesce(o.schema || '.', '') || coalesce(o.name, o.identity))
    from (select * from pg_description  -- built-in objects (oids below 16384) carry no user comments, but schemas
          where objoid >= 16384 or classoid = 'pg_namespace'::regclass) d,
    lateral pg_identify_object(d.classoid, d.objoid, d.objsubid) o
    where (o.schema in (select nspname from ns)
           or (d.classoid = 'pg_namespace'::regclass and d.objoid in (select oid from ns))
           or (d.classoid = 'pg_foreign_server'::regclass and d.objoid in (select oid from srv))
           __UNSCHEMED_COMMENTS__)
      and not exists (select 1 from ext where ext.classid = d.classoid and ext.objid = d.objoid)
  union all
    select 'default_privileges',
           'for role ' || case when not %(owners)s and (da.defaclrole = (select datdba from pg_database
                                                                         where datname = current_database())
                                                        or da.defaclrole = current_user::regrole)
                               then '<owner>' else pg_get_userbyid(da.defaclrole) end
             || coalesce(' in schema ' || quote_ident(n.nspname), '')
             || ' on ' || case da.defaclobjtype when 'r' then 'tables' when 'S' then 'sequences'
                               when 'f' then 'functions' when 'T' then 'types' when 'n' then 'schemas' end,
           __DEFACL__, coalesce(n.nspname, '*')
    from pg_default_acl da left join pg_namespace n on n.oid = da.defaclnamespace
    where %(privileges)s and (n.oid is null or n.nspname in (select nspname from ns))
  union all
    select 'foreign_data_wrapper', quote_ident(w.fdwname),
           concat_ws(' | ', 'handler ' || nullif(w.fdwhandler, 0)::regproc::text,
                     'validator ' || nullif(w.fdwvalidator, 0)::regproc::text, 'options ' || w.fdwoptions::text),
           w.fdwname
    from pg_foreign_data_wrapper w
    where (cardinality(%(schemas)s::text[]) = 0 or w.oid in (select srvfdw from srv))
      and not exists (select 1 from ext where ext.classid = 'pg_foreign_data_wrapper'::regclass and ext.objid = w.oid)
  union all
    select 'foreign_server', quote_ident(srv.srvname),
           concat_ws(' | ', 'wrapper ' || srv.fdwname, 'type ' || srv.srvtype, 'version ' || srv.srvversion,
                     'options ' || srv.srvoptions::text),
           srv.srvname
    from srv
  union all
    -- pg_user_mappings (the view): readable by unprivileged roles such as the scratch build role; options unread
    select 'user_mapping', 'for ' || case when um.umuser = 0 then 'public' else pg_get_userbyid(um.umuser) end
             || ' server ' || quote_ident(srv.srvname), '', srv.srvname
    from pg_user_mappings um join srv on srv.oid = um.srvid
  union all
    -- privileges changed on built-in objects, and on languages: pg_dump prints each ACL that differs from the one
    -- initdb (or the extension's script) set, which pg_init_privs keeps
    select 'builtin_acl', o.type || ' ' || o.identity, acls.now, o.identity
    from (__BUILTIN_ACLS__) b
    left join pg_init_privs ip on ip.classoid = b.classid and ip.objoid = b.oid and ip.objsubid = 0
    cross join lateral (select __BUILTIN_ITEMS__(b.acl) as now,
                               __BUILTIN_ITEMS__(coalesce(ip.initprivs, acldefault(b.objtype, b.owner))) as was) acls,
    lateral pg_identify_object(b.classid, b.oid, 0) o
    where %(privileges)s and cardinality(%(schemas)s::text[]) = 0 and acls.now is distinct from acls.was
  union all
    -- what pg_dump prints of a column beyond its 'column' row: compression, attribute options, and an inherited
    -- column that a child (not a partition) declares itself as well
    select 'property', 'column ' || rel.ident || '.' || quote_ident(a.attname),
           concat_ws(' | ', 'compression ' || case a.attcompression when 'p' then 'pglz' when 'l' then 'lz4' end,
                     'options ' || nullif(array_to_string(array(select unnest(a.attoptions) order by 1), ','), ''),
                     case when a.attinhcount > 0 and a.attislocal and not rel.relispartition then 'declared locally' end),
           rel.key
    from rel join pg_attribute a on a.attrelid = rel.oid
    where a.attnum > 0 and not a.attisdropped
      and (a.attcompression::text <> '' or a.attoptions is not null
           or (a.attinhcount > 0 and a.attislocal and not rel.relispartition))
  union all
    -- a typed table's type (CREATE TABLE ... OF), and the options of its TOAST table (toast.*)
    select 'property', 'table ' || rel.ident,
           concat_ws(' | ', 'of ' || nullif(rel.reloftype, 0)::regtype::text,
                     (select 'toast ' || array_to_string(array(select unnest(tc.reloptions) order by 1), ',')
                      from pg_class tc where tc.oid = rel.reltoastrelid)),
           rel.key
    from rel
    where rel.reloftype <> 0
       or exists (select 1 from pg_class tc where tc.oid = rel.reltoastrelid and tc.reloptions is not null)
  union all
    -- an index's column statistics targets; and the options of the indexes the 'index' rows leave out (those of
    -- keys, whose pg_get_constraintdef omits them, and those attached to a partitioned table's index)
    select 'property', ix.object, ix.detail, ix.key
    from (select 'index ' || quote_ident(rel.nspname) || '.' || quote_ident(ic.relname) as object, rel.key,
                 concat_ws(' | ',
                           case when exists (select 1 from pg_constraint co where co.conindid = i.indexrelid
                                             and co.conrelid = i.indrelid and co.contype in ('p', 'u', 'x'))
                                  or exists (select 1 from pg_inherits inh where inh.inhrelid = i.indexrelid)
                                then 'options ' || nullif(array_to_string(array(select unnest(ic.reloptions) order by 1),
                                                                          ','), '') end,
                           (select 'statistics ' || string_agg(ia.attnum || '=' || ia.attstattarget, ','
                                                              order by ia.attnum)
                            from pg_attribute ia where ia.attrelid = ic.oid and ia.attstattarget >= 0)) as detail
          from pg_index i join rel on rel.oid = i.indrelid join pg_class ic on ic.oid = i.indexrelid
          where ic.reloptions is not null
             or exists (select 1 from pg_attribute ia where ia.attrelid = ic.oid and ia.attstattarget >= 0)) ix
    where ix.detail <> ''
  union all
    -- a CHECK constraint that an inheritance child declares itself as well as inheriting it
    select 'property', 'constraint ' || rel.ident || '.' || quote_ident(co.conname), 'declared locally', rel.key
    from pg_constraint co join rel on rel.oid = co.conrelid
    where co.coninhcount > 0 and co.conislocal and not rel.relispartition
  union all
    select 'property', 'statistics ' || quote_ident(ns.nspname) || '.' || quote_ident(s.stxname),
           'statistics ' || (to_jsonb(s) ->> 'stxstattarget'), ns.nspname || '.' || s.stxname
    from pg_statistic_ext s join ns on ns.oid = s.stxnamespace
    where (to_jsonb(s) ->> 'stxstattarget')::int >= 0
  union all
    -- what pg_get_function_identity_arguments and the function row leave out: argument defaults, ROWS, SUPPORT
    select 'routine_options', fn.kindname || ' ' || fn.ident,
           concat_ws(' | ', case when fn.pronargdefaults > 0 then 'arguments ' || pg_get_function_arguments(fn.oid) end,
                     case when fn.proretset and fn.prorows <> 1000 then 'rows ' || fn.prorows end,
                     'support ' || nullif(fn.prosupport, 0)::regproc::text),
           fn.key
    from fn
    where fn.pronargdefaults > 0 or (fn.proretset and fn.prorows <> 1000) or fn.prosupport <> 0
  union all
    select replace(o.type, ' ', '_'), o.identity, __DEFINITION__, coalesce(o.schema || '.', '') || coalesce(o.name, o.identity)
    from (select 'pg_operator'::regclass as classid, oid, oprnamespace as nsp from pg_operator
          union all select 'pg_opclass'::regclass, oid, opcnamespace from pg_opclass
          union all select 'pg_opfamily'::regclass, oid, opfnamespace from pg_opfamily
          union all select 'pg_ts_config'::regclass, oid, cfgnamespace from pg_ts_config
          union all select 'pg_ts_dict'::regclass, oid, dictnamespace from pg_ts_dict
          union all select 'pg_ts_template'::regclass, oid, tmplnamespace from pg_ts_template where oid >= 16384
          union all select 'pg_ts_parser'::regclass, oid, prsnamespace from pg_ts_parser where oid >= 16384
          union all select 'pg_conversion'::regclass, oid, connamespace from pg_conversion) x
    join ns on ns.oid = x.nsp,
    lateral pg_identify_object(x.classid, x.oid, 0) o
    where not exists (select 1 from ext where ext.classid = x.classid and ext.objid = x.oid)
  union all
    select replace(o.type, ' ', '_'), o.identity, __DEFINITION__, o.identity
    from (select 'pg_publication'::regclass as classid, oid from pg_publication
          union all select 'pg_event_trigger'::regclass, oid from pg_event_trigger
          union all select 'pg_cast'::regclass, oid from pg_cast where oid >= 16384) x,
    lateral pg_identify_object(x.classid, x.oid, 0) o
    where cardinality(%(schemas)s::text[]) = 0
      and not exists (select 1 from ext where ext.classid = x.classid and ext.objid = x.oid)
) listing
order by kind collate "C", object collate "C", detail collate "C"
"""
)

# The definition of an object the description otherwise lists by existence (operators, text search objects, casts;
# the others of those branches show nothing): ``x`` is the branch's (classid, oid).
_DEFINITION = """case x.classid
    when 'pg_operator'::regclass then (
        select concat_ws(' | ', 'function ' || op.oprcode::text, 'commutator ' || nullif(op.oprcom, 0)::regoperator::text,
                         'negator ' || nullif(op.oprnegate, 0)::regoperator::text,
                         'restrict ' || nullif(op.oprrest, 0)::regproc::text,
                         'join ' || nullif(op.oprjoin, 0)::regproc::text,
                         case when op.oprcanhash then 'hashes' end, case when op.oprcanmerge then 'merges' end)
        from pg_operator op where op.oid = x.oid)
    when 'pg_ts_dict'::regclass then (
        select concat_ws(' | ', 'template ' || tmpl.tmplname, 'options ' || dict.dictinitoption)
        from pg_ts_dict dict join pg_ts_template tmpl on tmpl.oid = dict.dicttemplate where dict.oid = x.oid)
    when 'pg_ts_config'::regclass then (
        select concat_ws(' | ', 'parser ' || prs.prsname,
                         'mappings ' || (select string_agg(m.maptokentype || ':' || m.mapseqno || '=' || m.mapdict::regdictionary::text,
                                                           ',' order by m.maptokentype, m.mapseqno)
                                         from pg_ts_config_map m where m.mapcfg = cfg.oid))
        from pg_ts_config cfg join pg_ts_parser prs on prs.oid = cfg.cfgparser where cfg.oid = x.oid)
    when 'pg_cast'::regclass then (
        select concat_ws(' | ', 'context ' || ca.castcontext::text, 'method ' || ca.castmethod::text,
                         'function ' || nullif(ca.castfunc, 0)::regprocedure::text)
        from pg_cast ca where ca.oid = x.oid)
    else '' end"""

# The ACLs of built-in objects (oids below 16384) and of languages that are not NULL (never granted or revoked):
# (classid, oid, owner, acl). Read by the description (which compares them with pg_init_privs) and the stamp.
BUILTIN_ACLS = """
    select 'pg_proc'::regclass as classid, oid, proowner as owner, proacl as acl, 'f'::"char" as objtype from pg_proc
    where oid < 16384 and proacl is not null
    union all select 'pg_class'::regclass, oid, relowner, relacl, case relkind when 'S' then 's' else 'r' end::"char"
    from pg_class where oid < 16384 and relacl is not null
    union all select 'pg_type'::regclass, oid, typowner, typacl, 'T' from pg_type where oid < 16384 and typacl is not null
    union all select 'pg_namespace'::regclass, oid, nspowner, nspacl, 'n' from pg_namespace
    where oid < 16384 and nspacl is not null and nspname <> 'public'
    union all select 'pg_language'::regclass, oid, lanowner, lanacl, 'l' from pg_language where lanacl is not null"""


def _builtin_items(acl: str) -> str:
    """SQL for ACL ``acl`` of a built-in object ``b`` as sorted ``grantee:privilege[*]`` items (grantors left out,
    its owner ``<owner>``): how the description compares it with the ACL initdb set, as ``pg_dump`` does."""
    role = "case when x.grantee = 0 then 'PUBLIC' when x.grantee = b.owner then '<owner>' else pg_get_userbyid(x.grantee) end"
    item = f"{role} || ':' || x.privilege_type || case when x.is_grantable then '*' else '' end"
    return f"(select coalesce(string_agg(e, ',' order by e), '') from (select {item} as e from aclexplode({acl}) x) s)"


# A range type's operator class, by name (its oid differs between databases when it is the database's own).
RANGE_OPCLASS = (
    "(select quote_ident(ocn.nspname) || '.' || quote_ident(oc.opcname) from pg_opclass oc"
    " join pg_namespace ocn on ocn.oid = oc.opcnamespace where oc.oid = rg.rngsubopc)"
)

# Comments on objects that pg_identify_object gives no schema (the description and the fingerprint both read them): triggers (those pg_dump prints) and policies of a
# managed table, casts (when every schema is managed, as the casts themselves), extensions (as they are listed).
UNSCHEMED_COMMENTS = """
           or (d.classoid = 'pg_trigger'::regclass
               and exists (select 1 from pg_trigger tg join rel on rel.oid = tg.tgrelid
                           where tg.oid = d.objoid and not tg.tgisinternal and tg.tgparentid = 0))
           or (d.classoid = 'pg_policy'::regclass
               and exists (select 1 from pg_policy pl join rel on rel.oid = pl.polrelid where pl.oid = d.objoid))
           or (d.classoid = 'pg_cast'::regclass and d.objoid >= 16384 and cardinality(%(schemas)s::text[]) = 0)
           or (d.classoid = 'pg_extension'::regclass
               and exists (select 1 from pg_extension e join pg_namespace en on en.oid = e.extnamespace
                           where e.oid = d.objoid and (en.nspname in (select nspname from ns) or en.nspname = 'pg_catalog')))"""

# A function's source: its SQL-standard body (``RETURN ...``, ``BEGIN ATOMIC ... END``) deparsed, for which PostgreSQL
# keeps an empty ``prosrc``; otherwise the ``prosrc`` text (PostgreSQL 14 and later).
FUNCTION_SOURCE = "coalesce(pg_get_function_sqlbody(fn.oid), fn.prosrc)"

_SQL = (
    _DESCRIBE_SQL.replace("__FN_SOURCE__", FUNCTION_SOURCE)
    .replace("__DEFINITION__", _DEFINITION)
    .replace("__RANGE_OPCLASS__", RANGE_OPCLASS)
    .replace("__BUILTIN_ACLS__", BUILTIN_ACLS)
    .replace("__BUILTIN_ITEMS__(b.acl)", _builtin_items("b.acl"))
    .replace(
        "__BUILTIN_ITEMS__(coalesce(ip.initprivs, acldefault(b.objtype, b.owner)))",
        _builtin_items("coalesce(ip.initprivs, acldefault(b.objtype, b.owner))"),
    )
    .replace("__UNSCHEMED_COMMENTS__", UNSCHEMED_COMMENTS)
    .replace("__SCHEMA_ACL__", _acl("nspacl", "n", "nspowner"))
    .replace("__REL_ACL__", _acl("rel.relacl", "r", "rel.relowner"))  # 'r' and 's' defaults are both owner-only
    .replace("__COL_ACL__", _acl("a.attacl", "c", "rel.relowner", default=False))
    .replace("__FN_ACL__", _acl("fn.proacl", "f", "fn.proowner"))
    .replace("__TYP_ACL__", _acl("typ.typacl", "T", "typ.typowner"))
    .replace("__DEFACL__", _acl("da.defaclacl", "r", "da.defaclrole", default=False))
)
# The options of an aggregate beyond its state function, type, final and combine functions and initial condition:
# each is shown only when set (the moving-aggregate mode, (de)serialisation, sort operator, ...).
_AGG_OPTIONS = ", ".join(
    f"'{label} ' || nullif({expr}, {default})"
    for label, expr, default in (
        ("serialfunc", "ag.aggserialfn::regproc::text", "'-'"),
        ("deserialfunc", "ag.aggdeserialfn::regproc::text", "'-'"),
        ("msfunc", "ag.aggmtransfn::regproc::text", "'-'"),
        ("minvfunc", "ag.aggminvtransfn::regproc::text", "'-'"),
        ("mfinalfunc", "ag.aggmfinalfn::regproc::text", "'-'"),
        ("mstype", "format_type(nullif(ag.aggmtranstype, 0), null)", "''"),
        ("minitcond", "ag.aggminitval", "''"),
        ("sortop", "nullif(ag.aggsortop, 0)::regoperator::text", "''"),
        ("finalextra", "ag.aggfinalextra::text", "'false'"),
        ("mfinalextra", "ag.aggmfinalextra::text", "'false'"),
        ("finalmodify", "ag.aggfinalmodify::text", "case when ag.aggkind = 'n' then 'r' else 'w' end"),
        ("mfinalmodify", "ag.aggmfinalmodify::text", "'r'"),
        ("sspace", "ag.aggtransspace::text", "'0'"),
        ("msspace", "ag.aggmtransspace::text", "'0'"),
    )
)
_SQL = _SQL.replace("__AGG_OPTIONS__", _AGG_OPTIONS)
# An owner that is the describing role (the role that applies, on an environment; the build role, on the desired
# build) is ``<owner>``: objects a desired file does not give away belong to whoever creates them.
for _column in ("nspowner", "rel.relowner", "fn.proowner", "typ.typowner"):
    _SQL = _SQL.replace(
        f"__OWNER__({_column})",
        f"case when {_column} = current_user::regrole then '<owner>' else pg_get_userbyid({_column}) end",
    )


# The kinds of the description that the schema fingerprint's listing (``inspect.py``) does not cover. The
# fingerprint reads them beside its listing (:func:`extend_fingerprint`), so that a change an environment makes to
# any of them after it was seen in sync ends the daemon's fast path, which otherwise would keep reporting "in sync"
# while the description (and ``pg_dump``) differ: this guards against environment contents changed by hand.
UNLISTED_KINDS = (
    "owner",
    "builtin_acl",
    "property",
    "routine_options",
    "foreign_data_wrapper",
    "foreign_server",
    "user_mapping",
    "sequence_owned_by",
    "foreign_table",  # its server and options
    "operator",
    "operator_class",
    "operator_family",
    "text_search_configuration",
    "text_search_dictionary",
    "text_search_template",
    "text_search_parser",
    "conversion",
    "publication",
    "event_trigger",
    "cast",
)

# Only some kinds. The filter is applied to the whole description: measured on 200 tables, PostgreSQL prunes only
# a few of the union's branches, so this costs about 80% of a full description on a fresh session.
_KINDS_SQL = "select * from (" + _SQL + ") described where kind = any(%(kinds)s::text[])"


def describe(
    conn_or_dsn: Connection | str,
    options: DescribeOptions,
    *,
    kinds: Iterable[str] | None = None,
    connect_timeout: timedelta = timedelta(seconds=10),
    what: str = "describing the schema",
) -> tuple[CatalogRow, ...]:
    """The normalised catalog description of the managed schemas, read with ONE catalog query (only the rows of
    ``kinds``, if given)."""
    params = {
        "schemas": list(options.schemas),
        "exclude": list(options.exclude_schemas),
        "privileges": options.privileges,
        "owners": options.compare_owners,
        "ignore_order": options.ignore_column_order,
        "kinds": list(kinds or ()),
    }
    sql = _SQL if kinds is None else _KINDS_SQL
    rows = fetch_all(conn_or_dsn, sql, params, what=what, connect_timeout=connect_timeout)
    return tuple(_row(*r) for r in rows if not _empty_default_acl(r))


def extend_fingerprint(listing: str, unlisted: Iterable[CatalogRow]) -> str:
    """The fingerprint of a schema: the hash of its listing and of its description rows of :data:`UNLISTED_KINDS`
    (the listing's hash alone when there are none, so fingerprints of schemas without them stay as they were)."""
    rows = sorted(unlisted)
    if not rows:
        return listing
    text = json.dumps([listing, [[r.kind, r.object, r.detail] for r in rows]])
    return hashlib.sha256(text.encode()).hexdigest()


def _empty_default_acl(r: tuple[str, str, str | None, str]) -> bool:
    """Default privileges that grant nothing beyond the built-in defaults print nothing in ``pg_dump``."""
    return r[0] == "default_privileges" and not r[2]


_SPACES = re.compile(r"\s+")


def _row(kind: str, obj: str, detail: str | None, key: str) -> CatalogRow:
    return CatalogRow(str(kind), str(obj), _SPACES.sub(" ", detail or "").strip(), str(key))


def by_object(rows: Iterable[CatalogRow]) -> dict[tuple[str, str], CatalogRow]:
    """The rows keyed by (kind, object)."""
    return {(r.kind, r.object): r for r in rows}
