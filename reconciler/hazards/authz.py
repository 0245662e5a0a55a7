"""AZ1xx: statements that change who may see or change what (row-level security, policies, privileges)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pglast import ast, enums

from ..model import HazardKind, QualifiedName, Severity
from .context import ParsedStatement, PlanContext
from .names import alter_commands, qualified, qualified_name, relname
from .plan import references
from .registry import Rule, Select, check, check_rules

AT = enums.AlterTableType
OT = enums.ObjectType


def _rls(subtype: Any) -> Select:
    return lambda node, stmt, ctx: alter_commands(node, subtype)


check_rules(
    HazardKind.AUTHORIZATION,
    ["AlterTableStmt"],
    [
        Rule(
            "AZ101",
            Severity.WARNING,
            "row-level security enabled",
            _rls(AT.AT_EnableRowSecurity),
            lambda node, cmd, ctx: (
                f"enables row-level security on {relname(node.relation)}: roles other than the owner see and change "
                "only the rows a policy allows (none without a policy)"
            ),
        ),
        Rule(
            "AZ102",
            Severity.DANGER,
            "row-level security disabled",
            _rls(AT.AT_DisableRowSecurity),
            lambda node, cmd, ctx: (
                f"disables row-level security on {relname(node.relation)}: its policies stop applying; every role "
                "with table privileges sees every row"
            ),
        ),
        Rule(
            "AZ103",
            Severity.WARNING,
            "row-level security forced on the owner",
            _rls(AT.AT_ForceRowSecurity),
            lambda node, cmd, ctx: (
                f"forces row-level security on {relname(node.relation)}: its owner is now restricted by its policies "
                "too"
            ),
        ),
        Rule(
            "AZ104",
            Severity.DANGER,
            "row-level security no longer forced",
            _rls(AT.AT_NoForceRowSecurity),
            lambda node, cmd, ctx: (
                f"stops forcing row-level security on {relname(node.relation)}: its owner bypasses the policies again"
            ),
        ),
    ],
)


def _policy_key(node: Any) -> str:
    return f"{qualified(node.table)}.{node.policy_name}"


@check(
    "AZ105", HazardKind.AUTHORIZATION, Severity.WARNING, "row-level security policy created", nodes=["CreatePolicyStmt"]
)
def policy_created(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if ctx.plan.dropped_before("policy", _policy_key(node), stmt.index) is None:
        yield f"creates policy {node.policy_name} on {relname(node.table)}: changes which rows roles may see or change"


@check(
    "AZ106",
    HazardKind.AUTHORIZATION,
    Severity.WARNING,
    "row-level security policy changed",
    nodes=["CreatePolicyStmt", "AlterPolicyStmt", "DropStmt"],
)
def policy_changed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if isinstance(node, ast.AlterPolicyStmt):
        yield f"changes policy {node.policy_name} on {relname(node.table)}: changes which rows roles may see or change"
    elif isinstance(node, ast.CreatePolicyStmt):
        dropped = ctx.plan.dropped_before("policy", _policy_key(node), stmt.index)
        if dropped is not None:
            yield (
                f"recreates policy {node.policy_name} on {relname(node.table)} (dropped by statement {dropped + 1}) "
                "with a new definition: changes which rows roles may see or change"
            )
    else:
        for table, name, again in ctx.plan.children_recreated(node, "policy", stmt.index):
            yield (
                f"drops policy {name} on {table} to recreate it (statement {again + 1}): if the two do not run in "
                "one transaction, the table goes without this policy in between"
            )


@check("AZ107", HazardKind.AUTHORIZATION, Severity.DANGER, "row-level security policy dropped", nodes=["DropStmt"])
def policy_dropped(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    for table, name in ctx.plan.children_dropped_for_good(node, "policy", stmt.index):
        yield f"drops policy {name} on {table}: the rows it allowed become invisible, or the rows it hid visible"


def _grant_text(node: Any) -> str:
    privs = ", ".join(str(p.priv_name) for p in node.privileges or ()) or "ALL"
    objs = ", ".join(
        relname(o) if isinstance(o, ast.RangeVar) else str(qualified_name(getattr(o, "objname", None) or [o]))
        for o in node.objects or ()
    )
    roles = ", ".join(_role(r) for r in node.grantees or ())
    return f"{privs} on {objs or '?'} {'to' if node.is_grant else 'from'} {roles or '?'}"


def _role(spec: Any) -> str:
    if isinstance(spec, ast.RoleSpec):
        kind: Any = spec.roletype
        if kind == enums.RoleSpecType.ROLESPEC_PUBLIC:
            return "PUBLIC"
        return str(spec.rolename or (kind.name.removeprefix("ROLESPEC_").lower() if kind is not None else "?"))
    return str(spec)


@check("AZ108", HazardKind.AUTHORIZATION, Severity.WARNING, "privileges granted", nodes=["GrantStmt", "GrantRoleStmt"])
def granted(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if isinstance(node, ast.GrantRoleStmt):
        if node.is_grant:
            yield "grants role membership: the grantees gain every privilege of the granted roles"
        return
    if node.is_grant:
        extra = " (PUBLIC: every role)" if any(_role(r) == "PUBLIC" for r in node.grantees or ()) else ""
        yield f"grants {_grant_text(node)}{extra}"


@check("AZ109", HazardKind.AUTHORIZATION, Severity.WARNING, "privileges revoked", nodes=["GrantStmt", "GrantRoleStmt"])
def revoked(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if isinstance(node, ast.GrantRoleStmt):
        if not node.is_grant:
            yield "revokes role membership: the grantees lose the privileges of those roles"
        return
    if not node.is_grant:
        yield f"revokes {_grant_text(node)}: queries of those roles start failing"


@check("AZ110", HazardKind.AUTHORIZATION, Severity.WARNING, "owner changed", nodes=["AlterOwnerStmt", "AlterTableStmt"])
def owner_changed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if isinstance(node, ast.AlterTableStmt):
        for cmd in alter_commands(node, AT.AT_ChangeOwner):
            yield f"gives {relname(node.relation)} to {_role(cmd.newowner)}: the owner bypasses row-level security and holds every privilege"
        return
    yield f"gives an object to {_role(node.newowner)}: the owner holds every privilege on it"


@check(
    "AZ111",
    HazardKind.AUTHORIZATION,
    Severity.WARNING,
    "SECURITY DEFINER function",
    nodes=["CreateFunctionStmt", "AlterFunctionStmt"],
)
def security_definer(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    options = node.options if isinstance(node, ast.CreateFunctionStmt) else node.actions
    for opt in options or ():
        if isinstance(opt, ast.DefElem) and opt.defname == "security" and getattr(opt.arg, "boolval", False):
            name = qualified_name(node.funcname if isinstance(node, ast.CreateFunctionStmt) else node.func.objname)
            yield f"function {name} runs with its owner's privileges (SECURITY DEFINER): check its search_path and who may execute it"


@check(
    "AZ112",
    HazardKind.AUTHORIZATION,
    Severity.WARNING,
    "default privileges changed",
    nodes=["AlterDefaultPrivilegesStmt"],
)
def default_privileges(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield "changes default privileges: objects created from now on get other grants"


def _function_users(name: QualifiedName, stmt: ParsedStatement, ctx: PlanContext) -> list[str]:
    """What uses function ``name``: policies and triggers of the plan, and those the environment records."""
    users: list[str] = []
    for other in ctx.statements:
        node = other.node
        if isinstance(node, ast.CreatePolicyStmt | ast.AlterPolicyStmt):
            used = {f for e in (node.qual, node.with_check) if e is not None for f in references(e)[1]}
            if name in used:
                users.append(f"policy {node.policy_name} on {relname(node.table)}")
        elif isinstance(node, ast.CreateTrigStmt) and qualified_name(node.funcname) == name:
            users.append(f"trigger {node.trigname} on {relname(node.relation)}")
    users += [u for u in ctx.function_users.get(name, ()) if u not in users]
    return users


@check(
    "AZ113",
    HazardKind.AUTHORIZATION,
    Severity.DANGER,
    "function used by a policy or trigger changed",
    nodes=["CreateFunctionStmt"],
)
def guarding_function_changed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    name = qualified_name(node.funcname)
    users = _function_users(name, stmt, ctx)
    if users:
        yield (
            f"changes function {name}, which {', '.join(users)} use(s): a new body changes who may see or change "
            "which rows"
        )


def _literally_true(expr: Any) -> bool:
    return isinstance(expr, ast.A_Const) and isinstance(expr.val, ast.Boolean) and bool(expr.val.boolval)


@check(
    "AZ114",
    HazardKind.AUTHORIZATION,
    Severity.DANGER,
    "permissive policy that allows every row",
    nodes=["CreatePolicyStmt", "AlterPolicyStmt"],
)
def policy_allows_all(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    if isinstance(node, ast.CreatePolicyStmt) and not node.permissive:
        return
    for clause, expr in (("USING", node.qual), ("WITH CHECK", node.with_check)):
        if _literally_true(expr):
            yield (
                f"policy {node.policy_name} on {relname(node.table)} is permissive with {clause} (true): for its "
                "roles it is as if row-level security were disabled"
            )


@check("AZ115", HazardKind.AUTHORIZATION, Severity.WARNING, "extension created", nodes=["CreateExtensionStmt"])
def extension_installed(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    yield (
        f"installs extension {node.extname}: its script runs with the installing role's (often a superuser's) "
        "rights and may create functions, casts and grants"
    )


# View options whose removal lets a view's readers see more: security_invoker (off: the view reads its tables with
# its owner's privileges and row-level security) and security_barrier (off: the planner may push a reader's leaky
# function below the view's filter).
_VIEW_GUARDS = frozenset({"security_invoker", "security_barrier"})
_FALSE = frozenset({"false", "off", "no", "0", "f"})


def _turned_off(cmd: Any) -> Iterator[str]:
    for opt in cmd.def_ or ():
        if not isinstance(opt, ast.DefElem) or opt.defname not in _VIEW_GUARDS or opt.defnamespace:
            continue
        if cmd.subtype == AT.AT_ResetRelOptions:
            yield str(opt.defname)
            continue
        if _option_text(opt.arg) in _FALSE:
            yield str(opt.defname)


def _option_text(value: Any) -> str:
    """A relation option's value as written (``= false``, ``= off``, ``= 'no'``, ``= 0``); "true" when bare."""
    if value is None:
        return "true"
    if isinstance(value, ast.Boolean):
        return "true" if value.boolval else "false"
    if isinstance(value, ast.Integer):
        return str(value.ival)
    if isinstance(value, ast.TypeName) and value.names:
        return str(value.names[-1].sval).lower()
    return str(getattr(value, "sval", "")).lower()


@check("AZ116", HazardKind.AUTHORIZATION, Severity.DANGER, "view security option turned off", nodes=["AlterTableStmt"])
def view_guard_off(node: Any, stmt: ParsedStatement, ctx: PlanContext) -> Iterator[str]:
    """Guards against a desired-state author (or an environment's drift closed by the plan) quietly widening what a
    view's readers see: RESET or SET ... = false of security_invoker / security_barrier needs a person."""
    for cmd in alter_commands(node, AT.AT_SetRelOptions, AT.AT_ResetRelOptions):
        for name in _turned_off(cmd):
            yield (
                f"turns {name} off on {relname(node.relation)}: the view's readers may see rows or columns that "
                "its tables' privileges or row-level security hide from them"
            )
