"""Approvals: who may approve or reject a queued plan, and whether a stored plan still matches a fresh one.

A plan is bound to its :class:`~reconciler.model.PlanKey`: the desired revision, its statements, the environment's
schema fingerprint, the database (address, cluster system identifier, database oid) and the digest of its steps,
hazards and decisions. It is also bound to the figures of the tables its destructive and data-dependent statements
touch: one that went from empty to holding rows, or from small to large, makes it stale. An approval is refused, and
the plan marked stale, once any of them changed.

Approvers (:func:`authenticate`). Approvals are signed by the store with the installation's secret; only approvals
whose signature verifies, by current approvers, count before a plan runs. The rule for who an approver is:

* With a token (the HTTP API's bearer token, or the CLI's ``--token-file``/``$RECONCILER_TOKEN``): it must be one
  of ``server.tokens`` and list the plan's environment; the approver is the token's identity (a ``--by`` that
  names someone else is refused).
* Without a token, only where nobody is named: an environment that lists ``approvers``, requires more than one
  approval, or an installation that configures ``server.tokens`` at all, refuses it. Elsewhere ``--by NAME`` is
  recorded as a claimed, unauthenticated name.

So one person holding one token is one approver, whatever names they type.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import structlog

from . import policy
from .config import Config, EnvironmentConfig, LargeTableConfig
from .errors import PlanError, StalePlanError, UnreachableError
from .locks import environment_lock
from .model import HazardKind, Plan, PlanKey, PlanStatus, Statement, TableStats, statements_hash, steps_digest
from .principals import find_principal, load_tokens, token_digest
from .store import PlanRecord, Store
from .target import Target

log = structlog.get_logger("reconciler")


@dataclass(frozen=True)
class Approver:
    """Who approves or rejects: an identity, and whether a token proved it (else the name was only claimed)."""

    identity: str
    authenticated: bool = False


def needs_token(config: Config, env: EnvironmentConfig) -> bool:
    """Whether deciding this environment's plans needs an authenticated approver (see the module's rule)."""
    return bool(env.approvers) or env.approvals_required > 1 or bool(config.server.tokens)


def authenticate(
    config: Config,
    target: Target,
    by: str | None,
    token: str | None,
    what: str,
    environ: Mapping[str, str] | None = None,
) -> Approver:
    """The approver of a CLI decision (``what``: "approve" or "reject") from ``--by`` and a token (see the rule)."""
    doing = f"{what} plans of environment {target.name!r}"
    if token is not None and token.strip():
        known = [(token_digest(t), p) for t, p in load_tokens(config, environ).items()]
        principal = find_principal(known, token)
        if principal is None:
            raise PlanError(f"{doing}: refused, the token is not one of server.tokens")
        if not principal.may_decide(target.name):
            raise PlanError(f"{doing}: refused, the token of {principal.identity!r} does not list {target.name!r}")
        if by and by != principal.identity:
            raise PlanError(
                f"{doing}: refused, --by {by!r} is not the identity of the token given ({principal.identity!r})"
            )
        return Approver(principal.identity, authenticated=True)
    if needs_token(config, target.env):
        raise PlanError(
            f"{doing}: refused without a token: the environment names its approvers or needs several approvals "
            "(or server.tokens is configured), so approvers authenticate with their token "
            "(--token-file PATH or $RECONCILER_TOKEN)"
        )
    if not by or not by.strip():
        raise PlanError(f"{doing}: needs the approver's name (--by) or a token")
    return Approver(by.strip())


def _approver(by: str | Approver) -> Approver:
    return by if isinstance(by, Approver) else Approver(by)


def check_approver(target: Target, record: PlanRecord, by: str, what: str) -> None:
    """Refuse ``by`` unless the environment lists no approvers or lists ``by``."""
    approvers = target.env.approvers
    if approvers and by not in approvers:
        raise PlanError(
            f"{what} plan {record.id}: {by!r} is not an approver of environment {record.environment!r} "
            f"(approvers: {', '.join(approvers)})"
        )


def approve(
    store: Store, target: Target, record: PlanRecord, by: str | Approver, fresh: Callable[[], PlanKey]
) -> PlanRecord:
    """Record ``by``'s approval of pending plan ``record``; it becomes approved once ``approvals_required`` different
    approvers approved it. ``fresh()`` gives the key a plan computed now would have (revision, fingerprint and
    database; the statements are not compared here): a pending plan whose key no longer matches is marked stale
    and the approval refused. A plain name is an unauthenticated approver."""
    who = _approver(by)
    if not who.identity.strip():
        raise PlanError("an approval needs the approver's name (--by)")
    check_approver(target, record, who.identity, "approve")
    denied = [s.sql for s in policy.denied(record.statements)]
    if denied:
        raise PlanError(
            f"approving plan {record.id}: refused, environment {record.environment!r}'s policy denies "
            f"{len(denied)} of its statements even with approval: {'; '.join(denied)}"
        )
    if record.status is PlanStatus.PENDING:
        now = fresh()
        why = record.key.mismatch(
            PlanKey(now.revision, record.statements_hash, now.fingerprint, now.database, now.steps)
        )
        if why is not None:
            mark_stale(store, record, why)
            raise StalePlanError(
                f"approving plan {record.id}: refused, the plan is stale: {why}; "
                f"`reconciler apply {record.environment}` computes a new plan"
            )
    required = target.env.approvals_required
    record = store.approve(record.id, who.identity, required=required, authenticated=who.authenticated)
    event = "plan_approved" if record.status is PlanStatus.APPROVED else "approval_recorded"
    log.info(
        event,
        environment=record.environment,
        plan_id=record.id,
        by=who.identity,
        authenticated=who.authenticated,
        approvals=len(record.approvers),
        required=required,
    )
    return record


def reject(
    store: Store, target: Target, record: PlanRecord, by: str | Approver, reason: str, *, lock_key: int
) -> PlanRecord:
    """Reject ``record``. While an apply holds the environment's lock (advisory lock ``lock_key``) it may be running
    this very plan: refuse (busy) rather than record a rejection that comes too late. An environment that cannot be
    reached is not being applied to from here; the applier also re-reads the plan's status before every attempt."""
    who = _approver(by)
    if not who.identity.strip():
        raise PlanError("a rejection needs the name of who rejects it (--by)")
    if not reason.strip():
        raise PlanError("a rejection needs a reason (--reason)")
    check_approver(target, record, who.identity, "reject")
    env = target.env
    try:
        with environment_lock(
            target.dsn,
            environment=target.name,
            key=lock_key,
            connect_timeout=env.connect_timeout,
            alert_after=env.lock_held_alert_after,
        ):
            record = store.reject(record.id, who.identity, reason, authenticated=who.authenticated)
    except UnreachableError:
        record = store.reject(record.id, who.identity, reason, authenticated=who.authenticated)
    log.info("plan_rejected", environment=record.environment, plan_id=record.id, by=who.identity)
    return record


def mark_stale(store: Store, record: PlanRecord, why: str) -> None:
    """A pending, approved or resumable failed plan that no longer matches: marked stale (and logged)."""
    allowed = [PlanStatus.PENDING, PlanStatus.APPROVED, PlanStatus.FAILED]
    store.transition(record.id, to=PlanStatus.STALE, allowed_from=allowed, event="plan_stale", reason=why)
    log.warning("plan_stale", environment=record.environment, plan_id=record.id, reason=why)


def _remaining(store: Store, record: PlanRecord) -> list[Statement]:
    done = set(record.completed_steps)
    return [s for i, s in enumerate(record.statements) if i not in done]


def expected_key(store: Store, record: PlanRecord) -> PlanKey:
    """The key a fresh plan must have for ``record`` to run: after completed steps, the remaining statements and the
    fingerprint recorded after the last of them."""
    if not record.completed_steps:
        return record.key
    remaining = _remaining(store, record)
    after = max(store.progress_of(record.id), key=lambda p: p.step_index).fingerprint_after
    return PlanKey(
        record.desired_revision,
        statements_hash([s.sql for s in remaining]),
        after,
        record.database,
        steps_digest(remaining),
    )


def mismatch(store: Store, target: Target, record: PlanRecord, fresh: Plan, *, needs_auth: bool = False) -> str | None:
    """Why approved (or resumable) plan ``record`` may not run now that a fresh diff yields ``fresh`` (None: it may).
    ``needs_auth``: only authenticated approvals count (see :func:`needs_token`)."""
    if record.environment != fresh.environment:
        return f"the plan is for environment {record.environment!r}, not {fresh.environment!r}"
    remaining = _remaining(store, record)
    why = expected_key(store, record).mismatch(fresh.key)
    if why is not None and "steps, hazards" in why:
        why = steps_changed(remaining, fresh.statements) or why
    if why is not None:
        done = len(record.completed_steps)
        return why + (f" (after its {done} completed step(s))" if done and "statements" in why else "")
    grown = tables_grew(remaining, fresh.statements, target.env.large_table)
    if grown is not None:
        return grown
    return approvals_short(record, target.env, needs_auth=needs_auth)


def approvals_short(record: PlanRecord, env: EnvironmentConfig, *, needs_auth: bool) -> str | None:
    """Why ``record``'s approvals are not enough to run it (None: they are). Only approvals whose signature verifies
    against the plan as stored count (not a row written behind the store's back), by current approvers, and where
    approvers authenticate, only authenticated ones."""
    approving = [a for a in record.approvals if a.decision == "approve"]
    forged = sorted({a.actor for a in approving if not a.verified})
    valid = {
        a.actor
        for a in approving
        if a.verified and (not env.approvers or a.actor in env.approvers) and (a.authenticated or not needs_auth)
    }
    if len(valid) >= env.approvals_required:
        return None
    unsigned = f"; approvals whose signature does not verify (not counted): {', '.join(forged)}" if forged else ""
    return (
        f"it has {len(valid)} valid approval(s) by current approvers; environment {record.environment!r} "
        f"requires {env.approvals_required}{unsigned}"
    )


def steps_changed(then: list[Statement], now: tuple[Statement, ...]) -> str | None:
    """Which statement's steps, hazards or decision changed between the approved plan and a fresh one."""
    for i, (a, b) in enumerate(zip(then, now, strict=False)):
        for part, show in (("steps", _steps), ("hazards", _hazards), ("decision", _decision)):
            x, y = show(a), show(b)
            if x != y:
                return f"the {part} of statement {i + 1} changed since the plan was computed ({x} then, {y} now)"
    return None


def _steps(s: Statement) -> str:
    return " | ".join(f"{e.sql}{'' if e.transactional else ' (alone)'}" for e in s.execution())


def _hazards(s: Statement) -> str:
    return ", ".join(f"{h.code} {h.kind.value} {h.severity.value}" for h in s.hazards) or "none"


def _decision(s: Statement) -> str:
    return s.decision.value


_DATA_KINDS = (HazardKind.DESTRUCTIVE, HazardKind.DATA_DEPENDENT)


def tables_grew(then: list[Statement], now: tuple[Statement, ...], large: LargeTableConfig) -> str | None:
    """A table that a destructive or data-dependent statement touches went from empty to holding rows, or from
    small to large, since the plan was computed (its stored figures against fresh ones)."""
    for i, (a, b) in enumerate(zip(then, now, strict=False)):
        if not any(h.kind in _DATA_KINDS for h in a.hazards):
            continue
        for table, was in a.tables.items():
            is_now = b.tables.get(table)
            if is_now is None:
                continue
            grew = _grew(was, is_now, large)
            if grew:
                return f"table {table}, which statement {i + 1} changes, {grew} since the plan was computed: {a.sql}"
    return None


def _large(st: TableStats, large: LargeTableConfig) -> bool:
    return st.bytes > large.bytes or (st.rows is not None and st.rows > large.rows)


def _grew(was: TableStats, now: TableStats, large: LargeTableConfig) -> str | None:
    if was.empty and not now.empty:
        return f"went from empty to holding rows (~{now.rows or 0:,} rows, {now.bytes:,} bytes now)"
    if not _large(was, large) and _large(now, large):
        return f"went from small to large ({was.bytes:,} bytes then, {now.bytes:,} bytes now)"
    return None
