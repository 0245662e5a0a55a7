"""Red team: approvals bind to the database and to what runs, approvers are who they say, the audit chain and the
apply lock hold against whoever can write the store or connect to the environment. Real PostgreSQL throughout.

Who each case stands for: an operator who re-points a DSN (config is trusted, but mistakes happen), environment
contents (rows arriving, other sessions), a person with one token posing as two approvers, and whoever can write the
state store but not read the installation's signing key.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
from conftest import cli, cli_json, run_sql

from reconciler.db import parse_dsn
from reconciler.errors import BusyError, ReconcilerError
from reconciler.obs.metrics import Metrics
from reconciler.pgembedded import EmbeddedPostgres
from reconciler.reconcile.board import StatusBoard
from reconciler.reconcile.loop import ReconcileContext, reconcile
from reconciler.reconcile.result import Request
from reconciler.service import Reconciler
from reconciler.status import ConditionType, Reason
from reconciler.store.store import GENESIS, AuditFields, audit_hash

KEEP = "create table keep (id int primary key);\n"
CURRENT = KEEP + "create table gone (id int, v text);\ninsert into gone values (1, 'a'), (2, 'b');\n"


def rows_of(dsn: str, table: str) -> int:
    return int(run_sql(dsn, f"select count(*) from {table}")[0][0])


def store_sql(cfg: Path, text: str, **params: Any) -> list[Any]:
    """SQL on the state store behind the reconciler's back (the store is the project's SQLite file)."""
    engine = sa.create_engine(f"sqlite:///{cfg.parent / 'state.db'}")
    try:
        with engine.begin() as conn:
            res = conn.execute(sa.text(text), params)
            return list(res) if res.returns_rows else []
    finally:
        engine.dispose()


def approved_drop(capsys: pytest.CaptureFixture[str], cfg: Path) -> int:
    """Queue the plan that drops table ``gone`` and approve it (an open environment: one approval by name)."""
    pid = cli_json(capsys, "-c", str(cfg), "apply", "dev")["queued_plan_id"]
    assert pid is not None
    assert cli_json(capsys, "-c", str(cfg), "approve", str(pid), "--by", "alice")["status"] == "approved"
    return int(pid)


# -- 1. the database -------------------------------------------------------------------------------------------


def _another_database(make_db: Callable[..., str], pg: EmbeddedPostgres, dsn: str) -> str:
    return make_db(CURRENT)


def _same_name_recreated(make_db: Callable[..., str], pg: EmbeddedPostgres, dsn: str) -> str:
    name = parse_dsn(dsn)["dbname"]
    with psycopg.connect(pg.dsn(), autocommit=True) as conn:
        conn.execute(f'drop database "{name}" with (force)'.encode())
    return make_db(CURRENT, name=name)


@pytest.mark.parametrize("repoint", [_another_database, _same_name_recreated], ids=["dsn-repointed", "recreated"])
def test_an_approved_drop_never_runs_on_another_database(
    repoint: Callable[..., str],
    make_db: Callable[..., str],
    project: Callable[..., Path],
    pg_server: EmbeddedPostgres,
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = make_db(CURRENT)
    cfg = project({"010.sql": KEEP}, {"dev": {"dsn": dsn}})
    pid = approved_drop(capsys, cfg)
    other = repoint(make_db, pg_server, dsn)
    cfg = project({"010.sql": KEEP}, {"dev": {"dsn": other}})  # the operator re-points dev (or it was recreated)
    out = cli_json(capsys, "-c", str(cfg), "apply", "dev")
    assert out["stale_plan_id"] == pid and out["applied"] == [] and out["applied_plan_id"] is None
    assert rows_of(other, "gone") == 2  # the other database keeps its table and rows
    plan = next(p for p in cli_json(capsys, "-c", str(cfg), "plans") if p["id"] == pid)
    assert plan["status"] == "stale" and "the database changed" in plan["reason"]
    assert "(system " in plan["database"] and ", oid " in plan["database"]


# -- 2. the steps, hazards, decisions and figures ------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    """After approval, something changes that a fresh plan sees; the approved plan must go stale."""

    name: str
    env_after: dict[str, Any]  # environment settings after approval (the config is rewritten)
    environment_sql: str  # run on the environment after approval
    reason: str  # in the stale plan's reason
    env_before: dict[str, Any] | None = None
    current: str = CURRENT
    desired: str = KEEP  # drops table gone


BINDING_CASES = [
    Change(
        "hazards",  # the table now counts as large: dropping its column takes a lock on a large table (LK107)
        {"large_table": {"bytes": "1kB"}},
        "",
        "the hazards of statement 1 changed",
        desired=KEEP + "create table gone (id int);\n",
    ),
    Change("decision", {"policy": {"deny": ["DS102"]}}, "", "the decision of statement 1 changed"),
    Change(
        "empty-to-rows",
        {},
        "insert into gone values (7, 'new')",
        "went from empty to holding rows",
        current=KEEP + "create table gone (id int, v text);\n",
    ),
    Change(
        "small-to-large",
        {"large_table": {"bytes": "256kB"}},
        "insert into gone select g, repeat('x', 100) from generate_series(10, 5000) g",
        "went from small to large",
        env_before={"large_table": {"bytes": "256kB"}},
    ),
]


@pytest.mark.parametrize("case", BINDING_CASES, ids=[c.name for c in BINDING_CASES])
def test_an_approved_plan_goes_stale_when_what_would_run_changed(
    case: Change, make_db: Callable[..., str], project: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    dsn = make_db(case.current)
    before = rows_of(dsn, "gone")
    cfg = project({"010.sql": case.desired}, {"dev": {"dsn": dsn, **(case.env_before or {})}})
    pid = approved_drop(capsys, cfg)
    if case.environment_sql:
        run_sql(dsn, case.environment_sql)
    cfg = project({"010.sql": case.desired}, {"dev": {"dsn": dsn, **case.env_after}})
    out = cli_json(capsys, "-c", str(cfg), "apply", "dev")
    assert out["stale_plan_id"] == pid and out["applied_plan_id"] is None, out
    assert rows_of(dsn, "gone") >= before  # the table is still there
    assert run_sql(dsn, "select count(v) from gone")[0][0] >= 1  # and its column v
    plan = next(p for p in cli_json(capsys, "-c", str(cfg), "plans") if p["id"] == pid)
    assert plan["status"] == "stale" and case.reason in plan["reason"], plan["reason"]


# -- 3. the approver -------------------------------------------------------------------------------------------


def tokens_for(folder: Path, *names: str) -> tuple[list[dict[str, Any]], dict[str, str]]:
    entries, files = [], {}
    for name in names:
        path = folder / f"{name}.token"
        path.write_text(f"{name}-{hashlib.sha256(name.encode()).hexdigest()[:24]}\n")
        path.chmod(0o600)
        entries.append({"identity": name, "token_file": str(path), "environments": ["prod" if name != "ops" else "*"]})
        files[name] = str(path)
    return entries, files


# (arguments after "approve PLAN_ID", environment variables, expected error) for the second approval, after
# alice approved with her token: every way one person could try to count twice, or anyone without a token.
IMPERSONATIONS = [
    (["--token-file", "{alice}", "--by", "bob"], {}, "is not the identity of the token given ('alice')"),
    (["--token-file", "{alice}"], {}, "already approved by alice"),
    ([], {"RECONCILER_TOKEN": "@alice"}, "already approved by alice"),
    (["--by", "bob"], {}, "refused without a token"),
    (["--by", "bob"], {"RECONCILER_TOKEN": "not-a-token-of-anyone-at-all"}, "the token is not one of server.tokens"),
]


def test_one_person_with_one_token_is_one_approver(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    dsn = make_db(CURRENT)
    entries, files = tokens_for(tmp_path, "alice", "bob")
    env = {"dsn": dsn, "approvers": ["alice", "bob"], "approvals_required": 2}
    cfg = str(project({"010.sql": KEEP}, {"prod": env}, server={"tokens": entries}))
    pid = str(cli_json(capsys, "-c", cfg, "apply", "prod")["queued_plan_id"])
    assert cli(capsys, "-c", cfg, "approve", pid, "--token-file", files["alice"])[0] == 0
    for args, environ, error in IMPERSONATIONS:
        for k, v in environ.items():
            monkeypatch.setenv(k, Path(files[v[1:]]).read_text().strip() if v.startswith("@") else v)
        code, _, err = cli(capsys, "-c", cfg, "approve", pid, *[a.format(**files) for a in args])
        assert code == 1 and error in err, (args, err)
        for k in environ:
            monkeypatch.delenv(k)
    out = cli_json(capsys, "-c", cfg, "apply", "prod")
    assert out["applied"] == [] and out["queued_plan_id"] == int(pid)
    assert rows_of(dsn, "gone") == 2
    code, _, err = cli(capsys, "-c", cfg, "reject", pid, "--by", "bob", "--reason", "no")
    assert code == 1 and "refused without a token" in err


def _insert_approval(cfg: Path, pid: int) -> None:
    """An approvals row by 'mallory' with a guessed signature, and the plan flipped to approved."""
    store_sql(
        cfg,
        "insert into reconciler_approvals (plan_id, environment, actor, decision, at, desired_revision, fingerprint, "
        "statements_hash, signature) select id, environment, 'mallory', 'approve', updated_at, desired_revision, "
        "fingerprint, statements_hash, :sig from reconciler_plans where id = :id",
        id=pid,
        sig=hashlib.sha256(b"guess").hexdigest(),
    )
    store_sql(cfg, "update reconciler_plans set status = 'approved' where id = :id", id=pid)


def _rewrite_steps(cfg: Path, pid: int) -> None:
    """The approved plan's stored steps now run something else under the same SQL."""
    stored = json.loads(store_sql(cfg, "select statements from reconciler_plans where id = :id", id=pid)[0][0])
    for s in stored:
        s["steps"] = [{"sql": "drop table keep", "transactional": True}]
    store_sql(cfg, "update reconciler_plans set statements = :s where id = :id", s=json.dumps(stored), id=pid)


FORGERIES = [("approval-row-inserted", _insert_approval, False), ("plan-steps-rewritten", _rewrite_steps, True)]


@pytest.mark.parametrize(("forgery", "forge", "approve_first"), FORGERIES, ids=[f[0] for f in FORGERIES])
def test_a_forged_store_never_runs_a_plan(
    forgery: str,
    forge: Callable[[Path, int], None],
    approve_first: bool,
    make_db: Callable[..., str],
    project: Callable[..., Path],
    capsys: pytest.CaptureFixture[str],
) -> None:
    dsn = make_db(CURRENT)
    cfg = project({"010.sql": KEEP}, {"dev": {"dsn": dsn}})
    if approve_first:
        pid = approved_drop(capsys, cfg)
    else:
        pid = cli_json(capsys, "-c", str(cfg), "apply", "dev")["queued_plan_id"]
    forge(cfg, pid)
    before = next(p for p in cli_json(capsys, "-c", str(cfg), "plans") if p["id"] == pid)
    assert before["status"] == "approved" and not all(a["verified"] for a in before["approvals"])
    out = cli_json(capsys, "-c", str(cfg), "apply", "dev")
    assert out["applied_plan_id"] is None and out["stale_plan_id"] == pid
    assert rows_of(dsn, "gone") == 2 and run_sql(dsn, "select count(*) from keep") == [(0,)]
    reason = cli_json(capsys, "-c", str(cfg), "plans", "--status", "stale")[0]["reason"]
    assert "signature does not verify" in reason or "steps of statement 1 changed" in reason, reason


# -- audit chain -----------------------------------------------------------------------------------------------


def test_a_recomputed_or_truncated_audit_chain_is_detected(
    make_db: Callable[..., str], project: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = project({"010.sql": KEEP}, {"dev": {"dsn": make_db(CURRENT)}})
    c = str(cfg)
    approved_drop(capsys, cfg)
    check = cli_json(capsys, "-c", c, "audit", "verify")
    assert check["ok"] and check["head"] and check["head_id"] == check["records"]
    head = check["head"]
    # Whoever can write the store rewrites a record and recomputes the chain as a plain sha256 chain: no key.
    store_sql(cfg, "update reconciler_audit set actor = 'mallory' where event = 'plan_approved'")
    prev = GENESIS
    for r in store_sql(
        cfg, "select id, at, environment, event, plan_id, actor, payload from reconciler_audit order by id"
    ):
        new = audit_hash(
            AuditFields(prev, datetime.fromisoformat(r.at), r.environment, r.event, r.plan_id, r.actor, r.payload)
        )
        store_sql(cfg, "update reconciler_audit set prev_hash = :p, hash = :h where id = :i", p=prev, h=new, i=r.id)
        prev = new
    code, out, _ = cli(capsys, "-c", c, "audit", "verify")
    assert code == 1 and "record 1 " in out and "signing key" in out
    # Truncating the tail keeps a valid chain; the head exported before is gone from it.
    cfg2 = project({"010.sql": KEEP}, {"dev": {"dsn": make_db(CURRENT)}}, state="sqlite:///state2.db")
    c2 = str(cfg2)
    cli_json(capsys, "-c", c2, "apply", "dev")
    head = cli_json(capsys, "-c", c2, "audit", "verify")["head"]
    engine = sa.create_engine(f"sqlite:///{cfg2.parent / 'state2.db'}")
    with engine.begin() as conn:
        conn.execute(sa.text("delete from reconciler_audit where id = (select max(id) from reconciler_audit)"))
    engine.dispose()
    assert cli(capsys, "-c", c2, "audit", "verify")[0] == 0  # a shorter chain is still a chain ...
    code, out, _ = cli(capsys, "-c", c2, "audit", "verify", "--expect-head", head)
    assert code == 1 and "rewritten or truncated" in out  # ... but not the one whose head was exported


# -- 4. races --------------------------------------------------------------------------------------------------


def test_an_approval_during_unattended_passes_never_stalls_the_environment(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(CURRENT)
    cfg = project({"010.sql": KEEP + "create table extra (id int);\n"}, {"dev": {"dsn": dsn}})
    daemon, operator = reconciler_for(cfg), reconciler_for(cfg)  # two stores on one file: two processes' worth
    pid = daemon.apply("dev").queued_plan_id
    assert pid is not None
    ctx = ReconcileContext(daemon, Metrics(), StatusBoard(save=daemon.store.save_status))
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def passes() -> None:
        start.wait()
        for _ in range(3):
            reconcile(Request("dev"), ctx)

    def approval() -> None:
        start.wait()
        time.sleep(0.05)
        try:
            operator.approve(pid, "alice")
        except ReconcilerError as exc:  # e.g. the plan went stale meanwhile: a clean refusal, never a crash
            errors.append(exc)

    threads = [threading.Thread(target=passes), threading.Thread(target=approval)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    status = ctx.status.get("dev")
    assert status is not None and not status.stalled, status
    assert errors == []
    reconcile(Request("dev"), ctx)
    assert rows_of(dsn, "keep") == 0 and not run_sql(dsn, "select 1 from pg_tables where tablename = 'gone'")
    assert daemon.store.get_plan(pid).status.value == "applied"
    live = [p for p in daemon.store.list_plans("dev") if p.status.value in ("pending", "approved")]
    assert live == [] and daemon.store.verify_audit().ok


# -- 5. the apply lock -----------------------------------------------------------------------------------------


def test_the_apply_lock_key_is_secret_and_a_long_holder_raises_an_alert(
    make_db: Callable[..., str], project: Callable[..., Path], reconciler_for: Callable[[Path], Reconciler]
) -> None:
    dsn = make_db(CURRENT)
    in_sync = KEEP + "create table gone (id int, v text);\n"
    cfg = project({"010.sql": in_sync}, {"dev": {"dsn": dsn, "lock_held_alert_after": "300ms"}})
    reconciler = reconciler_for(cfg)
    public = int.from_bytes(hashlib.sha256(b"schema-reconciler/apply").digest()[:8], "big", signed=True)
    with psycopg.connect(dsn, autocommit=True) as squatter:
        squatter.execute("select pg_advisory_lock(%s)", (public,))  # the old, well-known key blocks nothing now
        assert reconciler.apply("dev").in_sync
    ctx = ReconcileContext(reconciler, Metrics(), StatusBoard())
    with psycopg.connect(dsn, autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s)", (reconciler.lock_key(reconciler.target("dev")),))
        with pytest.raises(BusyError, match=f"pid {holder.info.backend_pid}"):
            reconciler.apply("dev")
        reconcile(Request("dev"), ctx)
        time.sleep(0.4)
        reconcile(Request("dev"), ctx)
        status = ctx.status.get("dev")
        assert status is not None
        ready = status.condition(ConditionType.READY)
        assert ready.reason == Reason.APPLY_LOCK_HELD and "longer than lock_held_alert_after" in ready.message
        blocked = ctx.metrics.registry.get_sample_value(
            "schema_reconciler_apply_lock_blocked_seconds", {"environment": "dev"}
        )
        assert blocked is not None and blocked >= 0.3
    reconcile(Request("dev"), ctx)  # released: the next pass takes the lock, the gauge drops to 0
    assert (
        ctx.metrics.registry.get_sample_value("schema_reconciler_apply_lock_blocked_seconds", {"environment": "dev"})
        == 0
    )
    assert ctx.metrics.registry.get_sample_value("schema_reconciler_audit_chain_records") == len(
        reconciler.store.audit_records()
    )
