"""Default deny: which statement shapes the reconciler understands, and nothing else runs unattended.

A statement's *shape* is its parse-tree root type, refined where one type covers very different commands: the
object type of a ``DROP``, ``RENAME`` or ``ALTER ... SET SCHEMA``, each subcommand of an ``ALTER TABLE``, the
setting of a ``SET``, the options of an ``ALTER SEQUENCE``. Every shape is either

* **checked**: registered checks judge it (:data:`CHECKED` names the codes that do), or
* **harmless**: on the allow-list (:data:`HARMLESS`, with the reason it cannot lose data, run code or open access).

Any other shape (a new pglast node type, a new ``ALTER TABLE`` subcommand, ``DROP CAST``, ``SELECT f()``, ``DO``
...) is *unclassified*: the engine gives it UC101, which no configuration can run unattended. This stops a
desired-state author (or migra's output shaped by one) from reaching the environment with a statement that no check
understands.
"""

from __future__ import annotations

from enum import Enum
from typing import Any

from pglast import ast, enums

__all__ = ["CHECKED", "HARMLESS", "shapes", "unclassified"]

AT = enums.AlterTableType
OT = enums.ObjectType


def _name(value: Any, enum: type[Enum]) -> str:
    try:
        return enum(value).name
    except ValueError:
        return str(value)


def _alter_table(node: Any) -> tuple[str, ...]:
    return tuple(f"AlterTableStmt.{_name(c.subtype, AT)}" for c in node.cmds or ()) or ("AlterTableStmt",)


def _sequence_options(node: Any) -> tuple[str, ...]:
    names = [str(getattr(o, "defname", "?")) for o in node.options or ()]
    return tuple(f"AlterSeqStmt.{n}" for n in names) or ("AlterSeqStmt",)


# ALTER DOMAIN's subcommand letters -> shape names.
_DOMAIN_SUBTYPES = {
    "T": "default",
    "N": "drop_not_null",
    "O": "set_not_null",
    "C": "add_constraint",
    "X": "drop_constraint",
    "V": "validate_constraint",
}


def shapes(node: Any) -> tuple[str, ...]:
    """The shapes of one parsed statement (several for an ``ALTER TABLE`` with several subcommands)."""
    root = type(node).__name__
    if isinstance(node, ast.AlterTableStmt):
        return _alter_table(node)
    if isinstance(node, ast.DropStmt):
        return (f"DropStmt.{_name(node.removeType, OT)}",)
    if isinstance(node, ast.RenameStmt):
        return (f"RenameStmt.{_name(node.renameType, OT)}",)
    if isinstance(node, ast.AlterObjectSchemaStmt):
        return (f"AlterObjectSchemaStmt.{_name(node.objectType, OT)}",)
    if isinstance(node, ast.VariableSetStmt):
        return (f"VariableSetStmt.{node.name}",)
    if isinstance(node, ast.AlterEnumStmt):
        return ("AlterEnumStmt.rename_value" if node.oldVal else "AlterEnumStmt.add_value",)
    if isinstance(node, ast.AlterSeqStmt):
        return _sequence_options(node)
    if isinstance(node, ast.CreateSchemaStmt) and node.schemaElts:
        return ("CreateSchemaStmt.elements",)
    if isinstance(node, ast.AlterDomainStmt):
        return (f"AlterDomainStmt.{_DOMAIN_SUBTYPES.get(str(node.subtype), str(node.subtype))}",)
    if isinstance(node, ast.DefineStmt):
        return (f"DefineStmt.{_name(node.kind, OT)}",)
    if isinstance(node, ast.CreateTableAsStmt) and node.objtype != OT.OBJECT_MATVIEW:
        return ("CreateTableAsStmt.table",)
    return (root,)


def unclassified(node: Any) -> list[str]:
    """The shapes of ``node`` that are neither checked nor harmless."""
    return [s for s in shapes(node) if s not in CHECKED and s not in HARMLESS]


_AT = "AlterTableStmt."
_DROP = "DropStmt."

# Shapes that registered checks judge: shape -> the codes that do (tests hold every code to the registry).
CHECKED: dict[str, tuple[str, ...]] = {
    # ALTER TABLE subcommands
    _AT + "AT_AddColumn": ("MF101", "LK103", "CX104", "RN101"),
    _AT + "AT_ColumnDefault": ("CX104",),
    _AT + "AT_SetExpression": ("CX104",),
    _AT + "AT_DropNotNull": ("PR106",),
    _AT + "AT_SetNotNull": ("MF104", "LK104"),
    _AT + "AT_DropColumn": ("DS103", "RN101"),
    _AT + "AT_AddConstraint": ("MF102", "MF103", "MF105", "LK105", "LK106", "LK108", "CX104"),
    _AT + "AT_ValidateConstraint": ("MF106", "LK109"),
    _AT + "AT_DropConstraint": ("PR101",),
    _AT + "AT_AlterColumnType": ("DS107", "DS111", "LK102", "MF107", "CX104"),
    _AT + "AT_ChangeOwner": ("AZ110",),
    _AT + "AT_SetLogged": ("LK110",),
    _AT + "AT_SetUnLogged": ("DS114",),
    _AT + "AT_EnableTrig": ("CX102",),
    _AT + "AT_EnableAlwaysTrig": ("CX102",),
    _AT + "AT_EnableReplicaTrig": ("CX102",),
    _AT + "AT_EnableTrigAll": ("CX102",),
    _AT + "AT_EnableTrigUser": ("CX102",),
    _AT + "AT_DisableTrig": ("PR110",),
    _AT + "AT_DisableTrigAll": ("PR110",),
    _AT + "AT_DisableTrigUser": ("PR110",),
    _AT + "AT_DisableRule": ("PR110",),
    _AT + "AT_DropInherit": ("PR109",),
    _AT + "AT_DropOf": ("PR109",),
    _AT + "AT_DetachPartition": ("PR108",),
    _AT + "AT_DetachPartitionFinalize": ("PR108",),
    _AT + "AT_DropIdentity": ("PR107",),
    _AT + "AT_EnableRowSecurity": ("AZ101",),
    _AT + "AT_DisableRowSecurity": ("AZ102",),
    _AT + "AT_ForceRowSecurity": ("AZ103",),
    _AT + "AT_NoForceRowSecurity": ("AZ104",),
    # DROP
    _DROP + "OBJECT_SCHEMA": ("DS101",),
    _DROP + "OBJECT_TABLE": ("DS102", "RN102"),
    _DROP + "OBJECT_FOREIGN_TABLE": ("DS102",),
    _DROP + "OBJECT_SEQUENCE": ("DS104",),
    _DROP + "OBJECT_TYPE": ("DS105", "RC105"),
    _DROP + "OBJECT_DOMAIN": ("DS105", "RC105"),
    _DROP + "OBJECT_MATVIEW": ("DS106", "RC104"),
    _DROP + "OBJECT_EXTENSION": ("DS110",),
    _DROP + "OBJECT_POLICY": ("AZ106", "AZ107"),
    _DROP + "OBJECT_TRIGGER": ("PR103", "RC103"),
    _DROP + "OBJECT_RULE": ("PR110",),
    _DROP + "OBJECT_FUNCTION": ("PR104", "RC102"),
    _DROP + "OBJECT_PROCEDURE": ("PR104", "RC102"),
    _DROP + "OBJECT_ROUTINE": ("PR104",),
    _DROP + "OBJECT_VIEW": ("PR105", "RC101"),
    _DROP + "OBJECT_INDEX": ("PR102", "LK107"),
    # other statements
    "AlterSeqStmt.as": ("MF108",),
    "AlterSeqStmt.minvalue": ("MF108",),
    "AlterSeqStmt.maxvalue": ("MF108",),
    "AlterSeqStmt.cycle": ("MF108",),
    "AlterDomainStmt.add_constraint": ("MF109",),
    "AlterDomainStmt.set_not_null": ("MF109",),
    "AlterDomainStmt.validate_constraint": ("MF109",),
    "AlterDomainStmt.drop_constraint": ("PR111",),
    "AlterDomainStmt.drop_not_null": ("PR111",),
    "DefineStmt.OBJECT_AGGREGATE": ("CX105",),
    _DROP + "OBJECT_AGGREGATE": ("PR112",),
    _DROP + "OBJECT_COLLATION": ("DS115",),
    "TruncateStmt": ("DS108",),
    "DeleteStmt": ("DS109",),
    "UpdateStmt": ("DS112",),
    "MergeStmt": ("DS112",),
    "DropOwnedStmt": ("DS113",),
    "GrantStmt": ("AZ108", "AZ109"),
    "GrantRoleStmt": ("AZ108", "AZ109"),
    "AlterOwnerStmt": ("AZ110",),
    "AlterDefaultPrivilegesStmt": ("AZ112",),
    "CreatePolicyStmt": ("AZ105", "AZ106", "AZ114"),
    "AlterPolicyStmt": ("AZ106", "AZ114"),
    "CreateFunctionStmt": ("CX101", "AZ111", "AZ113"),
    "AlterFunctionStmt": ("CX101", "AZ111"),
    "CreateTrigStmt": ("CX102",),
    "CreateTableAsStmt": ("CX103",),
    "CreateTableAsStmt.table": ("CX103",),
    "RefreshMatViewStmt": ("CX103",),
    "IndexStmt": ("LK101", "MF102", "CX104"),
    "CreateExtensionStmt": ("EX102", "AZ115"),
    "AlterExtensionStmt": ("EX101",),
    "AlterObjectSchemaStmt.OBJECT_EXTENSION": ("EX103",),
}

# The allow-list: shapes that cannot lose data, run code on existing rows or open access as they are applied.
HARMLESS: dict[str, str] = {
    "CreateStmt": "a new table holds no rows; its defaults and checks run only on rows written later",
    "CreateSchemaStmt": "an empty schema",
    "CreateSeqStmt": "a new sequence",
    "CreateEnumStmt": "a new type",
    "CreateRangeStmt": "a new type",
    "CompositeTypeStmt": "a new type",
    "CreateDomainStmt": "a new domain: no column uses it yet",
    "CommentStmt": "a comment",
    "ViewStmt": "a view's query runs only when the view is read",
    "CreateStatsStmt": "extended statistics for the planner",
    "AlterEnumStmt.add_value": "a new enum label",
    "AlterSeqStmt.owned_by": "which column owns a sequence",
    "AlterDomainStmt.default": "a domain's default for rows written later",
    "DefineStmt.OBJECT_COLLATION": "a new collation: no column uses it yet",
    "AlterSeqStmt.increment": "the step of values handed out from now on",
    "AlterSeqStmt.cache": "how many values a session preallocates",
    "AlterSeqStmt.start": "the value a later RESTART goes back to (the current value stays)",
    "VariableSetStmt.check_function_bodies": "migra's own setting before function definitions",
    "RenameStmt.OBJECT_TYPE": "migra's enum change renames the old type away (RC105 follows it)",
    _DROP + "OBJECT_STATISTIC_EXT": "extended statistics for the planner",
    _AT + "AT_SetStatistics": "a planner setting",
    _AT + "AT_SetOptions": "a planner setting (n_distinct)",
    _AT + "AT_ResetOptions": "a planner setting (n_distinct)",
    _AT + "AT_SetStorage": "how new values are stored",
    _AT + "AT_SetCompression": "how new values are compressed",
    _AT + "AT_ClusterOn": "which index CLUSTER uses",
    _AT + "AT_DropCluster": "which index CLUSTER uses",
    _AT + "AT_DropExpression": "a generated column keeps its values and becomes a plain one",
    _AT + "AT_AddIdentity": "an existing column gets values from a sequence for new rows only",
    _AT + "AT_SetIdentity": "sequence options of an identity column",
}
