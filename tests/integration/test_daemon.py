"""The daemon in-process on a real PostgreSQL: metrics, status, approvals over HTTP, windows, errors, secrets.

Intervals are short (0.3-1 s) and every wait is bounded.
"""

from __future__ import annotations

import http.client as httpclient
import io
import json
import socket
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from conftest import run_sql
from daemon_helpers import FAST_DAEMON, condition, http, metric, metrics, wait_for

from reconciler.config import load_config
from reconciler.obs.logging import configure_logging
from reconciler.reconcile.daemon import Daemon
from reconciler.service import Reconciler

ALICE = "alice-secret-token-0123456789"
BOB = "bob-secret-token-0123456789"
USERS_OLD = "create table users (id int primary key, name text not null, legacy_score int);\n"
USERS_OLD_ROWS = USERS_OLD + "insert into users values (1, 'ann', 10), (2, 'bob', 20);\n"
USERS_NEW = "create table users (id int primary key, name text not null, email text);\ncreate index users_name on users (name);\n"


@pytest.fixture()
def start_daemon() -> Iterator[Callable[..., Daemon]]:
    started: list[Daemon] = []

    def start(config: Path, environ: dict[str, str] | None = None) -> Daemon:
        d = Daemon(load_config(config), port=0, environ=environ or {})
        d.start()
        started.append(d)
        return d

    yield start
    for d in started:
        d.stop()


@pytest.fixture(autouse=True)
def logs() -> Iterator[io.StringIO]:
    """Every log line of the test, as JSON (earlier tests may have pointed structlog at a closed stream)."""
    buf = io.StringIO()
    configure_logging("debug", json=True, stream=buf)
    yield buf
    configure_logging("warning")


def env_doc(d: Daemon, name: str) -> dict[str, Any]:
    status, doc, _ = http(f"{d.url}/api/v1/environments/{name}")
    assert status == 200
    return doc  # type: ignore[no-any-return]


def columns(dsn: str, table: str) -> list[str]:
    rows = run_sql(
        dsn,
        f"select column_name from information_schema.columns where table_name = '{table}' order by ordinal_position",
    )
    return [r[0] for r in rows]


def test_drift_one_then_zero_after_auto_apply(
    make_db: Callable[..., str], project: Callable[..., Path], start_daemon: Callable[..., Daemon]
) -> None:
    dsn = make_db("create table users (id int primary key, name text not null);")
    desired = {"010_users.sql": "create table users (id int primary key, name text not null, email text);\n"}
    env = {"dsn": dsn, "interval": "500ms", "suspend": True}
    cfg = project(desired, {"dev": env}, daemon=FAST_DAEMON)
    d = start_daemon(cfg)

    # Suspended: measured, not applied.
    wait_for("drift 1", lambda: metric(d.url, "schema_reconciler_drift", environment="dev") == 1)
    assert metric(d.url, "schema_reconciler_pending_statements", environment="dev", hazard="NONE") == 1
    assert metric(d.url, "schema_reconciler_environment_suspended", environment="dev") == 1
    assert condition(env_doc(d, "dev"), "Ready") == ("False", "Suspended")
    assert columns(dsn, "users") == ["id", "name"]

    # Lifting the suspension in the config file: the daemon notices, reconciles at once and applies.
    project(desired, {"dev": {**env, "suspend": False}}, daemon=FAST_DAEMON)
    wait_for("drift 0", lambda: metric(d.url, "schema_reconciler_drift", environment="dev") == 0)
    assert columns(dsn, "users") == ["id", "name", "email"]
    m = metrics(d.url)
    assert m[("schema_reconciler_statements_applied_total", frozenset({("environment", "dev"), ("kind", "NONE")}))] == 1
    assert m[("schema_reconciler_pending_statements", frozenset({("environment", "dev"), ("hazard", "NONE")}))] == 0
    assert m[("schema_reconciler_last_success_timestamp_seconds", frozenset({("environment", "dev")}))] > 0
    assert m[("schema_reconciler_environment_reachable", frozenset({("environment", "dev")}))] == 1
    for phase in ("inspect", "diff", "vet", "apply"):
        key = (
            "schema_reconciler_reconcile_phase_duration_seconds_count",
            frozenset({("environment", "dev"), ("phase", phase)}),
        )
        assert m[key] >= 1, phase
    doc = env_doc(d, "dev")
    assert condition(doc, "Ready") == ("True", "InSync")
    assert condition(doc, "Drifted") == ("False", "InSync")
    assert condition(doc, "Stalled") == ("False", "NotStalled")
    revision = doc["status"]["last_attempted_revision"]
    assert doc["status"]["last_applied_revision"] == revision and len(revision) == 64
    assert m[("schema_reconciler_desired_revision_info", frozenset({("revision", revision)}))] == 1


def test_new_desired_revision_reconciles_at_once(
    make_db: Callable[..., str], project: Callable[..., Path], start_daemon: Callable[..., Daemon]
) -> None:
    dsn = make_db("create table a (id int);")
    cfg = project(
        {"010.sql": "create table a (id int);\n"},
        {"dev": {"dsn": dsn, "interval": "60s"}},
        daemon={**FAST_DAEMON, "jitter": 0},
    )
    d = start_daemon(cfg)
    wait_for("first reconcile", lambda: env_doc(d, "dev")["status"]["observed_at"])
    assert condition(env_doc(d, "dev"), "Ready") == ("True", "InSync")
    (cfg.parent / "desired-state" / "020.sql").write_text("create table b (id int);\n")
    # The interval is a minute: only the watch on the desired state can explain a change within seconds.
    wait_for("table b", lambda: run_sql(dsn, "select count(*) from pg_tables where tablename = 'b'") == [(1,)], 15)
    wait_for("in sync again", lambda: condition(env_doc(d, "dev"), "Ready") == ("True", "InSync"))


def test_destructive_change_waits_for_approval_through_the_api(
    make_db: Callable[..., str], project: Callable[..., Path], start_daemon: Callable[..., Daemon]
) -> None:
    dsn = make_db(USERS_OLD_ROWS)
    other = make_db("create table users (id int primary key, name text not null, email text);")
    cfg = project(
        {"010_users.sql": USERS_NEW},
        {"dev": {"dsn": dsn, "interval": "30s"}, "other": {"dsn": other, "interval": "30s"}},
        daemon={**FAST_DAEMON, "jitter": 0},
        server={
            "tokens": [
                {"identity": "alice", "token_env": "ALICE_TOKEN", "environments": ["dev"]},
                {"identity": "bob", "token_env": "BOB_TOKEN", "environments": ["other"]},
            ]
        },
    )
    d = start_daemon(cfg, environ={"ALICE_TOKEN": ALICE, "BOB_TOKEN": BOB})
    url = d.url

    wait_for(
        "a plan awaiting approval",
        lambda: metric(url, "schema_reconciler_plans_awaiting_approval", environment="dev") == 1,
    )
    assert metric(url, "schema_reconciler_drift", environment="dev") == 1
    assert metric(url, "schema_reconciler_pending_statements", environment="dev", hazard="DESTRUCTIVE") == 1
    age = metric(url, "schema_reconciler_oldest_pending_plan_age_seconds", environment="dev")
    assert age is not None and 0 <= age < 60
    doc = env_doc(d, "dev")
    assert condition(doc, "AwaitingApproval") == ("True", "PlanPending")
    assert condition(doc, "Ready") == ("False", "AwaitingApproval")
    # The safe part is applied already; the data in the column to drop is still there.
    assert columns(dsn, "users") == ["id", "name", "legacy_score", "email"]

    status, listing, _ = http(f"{url}/api/v1/plans?environment=dev&status=pending")
    assert status == 200 and len(listing["plans"]) == 1
    plan = listing["plans"][0]
    assert plan["id"] == doc["status"]["pending_plan_id"]
    assert [s["hazard_codes"] for s in plan["statements"]] == [["DS103"]]
    assert plan["statements"][0]["hazard_details"][0]["kind"] == "DESTRUCTIVE"

    approve = f"{url}/api/v1/plans/{plan['id']}/approve"
    # Bad tokens change nothing.
    assert http(approve, "POST")[0] == 401
    assert http(approve, "POST", token="not-a-token-at-all-0000")[0] == 401
    status, err, _ = http(approve, "POST", token=BOB)
    assert status == 403 and err["error"]["code"] == "forbidden"
    assert http(f"{url}/api/v1/plans/{plan['id']}/reject", "POST", token=ALICE, body={})[0] == 400
    assert http(f"{url}/api/v1/plans/{plan['id']}", "GET")[1]["status"] == "pending"
    assert run_sql(dsn, "select id, legacy_score from users order by id") == [(1, 10), (2, 20)]

    status, approved, _ = http(approve, "POST", token=ALICE)
    assert status == 200 and approved["status"] == "approved" and approved["decided_by"] == "alice"
    # The interval is 30 s: the approval itself triggers the reconcile that applies the plan.
    wait_for("drift 0", lambda: metric(url, "schema_reconciler_drift", environment="dev") == 0, 20)
    assert metric(url, "schema_reconciler_plans_awaiting_approval", environment="dev") == 0
    assert metric(url, "schema_reconciler_statements_applied_total", environment="dev", kind="DESTRUCTIVE") == 1
    assert columns(dsn, "users") == ["id", "name", "email"]
    assert http(f"{url}/api/v1/plans/{plan['id']}")[1]["status"] == "applied"
    assert condition(env_doc(d, "dev"), "AwaitingApproval") == ("False", "NoPendingPlan")
    # Approving again is a conflict, not a server error.
    assert http(approve, "POST", token=ALICE)[0] == 409


@pytest.fixture()
def black_hole() -> Iterator[int]:
    """A port that accepts TCP connections and never answers: a hung database."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield int(s.getsockname()[1])


def test_unreachable_and_hung_environments_do_not_stop_others_and_secrets_stay_hidden(
    make_db: Callable[..., str],
    project: Callable[..., Path],
    start_daemon: Callable[..., Daemon],
    logs: io.StringIO,
    black_hole: int,
) -> None:
    password = "S3cretPassw0rd-xyz"
    good = make_db("create table a (id int);")
    cfg = project(
        {"010.sql": "create table a (id int);\n"},
        {
            "good": {"dsn": good, "interval": "300ms"},
            "down": {
                "dsn": f"postgresql://app:{password}@127.0.0.1:1/app",
                "interval": "300ms",
                "connect_timeout": "1s",
            },
            "hung": {
                "dsn": f"host=127.0.0.1 port={black_hole} dbname=app user=app password={password}",
                "interval": "300ms",
                "connect_timeout": "2s",
            },
        },
        daemon={**FAST_DAEMON, "concurrency": 3},
        server={"tokens": [{"identity": "alice", "token_env": "ALICE_TOKEN", "environments": ["*"]}]},
    )
    d = start_daemon(cfg, environ={"ALICE_TOKEN": ALICE})
    url = d.url

    wait_for(
        "down seen unreachable twice",
        lambda: (metric(url, "schema_reconciler_reconciles_total", environment="down", outcome="error") or 0) >= 2,
    )
    wait_for(
        "hung seen unreachable", lambda: metric(url, "schema_reconciler_environment_reachable", environment="hung") == 0
    )
    start = metric(url, "schema_reconciler_reconciles_total", environment="good", outcome="success") or 0
    # While one worker waits on the hung server, the healthy environment keeps being reconciled.
    wait_for(
        "good keeps reconciling",
        lambda: (
            (metric(url, "schema_reconciler_reconciles_total", environment="good", outcome="success") or 0) >= start + 3
        ),
    )
    assert metric(url, "schema_reconciler_environment_reachable", environment="down") == 0
    assert metric(url, "schema_reconciler_environment_reachable", environment="good") == 1
    down = env_doc(d, "down")
    assert condition(down, "Ready") == ("False", "EnvironmentUnreachable")
    assert condition(down, "Stalled") == ("False", "NotStalled")
    assert down["status"]["consecutive_failures"] >= 2
    assert "cannot connect" in down["status"]["last_error"]

    # Secrets: never in logs, API responses or metrics.
    bodies = [
        http(f"{url}{p}")[2]
        for p in (
            "/api/v1/environments",
            "/api/v1/environments/down",
            "/api/v1/environments/hung",
            "/api/v1/plans",
            "/metrics",
            "/readyz",
        )
    ]
    bodies.append(http(f"{url}/api/v1/plans/1/approve", "POST", token="wrong-token-0000000000")[2])
    text_logs = logs.getvalue()
    assert "cannot connect" in text_logs  # the errors are logged, without their secrets
    for text in [text_logs, *(b.decode() for b in bodies)]:
        assert password not in text
        assert ALICE not in text

    # Every log line of a reconcile carries environment, revision and reconcile_id.
    events = [json.loads(line) for line in text_logs.splitlines() if line.startswith("{")]
    reconciled = [e for e in events if e.get("event") == "reconciled" and e.get("environment") == "good"]
    assert reconciled and all(e["reconcile_id"] and e["revision"] for e in reconciled)
    failed = [e for e in events if e.get("event") == "reconcile_failed" and e.get("environment") == "down"]
    assert failed and all(e["reconcile_id"] and e["reason"] == "EnvironmentUnreachable" for e in failed)
    assert len({e["reconcile_id"] for e in failed}) == len(failed)


def test_outside_the_maintenance_window_nothing_is_applied(
    make_db: Callable[..., str], project: Callable[..., Path], start_daemon: Callable[..., Daemon]
) -> None:
    dsn = make_db("create table a (id int);")
    later = datetime.now(UTC) + timedelta(hours=3)
    window = {"cron": f"{later.minute} {later.hour} * * *", "duration": "10m"}
    cfg = project(
        {"010.sql": "create table a (id int, b text);\ncreate table c (id int);\n"},
        {"dev": {"dsn": dsn, "interval": "300ms", "maintenance_windows": [window]}},
        daemon=FAST_DAEMON,
    )
    d = start_daemon(cfg)
    url = d.url
    wait_for(
        "three reconciles",
        lambda: (metric(url, "schema_reconciler_reconciles_total", environment="dev", outcome="requeue") or 0) >= 3,
    )
    assert metric(url, "schema_reconciler_drift", environment="dev") == 1
    assert metric(url, "schema_reconciler_pending_statements", environment="dev", hazard="NONE") == 2
    assert metric(url, "schema_reconciler_maintenance_window_open", environment="dev") == 0
    applied = [v for (name, _), v in metrics(url).items() if name == "schema_reconciler_statements_applied_total"]
    assert applied and sum(applied) == 0
    assert columns(dsn, "a") == ["id"]
    assert run_sql(dsn, "select count(*) from pg_tables where tablename = 'c'") == [(0,)]
    doc = env_doc(d, "dev")
    assert condition(doc, "Ready") == ("False", "OutsideMaintenanceWindow")
    assert doc["maintenance_window_open"] is False
    assert doc["maintenance_windows"] == [{"cron": window["cron"], "duration_seconds": 600.0, "timezone": "UTC"}]
    assert http(f"{url}/api/v1/plans")[1] == {"plans": []}


def test_terminal_error_stalls_until_the_desired_state_changes(
    make_db: Callable[..., str], project: Callable[..., Path], start_daemon: Callable[..., Daemon]
) -> None:
    dsn = make_db("create table a (id int);")
    cfg = project(
        {"010.sql": "create table a (id int);\ncreate view v as select nope from a;\n"},
        {"dev": {"dsn": dsn, "interval": "300ms"}},
        daemon=FAST_DAEMON,
    )
    d = start_daemon(cfg)
    url = d.url
    wait_for("stalled", lambda: metric(url, "schema_reconciler_environment_stalled", environment="dev") == 1)
    doc = env_doc(d, "dev")
    assert condition(doc, "Stalled") == ("True", "DesiredStateInvalid")
    assert "010.sql:2" in doc["status"]["last_error"] and doc["stalled"] is True
    terminal = metric(url, "schema_reconciler_reconciles_total", environment="dev", outcome="terminal")
    assert terminal == 1
    # Not retried: the interval passes several times, the count stays.
    with pytest.raises(AssertionError):
        wait_for(
            "a retry",
            lambda: metric(url, "schema_reconciler_reconciles_total", environment="dev", outcome="terminal") != 1,
            1.5,
        )

    (cfg.parent / "desired-state" / "010.sql").write_text(
        "create table a (id int);\ncreate view v as select id from a;\n"
    )
    wait_for("ready again", lambda: condition(env_doc(d, "dev"), "Ready") == ("True", "InSync"), 15)
    assert condition(env_doc(d, "dev"), "Stalled") == ("False", "NotStalled")
    assert metric(url, "schema_reconciler_environment_stalled", environment="dev") == 0
    assert run_sql(dsn, "select count(*) from pg_views where viewname = 'v'") == [(1,)]


def test_health_readiness_and_openapi(
    make_db: Callable[..., str], project: Callable[..., Path], start_daemon: Callable[..., Daemon]
) -> None:
    dsn = make_db()
    cfg = project(
        {"010.sql": "create table a (id int);\n"}, {"dev": {"dsn": dsn, "interval": "60s"}}, daemon=FAST_DAEMON
    )
    d = start_daemon(cfg)
    assert http(f"{d.url}/healthz")[:2] == (200, {"status": "ok"})
    status, ready, _ = http(f"{d.url}/readyz")
    assert status == 200
    assert ready["checks"] == {"config_loaded": True, "store_reachable": True, "scheduler_running": True}
    status, doc, _ = http(f"{d.url}/api/v1/openapi.json")
    assert status == 200 and "/api/v1/plans/{plan_id}/approve" in doc["paths"]
    assert d.url.startswith("http://127.0.0.1:")
    # On the socket: methods the stdlib would answer with 501, and oversized bodies, get JSON 4xx.
    host, port = d.url.removeprefix("http://").split(":")
    for method, path, body, want in (
        ("BREW", "/metrics", None, 405),
        ("PUT", "/api/v1/plans/1/approve", None, 405),
        ("POST", "/api/v1/plans/1/reject", b"x" * 70_000, 413),
        ("GET", "/api/v1/plans?status=%ff", None, 400),
    ):
        conn = httpclient.HTTPConnection(host, int(port), timeout=10)
        conn.request(method, path, body=body)
        resp = conn.getresponse()
        assert resp.status == want, (method, path)
        assert json.loads(resp.read())["error"]["status"] == want
        conn.close()
    d.stop()
    # A stopped daemon's port is closed.
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(d.url.rsplit(":", 1)[1])), timeout=1).close()


def test_a_restart_mid_backoff_resumes_the_same_backoff(
    make_db: Callable[..., str], project: Callable[..., Path], start_daemon: Callable[..., Daemon]
) -> None:
    # The store is a PostgreSQL database here, as several replicas would share it.
    cfg = project(
        {"010.sql": "create table a (id int);\n"},
        {"down": {"dsn": "postgresql://app:pw@127.0.0.1:1/app", "interval": "300ms", "connect_timeout": "1s"}},
        daemon={**FAST_DAEMON, "backoff_base": "3s", "backoff_max": "60s"},
        state=make_db(),
    )
    first = start_daemon(cfg)
    wait_for("two failures", lambda: env_doc(first, "down")["status"]["consecutive_failures"] == 2, 15)
    before = env_doc(first, "down")["status"]
    retry_at = datetime.fromisoformat(before["retry_at"])
    # The second failure waits base * 2 = 6 s.
    assert retry_at - datetime.fromisoformat(before["observed_at"]) == timedelta(seconds=6)
    first.stop()

    second = start_daemon(cfg)
    restarted = datetime.now(UTC)
    assert restarted < retry_at, "the restart took longer than the backoff; nothing left to show"
    doc = env_doc(second, "down")
    assert doc["status"] == before
    assert condition(doc, "Ready") == ("False", "EnvironmentUnreachable")
    # The first attempt after the restart is the one the backoff scheduled, not an immediate one.
    assert datetime.fromisoformat(doc["next_reconcile_at"]) == retry_at
    assert metric(second.url, "schema_reconciler_reconciles_total", environment="down", outcome="error") == 0
    after = wait_for(
        "the third failure",
        lambda: (s := env_doc(second, "down")["status"])["consecutive_failures"] == 3 and s,
        20,
    )
    assert datetime.fromisoformat(after["observed_at"]) >= retry_at
    # The backoff continued to double: base * 4 = 12 s, not base again.
    assert datetime.fromisoformat(after["retry_at"]) - datetime.fromisoformat(after["observed_at"]) == timedelta(
        seconds=12
    )
    assert metric(second.url, "schema_reconciler_reconciles_total", environment="down", outcome="error") == 1


def test_a_stalled_environment_stays_stalled_across_a_restart(
    make_db: Callable[..., str], project: Callable[..., Path], start_daemon: Callable[..., Daemon]
) -> None:
    dsn = make_db("create table a (id int);")
    bad = {"010.sql": "create table a (id int);\ncreate view v as select nope from a;\n"}
    env = {"dev": {"dsn": dsn, "interval": "300ms"}}
    cfg = project(bad, env, daemon=FAST_DAEMON)
    first = start_daemon(cfg)
    wait_for("stalled", lambda: metric(first.url, "schema_reconciler_environment_stalled", environment="dev") == 1)
    stalled = env_doc(first, "dev")
    first.stop()

    second = start_daemon(cfg)
    doc = env_doc(second, "dev")
    assert doc["status"] == stalled["status"]
    assert condition(doc, "Stalled") == ("True", "DesiredStateInvalid")
    assert doc["stalled"] is True and doc["next_reconcile_at"] is None
    assert metric(second.url, "schema_reconciler_environment_stalled", environment="dev") == 1
    # Not reconciled: the interval passes several times and nothing runs.
    with pytest.raises(AssertionError):
        wait_for(
            "a reconcile",
            lambda: sum(
                metric(second.url, "schema_reconciler_reconciles_total", environment="dev", outcome=o) or 0
                for o in ("success", "requeue", "error", "terminal")
            ),
            1.5,
        )
    second.stop()

    # The desired state was fixed while no daemon ran: the next one notices and reconciles at once.
    project({"010.sql": "create table a (id int);\ncreate view v as select id from a;\n"}, env, daemon=FAST_DAEMON)
    third = start_daemon(cfg)
    wait_for("ready again", lambda: condition(env_doc(third, "dev"), "Ready") == ("True", "InSync"), 15)
    assert condition(env_doc(third, "dev"), "Stalled") == ("False", "NotStalled")
    assert run_sql(dsn, "select count(*) from pg_views where viewname = 'v'") == [(1,)]


def test_a_plan_approved_elsewhere_runs_within_a_watch_interval(
    make_db: Callable[..., str], project: Callable[..., Path], start_daemon: Callable[..., Daemon]
) -> None:
    dsn = make_db(USERS_OLD_ROWS)
    daemon = {**FAST_DAEMON, "jitter": 0}
    cfg = project({"010_users.sql": USERS_NEW}, {"dev": {"dsn": dsn, "interval": "10m"}}, daemon=daemon)
    d = start_daemon(cfg)
    wait_for("a plan awaiting approval", lambda: env_doc(d, "dev")["status"]["pending_plan_id"] is not None)
    plan_id = env_doc(d, "dev")["status"]["pending_plan_id"]
    # Approved by another process (the CLI's way): the interval is ten minutes, so only the daemon's look at the
    # store's approved plans can explain the drop within seconds.
    with Reconciler(load_config(cfg)) as cli:
        cli.approve(plan_id, "alice")
    wait_for("the approved plan ran", lambda: columns(dsn, "users") == ["id", "name", "email"], 30)
    wait_for("in sync", lambda: condition(env_doc(d, "dev"), "Ready") == ("True", "InSync"))
