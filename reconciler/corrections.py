"""Corrections of migra's output where it fails on PostgreSQL 15 (see the README, "What migra gets wrong").

Each correction works on the two inspections and on migra's statements parsed with pglast; it never edits SQL text:

* **enum labels added** (appended, or inserted BEFORE/AFTER existing ones, nothing removed or reordered): migra
  renames the type, creates it again and recasts every column, which fails while a view or a partial index uses
  the type. The environment's inspection is shown to migra with the desired labels (:func:`with_added_labels`) and
  each label is added with ``ALTER TYPE ... ADD VALUE`` ahead of the plan. A removed or reordered label keeps
  migra's swap.
* **partitions of a table with a primary key** (or any index): creating a partition, or an index on the
  partitioned parent, creates the partition's index and constraint too; migra creates them again (``relation
  "..._pkey" already exists``) and adds the parent's key ``USING INDEX`` an ``ON ONLY`` index (``index "..." is
  not valid``). :func:`partition_fixes` leaves out what PostgreSQL creates itself, adds the parent's constraint
  from its definition, and builds the parent's other indexes on the whole tree.
* **a changed generated-column expression**: PostgreSQL 15 cannot alter it and migra emits ``SET DEFAULT``;
  :func:`partition_fixes` (the same pass) drops the column and adds it again with the desired expression.
* **grants to PUBLIC**: migra names the grantee as ``information_schema`` shows it, quoted (``to "PUBLIC"``), which
  names a role that does not exist; :func:`public_grantees` makes it the PUBLIC pseudo-role. (``information_schema``
  shows a role literally named ``PUBLIC`` the same way: such a role is taken to be PUBLIC.)
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from typing import Any

from pglast import ast, enums, parser
from pglast.stream import RawStream

AT = enums.AlterTableType
Inspection = Any  # schemainspect.pg.obj.PostgreSQL; untyped upstream


def _quoted(schema: str, name: str) -> str:
    return '"' + schema.replace('"', '""') + '"."' + name.replace('"', '""') + '"'


def added_labels(current: Inspection, desired: Inspection) -> dict[str, Any]:
    """The enums (by key) of ``desired`` that differ from the environment's only by added labels."""
    cur = getattr(current, "enums", None) or {}
    out: dict[str, Any] = {}
    for key, want in (getattr(desired, "enums", None) or {}).items():
        have = cur.get(key)
        if have is not None and have.elements != want.elements and have.can_be_changed_to(want):
            out[key] = want
    return out


def with_added_labels(current: Inspection, desired: Inspection) -> tuple[Inspection, list[str]]:
    """``current`` as it is once the labels that ``desired`` only adds are added, and the statements that add
    them (``ALTER TYPE ... ADD VALUE ... BEFORE/AFTER``). ``current`` itself is left untouched."""
    changed = added_labels(current, desired)
    if not changed:
        return current, []
    statements = [s.rstrip(";") for key, want in changed.items() for s in current.enums[key].change_statements(want)]
    out = copy.copy(current)
    out.enums = type(current.enums)(
        (k, _relabelled(v, changed[k]) if k in changed else v) for k, v in current.enums.items()
    )
    out.selectables = type(current.selectables)(
        (k, _with_enums(v, out.enums, changed)) for k, v in current.selectables.items()
    )
    return out, statements


def _relabelled(enum: Any, want: Any) -> Any:
    got = copy.copy(enum)
    got.elements = list(want.elements)
    return got


def _with_enums(selectable: Any, new_enums: Any, changed: dict[str, Any]) -> Any:
    """``selectable`` whose columns of a changed enum type name the relabelled enum (a copy; else itself)."""
    columns = getattr(selectable, "columns", None) or {}
    hits = [k for k, c in columns.items() if getattr(c, "is_enum", False) and c.enum.quoted_full_name in changed]
    if not hits:
        return selectable
    got = copy.copy(selectable)
    got.columns = type(columns)(columns)
    for k in hits:
        col = copy.copy(columns[k])
        col.enum = new_enums[col.enum.quoted_full_name]
        got.columns[k] = col
    return got


def partition_fixes(statements: Sequence[str], current: Inspection, desired: Inspection) -> list[str]:
    """migra's ``statements`` without what PostgreSQL creates on partitions itself, with the parents' indexes and
    constraints built on the whole partition tree, and changed generated columns dropped and added again."""
    owned = _constraint_indexes(statements)
    out: list[str] = []
    for sql in statements:
        out.extend(_fixed(sql, _parsed(sql), current, desired, owned))
    return _defaults_around_recasts(_without_cascaded_drops(out, current), current)


def _column_cmd(node: Any, subtype: Any) -> tuple[str, str] | None:
    """``(table key, column)`` of an ``ALTER TABLE ... ALTER COLUMN`` command of ``subtype`` (else None)."""
    cmd = _single_cmd(node)
    if cmd is None or cmd.subtype != subtype or not cmd.name:
        return None
    return _quoted(node.relation.schemaname or "public", str(node.relation.relname)), str(cmd.name)


def _defaults_around_recasts(statements: list[str], current: Inspection) -> list[str]:
    """migra's swap of an enum type recasts each column of it, and its default must be dropped first: a default the
    desired state drops is dropped only after the recast (``default ... cannot be cast automatically``), and one it
    adds is first "restored" as ``SET DEFAULT None``. The drop moves ahead of the recast; the restore of a default
    the environment does not have is left out."""
    nodes = [_parsed(sql) for sql in statements]
    out: list[str] = []
    dropped: set[tuple[str, str]] = set()
    moved: set[int] = set()
    for i, (sql, node) in enumerate(zip(statements, nodes, strict=True)):
        if i in moved:
            continue
        column = _column_cmd(node, AT.AT_ColumnDefault)
        if column is not None:
            have = _column(current, *column)
            default = _single_cmd(node).def_  # type: ignore[union-attr]  # a column command has one
            if default is None:
                dropped.add(column)
            elif have is not None and have.default is None and _is_none(default):
                continue  # migra's restore of a default the environment does not have
        recast = _column_cmd(node, AT.AT_AlterColumnType)
        have = _column(current, *recast) if recast is not None else None
        if recast is not None and have is not None and have.default is not None and recast not in dropped:
            later = next((j for j in range(i + 1, len(nodes)) if _drops_default(nodes[j], recast)), None)
            if later is not None:
                out.append(statements[later])
                moved.add(later)
                dropped.add(recast)
        out.append(sql)
    return out


def _is_none(default: Any) -> bool:
    return isinstance(default, ast.ColumnRef) and [getattr(f, "sval", None) for f in default.fields or ()] == ["none"]


def _drops_default(node: Any, column: tuple[str, str]) -> bool:
    cmd = _single_cmd(node)
    return cmd is not None and _column_cmd(node, AT.AT_ColumnDefault) == column and cmd.def_ is None


def _constraint_of(node: Any, cmd: Any) -> tuple[str, str]:
    return node.relation.schemaname or "public", str(cmd.name)


def _table_key(parts: list[str]) -> str:
    return _quoted(parts[-2] if len(parts) > 1 else "public", parts[-1])


def _without_cascaded_drops(statements: list[str], current: Inspection) -> list[str]:
    """Without the drops that PostgreSQL refuses or has already done: a partition's inherited constraint goes with
    its parent's (it cannot be dropped alone), and a partition with its dropped parent table."""
    inherited: frozenset[tuple[str, str]] = getattr(current, "inherited_constraints", frozenset())
    tables = getattr(current, "selectables", None) or {}
    out: list[str] = []
    gone: set[str] = set()
    for sql in statements:
        node = _parsed(sql)
        cmd = _single_cmd(node)
        if cmd is not None and cmd.subtype == AT.AT_DropConstraint and _constraint_of(node, cmd) in inherited:
            continue
        if isinstance(node, ast.DropStmt) and node.removeType == enums.ObjectType.OBJECT_TABLE:
            keys = [_table_key([str(v.sval) for v in obj]) for obj in node.objects or ()]
            if keys and all(getattr(tables.get(k), "parent_table", None) in gone for k in keys):
                continue
            gone.update(keys)
        out.append(sql)
    return out


def _parsed(sql: str) -> Any | None:
    try:
        raw = parser.parse_sql(sql)
    except parser.ParseError:
        return None
    return raw[0].stmt if len(raw) == 1 else None


def _constraint_indexes(statements: Sequence[str]) -> set[tuple[str, str]]:
    """``(schema, index)`` of each ``ADD CONSTRAINT ... USING INDEX`` of the plan."""
    found: set[tuple[str, str]] = set()
    for sql in statements:
        for node, con in _added_constraints(_parsed(sql)):
            if con.indexname:
                found.add((node.relation.schemaname or "public", str(con.indexname)))
    return found


def _single_cmd(node: Any) -> Any | None:
    """The one command of an ``ALTER TABLE`` (None for any other statement, or several commands)."""
    if not isinstance(node, ast.AlterTableStmt) or node.relation is None:
        return None
    cmds: tuple[Any, ...] = tuple(node.cmds or ())
    return cmds[0] if len(cmds) == 1 else None


def _added_constraints(node: Any) -> Iterator[tuple[Any, Any]]:
    cmd = _single_cmd(node)
    if cmd is not None and cmd.subtype == AT.AT_AddConstraint and isinstance(cmd.def_, ast.Constraint):
        yield node, cmd.def_


def _fixed(sql: str, node: Any, current: Inspection, desired: Inspection, owned: set[tuple[str, str]]) -> list[str]:
    """What runs for one of migra's statements."""
    if isinstance(node, ast.IndexStmt) and node.relation is not None and node.idxname:
        index = (node.relation.schemaname or "public", str(node.idxname))
        if _inherited(index, _quoted(*index), "inherited_indexes", "indexes", current, desired):
            return []  # the partition's index comes with the partition or with the parent's index
        if not node.relation.inh and _partitioned(node.relation, desired):
            if index in owned:
                return []  # the constraint below builds it, on the whole tree
            node.relation.inh = True  # ON ONLY leaves the index invalid: build it on every partition
            return [str(RawStream()(node))]
        return [sql]
    for table, con in _added_constraints(node):
        schema = table.relation.schemaname or "public"
        name = _quoted(schema, str(table.relation.relname))
        quoted_con = _quoted(schema, str(con.conname)).split(".", 1)[1]
        key = f"{name}.{quoted_con}"  # schemainspect's key of a constraint: "schema"."table"."name"
        if _inherited((schema, str(con.conname)), key, "inherited_constraints", "constraints", current, desired):
            return []
        found = (getattr(desired, "constraints", None) or {}).get(key)
        if con.indexname and found is not None and _partitioned(table.relation, desired):
            # USING INDEX is refused on a partitioned table: add the constraint from its definition
            return [f"alter table {name} add constraint {quoted_con} {found.definition}"]
    return _generated(sql, node, current, desired)


def _inherited(name: tuple[str, str], key: str, attr: str, kind: str, current: Inspection, desired: Inspection) -> bool:
    """Whether ``name`` is an index or constraint that the desired partition inherits and the environment (where
    its inspection key is ``key``) lacks."""
    return name in getattr(desired, attr, frozenset()) and key not in (getattr(current, kind, None) or {})


def _partitioned(relation: Any, desired: Inspection) -> bool:
    found = (getattr(desired, "selectables", None) or {}).get(
        _quoted(relation.schemaname or "public", str(relation.relname))
    )
    return found is not None and getattr(found, "relationtype", None) == "p"


def _generated(sql: str, node: Any, current: Inspection, desired: Inspection) -> list[str]:
    """A changed generation expression (``SET DEFAULT`` on a generated column, which PostgreSQL refuses) as a drop
    and an add of the column; any other statement as it is."""
    cmd = _single_cmd(node)
    if cmd is None or cmd.subtype != AT.AT_ColumnDefault:
        return [sql]
    table = _quoted(node.relation.schemaname or "public", str(node.relation.relname))
    have = _column(current, table, str(cmd.name))
    want = _column(desired, table, str(cmd.name))
    if not (have is not None and want is not None and have.is_generated and want.is_generated):
        return [sql]
    return [f"alter table {table} {have.drop_column_clause}", f"alter table {table} {want.add_column_clause}"]


def _column(inspection: Inspection, table: str, name: str) -> Any | None:
    found = (getattr(inspection, "selectables", None) or {}).get(table)
    return None if found is None else (getattr(found, "columns", None) or {}).get(name)


def public_grantees(statements: Sequence[str]) -> list[str]:
    """migra's GRANT and REVOKE statements with a grantee quoted as ``"PUBLIC"`` naming the PUBLIC pseudo-role."""
    return [_public_grantee(sql) for sql in statements]


def _public_grantee(sql: str) -> str:
    node = _parsed(sql)
    if not isinstance(node, ast.GrantStmt) or not any(_quoted_public(g) for g in node.grantees or ()):
        return sql
    node = copy.deepcopy(node)
    node.grantees = tuple(
        ast.RoleSpec(roletype=enums.RoleSpecType.ROLESPEC_PUBLIC) if _quoted_public(g) else g
        for g in node.grantees or ()
    )
    return str(RawStream()(node))


def _quoted_public(grantee: Any) -> bool:
    return (
        isinstance(grantee, ast.RoleSpec)
        and grantee.roletype == enums.RoleSpecType.ROLESPEC_CSTRING
        and grantee.rolename == "PUBLIC"
    )
