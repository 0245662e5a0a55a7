"""Plan-wide lookups built once per plan: what each statement creates, drops, renames, adds and refers to.

Checks that look beyond their own statement (a view dropped *and* recreated, a column dropped while another of the
same type is added, an index built on a table that an earlier statement creates) ask this index instead of
walking the plan again.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from pglast import ast, enums
from pglast.visitors import Visitor

from ..model import QualifiedName
from .names import dropped_key, dropped_name, qualified, qualified_child, qualified_name

OT = enums.ObjectType

# The kinds of object that live on a table, as :meth:`PlanIndex.dropped_children` names them.
_CHILD_KINDS = {"policy": OT.OBJECT_POLICY, "trigger": OT.OBJECT_TRIGGER}
AT = enums.AlterTableType

# Kinds whose drop and re-create in one plan must run together (see PlanIndex.pairs).
_PAIRED = ("policy", "trigger", "view", "matview", "function", "grant")


def _grant_keys(node: Any) -> list[str]:
    """One key per (object, grantee) of a GRANT or REVOKE on relations, as written (privileges left out)."""
    objects = [qualified(o) if isinstance(o, ast.RangeVar) else repr(o) for o in node.objects or ()]
    grantees = [str(getattr(r, "rolename", None) or getattr(r, "roletype", "?")) for r in node.grantees or ()]
    return [f"{node.objtype}:{o}:{g}" for o in objects for g in grantees]


@dataclass(frozen=True)
class AddedColumn:
    table: QualifiedName
    column: str
    type_name: Any  # pglast TypeName
    index: int


class _Refs(Visitor):
    """Collect the relations and functions a parse tree refers to."""

    def __init__(self) -> None:
        super().__init__()
        self.relations: set[QualifiedName] = set()
        self.functions: set[QualifiedName] = set()

    def visit_RangeVar(self, ancestors: Any, node: Any) -> None:
        self.relations.add(qualified(node))

    def visit_FuncCall(self, ancestors: Any, node: Any) -> None:
        self.functions.add(qualified_name(node.funcname))


def references(node: Any) -> tuple[set[QualifiedName], set[QualifiedName]]:
    """(relations, functions) referred to anywhere in ``node``."""
    v = _Refs()
    v(node)
    return v.relations, v.functions


@dataclass
class PlanIndex:
    """Where in the plan each object is created, dropped, renamed; relations are keyed by (schema, name), other
    objects by (kind, text of the name) whose quoting keeps it unambiguous."""

    created_relations: dict[QualifiedName, int] = field(default_factory=dict)
    created_table_columns: dict[QualifiedName, list[tuple[str, Any]]] = field(default_factory=dict)
    dropped: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, name) -> first index
    created: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, name) -> first index
    type_renames: dict[QualifiedName, tuple[QualifiedName, int]] = field(
        default_factory=dict
    )  # new name -> (old name, index)
    dropped_columns: dict[QualifiedName, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    added_columns: dict[QualifiedName, list[AddedColumn]] = field(default_factory=lambda: defaultdict(list))
    indexes_on: dict[QualifiedName, list[tuple[str, int]]] = field(default_factory=lambda: defaultdict(list))
    relation_refs: dict[int, set[QualifiedName]] = field(default_factory=dict)  # statement -> relations its body uses
    function_refs: dict[int, set[QualifiedName]] = field(default_factory=dict)  # statement -> functions its body calls
    not_valid_constraints: dict[tuple[QualifiedName, str], int] = field(default_factory=dict)  # (table, name) -> index
    dropped_tables: dict[QualifiedName, int] = field(default_factory=dict)  # table -> first index that drops it

    @classmethod
    def build(cls, statements: Iterable[tuple[int, Any | None]]) -> PlanIndex:
        """The index of a plan's statements, given as (position, parse tree or None if it did not parse)."""
        idx = cls()
        for i, node in statements:
            if node is not None:
                idx._add(i, node)
        return idx

    # -- queries ------------------------------------------------------------------------------------
    def created_before(self, name: QualifiedName, before: int) -> bool:
        at = self.created_relations.get(name)
        return at is not None and at < before

    def recreated_after(self, kind: str, name: QualifiedName | str, after: int) -> int | None:
        """The index of a statement after ``after`` that creates ``kind`` ``name`` again, if any."""
        at = self.created.get((kind, str(name)))
        return at if at is not None and at > after else None

    def dropped_children(self, node: Any, kind: str, at: int) -> Iterator[tuple[QualifiedName, str, int | None]]:
        """For each trigger or policy (``kind``) that the DROP statement ``node`` (statement ``at``) drops: its table,
        its name, and the later statement that creates it again (None if none does). Nothing for other drops."""
        if node.removeType != _CHILD_KINDS[kind]:
            return
        for obj in node.objects or ():
            table, name = qualified_child(obj)
            yield table, name, self.recreated_after(kind, f"{table}.{name}", at)

    def children_dropped_for_good(self, node: Any, kind: str, at: int) -> Iterator[tuple[QualifiedName, str]]:
        """(table, name) of each trigger or policy that ``node`` drops and no later statement creates again."""
        return ((table, name) for table, name, again in self.dropped_children(node, kind, at) if again is None)

    def children_recreated(self, node: Any, kind: str, at: int) -> Iterator[tuple[QualifiedName, str, int]]:
        """(table, name, the statement that creates it again) of each trigger or policy that ``node`` drops and a
        later statement creates again."""
        return ((t, n, again) for t, n, again in self.dropped_children(node, kind, at) if again is not None)

    def pairs(self) -> list[tuple[int, int]]:
        """(drop, re-create) positions of every object the plan drops and then creates again: policies, triggers,
        views, materialized views, functions and grants (a REVOKE followed by a GRANT to the same role on the same
        object). Each pair must run in one transaction, under one decision."""
        out = []
        for (kind, name), at in self.dropped.items():
            if kind in _PAIRED:
                again = self.recreated_after(kind, name, at)
                if again is not None:
                    out.append((at, again))
        return sorted(out)

    def dropped_before(self, kind: str, name: QualifiedName | str, before: int) -> int | None:
        at = self.dropped.get((kind, str(name)))
        return at if at is not None and at < before else None

    # -- building -----------------------------------------------------------------------------------
    def _mark(self, table: dict[tuple[str, str], int], kind: str, name: QualifiedName | str, i: int) -> None:
        table.setdefault((kind, str(name)), i)

    def _add(self, i: int, node: Any) -> None:
        if isinstance(node, ast.CreateStmt):
            name = qualified(node.relation)
            self.created_relations.setdefault(name, i)
            self._mark(self.created, "table", name, i)
            cols = [(str(e.colname), e.typeName) for e in node.tableElts or () if isinstance(e, ast.ColumnDef)]
            self.created_table_columns[name] = cols
        elif isinstance(node, ast.CreateSeqStmt):
            self.created_relations.setdefault(qualified(node.sequence), i)
        elif isinstance(node, ast.CreateTableAsStmt):
            into: Any = node.into
            name = qualified(into.rel)
            self.created_relations.setdefault(name, i)
            kind = "matview" if node.objtype == OT.OBJECT_MATVIEW else "table"
            self._mark(self.created, kind, name, i)
            self.relation_refs[i], self.function_refs[i] = references(node.query)
        elif isinstance(node, ast.ViewStmt):
            name = qualified(node.view)
            self._mark(self.created, "view", name, i)
            self.relation_refs[i], self.function_refs[i] = references(node.query)
        elif isinstance(node, ast.CreateFunctionStmt):
            self._mark(self.created, "function", qualified_name(node.funcname), i)
        elif isinstance(node, ast.CreateTrigStmt):
            table = qualified(node.relation)
            self._mark(self.created, "trigger", f"{table}.{node.trigname}", i)
            self.function_refs[i] = {qualified_name(node.funcname)}
        elif isinstance(node, ast.CreatePolicyStmt):
            self._mark(self.created, "policy", f"{qualified(node.table)}.{node.policy_name}", i)
        elif isinstance(node, ast.CreateEnumStmt | ast.CreateRangeStmt):
            self._mark(self.created, "type", qualified_name(node.typeName), i)
            if isinstance(node, ast.CreateEnumStmt):
                self._mark(self.created, "enum", qualified_name(node.typeName), i)
        elif isinstance(node, ast.CompositeTypeStmt):
            self._mark(self.created, "type", qualified(node.typevar), i)
        elif isinstance(node, ast.CreateDomainStmt):
            self._mark(self.created, "type", qualified_name(node.domainname), i)
        elif isinstance(node, ast.IndexStmt):
            self.indexes_on[qualified(node.relation)].append((str(node.idxname or ""), i))
        elif isinstance(node, ast.RenameStmt) and node.renameType in (OT.OBJECT_TYPE, OT.OBJECT_DOMAIN):
            renamed: Any = node.object
            old = qualified_name(renamed)
            self.type_renames[QualifiedName(old.schema, str(node.newname))] = (old, i)
        elif isinstance(node, ast.DropStmt):
            self._add_drop(i, node)
        elif isinstance(node, ast.GrantStmt):
            for key in _grant_keys(node):
                self._mark(self.created if node.is_grant else self.dropped, "grant", key, i)
        elif isinstance(node, ast.AlterTableStmt):
            self._add_alter_table(i, node)

    def _add_alter_table(self, i: int, node: Any) -> None:
        table = qualified(node.relation)
        for cmd in node.cmds or ():
            if cmd.subtype == AT.AT_DropColumn:
                self.dropped_columns[table].append((str(cmd.name), i))
            elif cmd.subtype == AT.AT_AddColumn and isinstance(cmd.def_, ast.ColumnDef):
                self.added_columns[table].append(AddedColumn(table, str(cmd.def_.colname), cmd.def_.typeName, i))
            elif (
                cmd.subtype == AT.AT_AddConstraint
                and isinstance(cmd.def_, ast.Constraint)
                and cmd.def_.skip_validation
                and cmd.def_.conname
            ):
                self.not_valid_constraints.setdefault((table, str(cmd.def_.conname)), i)

    def _add_drop(self, i: int, node: Any) -> None:
        kinds = {
            OT.OBJECT_TABLE: "table",
            OT.OBJECT_VIEW: "view",
            OT.OBJECT_MATVIEW: "matview",
            OT.OBJECT_FUNCTION: "function",
            OT.OBJECT_PROCEDURE: "function",
            OT.OBJECT_TYPE: "type",
            OT.OBJECT_DOMAIN: "type",
            OT.OBJECT_INDEX: "index",
            OT.OBJECT_SEQUENCE: "sequence",
        }
        for obj in node.objects or ():
            if node.removeType in (OT.OBJECT_TRIGGER, OT.OBJECT_POLICY):
                table, name = qualified_child(obj)
                kind = "trigger" if node.removeType == OT.OBJECT_TRIGGER else "policy"
                self._mark(self.dropped, kind, f"{table}.{name}", i)
            elif node.removeType in kinds:
                self._mark(self.dropped, kinds[node.removeType], dropped_name(obj), i)
                key = dropped_key(obj)
                if node.removeType == OT.OBJECT_TABLE and key is not None:
                    self.dropped_tables.setdefault(key, i)
