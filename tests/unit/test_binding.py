"""What approvals bind to, without a database: the installation's secret, signatures, the lock key, database
identities, the steps digest, figures that grew, and the rule that says who an approver is."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from reconciler import signing
from reconciler.approvals import authenticate, needs_token, steps_changed, tables_grew
from reconciler.config import Config, EnvironmentConfig, LargeTableConfig
from reconciler.errors import ConfigError, PlanError
from reconciler.model import (
    DatabaseIdentity,
    Decision,
    ExecStep,
    Hazard,
    HazardKind,
    PlanKey,
    Severity,
    Statement,
    TableStats,
    steps_digest,
)
from reconciler.target import Target

DROP = Statement(
    'drop table "public"."t"',
    (Hazard("DS102", HazardKind.DESTRUCTIVE, Severity.DANGER, "drops table t (~10 rows)"),),
    Decision.NEEDS_APPROVAL,
    tables={"public.t": TableStats(rows=0, bytes=8192, heap_bytes=0)},
)


def test_the_signing_key_is_created_once_owner_only_and_kept(tmp_path: Path) -> None:
    path = tmp_path / "state" / "signing-key"
    key = signing.load_key(path)
    assert len(key) == signing.KEY_BYTES and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing.load_key(path) == key
    path.write_text("not hex")
    with pytest.raises(ConfigError, match="does not hold a key"):
        signing.load_key(path)


def test_signatures_and_lock_keys_need_the_secret() -> None:
    key, other = b"a" * 32, b"b" * 32
    fields = {"plan_id": 1, "actor": "alice", "steps": "x"}
    sig = signing.sign(key, fields)
    assert signing.verify(key, fields, sig)
    assert not signing.verify(other, fields, sig)
    assert not signing.verify(key, {**fields, "actor": "mallory"}, sig)
    assert not signing.verify(key, fields, "") and not signing.verify(key, fields, None)
    lock = signing.lock_key(key, "dev", "h:5432/db")
    assert -(2**63) <= lock < 2**63
    assert lock != signing.lock_key(other, "dev", "h:5432/db") != signing.lock_key(key, "prod", "h:5432/db")
    assert signing.derive(key, signing.AUDIT) != signing.derive(key, signing.APPROVALS)


IDENTITIES = [
    # (then, now, changed?)
    ("h:5432/app (system 1, oid 5)", "h:5432/app (system 1, oid 5)", False),
    ("h:5432/app (system 1, oid 5)", "h:5432/app (system 1, oid 6)", True),  # dropped and recreated
    ("h:5432/app (system 1, oid 5)", "h:5432/app (system 2, oid 5)", True),  # another cluster, same address
    ("h:5432/app (system 1, oid 5)", "h:5432/other (system 1, oid 5)", True),  # DSN re-pointed
    ("h:5432/app", "h:5432/app (system 2, oid 9)", False),  # stored before the identity was read: address only
]


@pytest.mark.parametrize(("then", "now", "changed"), IDENTITIES)
def test_database_identity(then: str, now: str, changed: bool) -> None:
    a, b = DatabaseIdentity.parse(then), DatabaseIdentity.parse(now)
    assert str(a) == then and str(b) == now
    why = a.changed(b)
    assert (why is not None) is changed
    key = PlanKey("r", "h", "f", then)
    assert (key.mismatch(PlanKey("r", "h", "f", now)) is not None) is changed
    if why:
        assert why.startswith("the database changed")


def test_the_steps_digest_binds_steps_hazards_and_decisions_not_messages_or_figures() -> None:
    base = steps_digest([DROP])
    reworded = Statement(
        DROP.sql, (Hazard("DS102", HazardKind.DESTRUCTIVE, Severity.DANGER, "other words"),), DROP.decision
    )
    assert steps_digest([reworded]) == base  # messages quote figures: not bound
    more = Statement(DROP.sql, (*DROP.hazards, Hazard("LK107", HazardKind.LOCK, Severity.INFO, "")), DROP.decision)
    denied = Statement(DROP.sql, DROP.hazards, Decision.DENIED)
    stepped = Statement(DROP.sql, DROP.hazards, DROP.decision, steps=(ExecStep("drop table keep"),))
    for changed, what in ((more, "hazards"), (denied, "decision"), (stepped, "steps")):
        assert steps_digest([changed]) != base
        why = steps_changed([DROP], (changed,))
        assert why is not None and why.startswith(f"the {what} of statement 1 changed"), why
    key = PlanKey("r", "h", "f", "d", base)
    assert key.mismatch(PlanKey("r", "h", "f", "d", steps_digest([denied]))) is not None
    assert Statement.from_record(DROP.to_record()) == DROP  # the stored form round-trips, emptiness included


def test_figures_that_grew_under_a_destructive_statement() -> None:
    large = LargeTableConfig(bytes=100_000, rows=1000)
    rows = TableStats(rows=3, bytes=8192, heap_bytes=8192)
    big = TableStats(rows=5000, bytes=900_000, heap_bytes=800_000)
    now = [Statement(DROP.sql, DROP.hazards, DROP.decision, tables={"public.t": st}) for st in (rows, big)]
    assert "from empty to holding rows" in (tables_grew([DROP], (now[0],), large) or "")
    assert "from small to large" in (tables_grew([now[0]], (now[1],), large) or "")
    assert tables_grew([now[1]], (now[0],), large) is None  # shrinking is no reason
    safe = Statement("create index i on t (x)", tables={"public.t": TableStats(rows=0, bytes=0)})
    assert tables_grew([safe], (Statement(safe.sql, tables={"public.t": big}),), large) is None


def _target(**env: object) -> Target:
    return Target("prod", EnvironmentConfig(dsn="postgresql://h/db", **env), "postgresql://h/db", "h:5432/db")  # type: ignore[arg-type]


def test_who_an_approver_is(tmp_path: Path) -> None:
    (tmp_path / "a").write_text("alice-token-0123456789\n")
    tokens = [
        {"identity": "alice", "token_file": str(tmp_path / "a"), "environments": ["prod"]},
        {"identity": "eve", "token_env": "EVE_TOKEN", "environments": ["dev"]},
    ]
    open_cfg = Config.model_validate({"environments": {"prod": {"dsn": "x"}, "dev": {"dsn": "y"}}})
    cfg = Config.model_validate({**open_cfg.model_dump(), "server": {"tokens": tokens}})
    environ = {"EVE_TOKEN": "eve-token-0123456789"}
    open_target, named = _target(), _target(approvers=("alice", "bob"))
    # No tokens anywhere, an open environment: a claimed name.
    assert not needs_token(open_cfg, open_target.env)
    who = authenticate(open_cfg, open_target, "carol", None, "approve")
    assert (who.identity, who.authenticated) == ("carol", False)
    assert needs_token(open_cfg, named.env) and needs_token(open_cfg, _target(approvals_required=2).env)
    assert needs_token(cfg, open_target.env)  # server.tokens configured: approvers authenticate
    who = authenticate(cfg, named, None, "alice-token-0123456789", "approve", environ)
    assert (who.identity, who.authenticated) == ("alice", True)
    refusals = [
        (named, "bob", "alice-token-0123456789", "is not the identity of the token given"),
        (named, "alice", None, "refused without a token"),
        (named, None, "eve-token-0123456789", "does not list 'prod'"),
        (named, None, "wrong-token-0123456789", "not one of server.tokens"),
    ]
    for target, by, token, error in refusals:
        with pytest.raises(PlanError, match=error):
            authenticate(cfg, target, by, token, "approve", environ)
