"""The operator's page in a real headless Chromium (Debian's ``chromium``) against a daemon on a real PostgreSQL.

A pending plan is shown with its hazards and exact row counts; approving it in the browser applies it (the drift
metric reads 0); rejecting records the reason; a viewer without rights sees no approve button; a forged POST
without the CSRF token is refused. Screenshots of every page go to ``<basetemp>/screenshots`` and
``tests/artifacts/`` (not committed).

Playwright drives the machine's browser through ``executable_path``; it never downloads one.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import run_sql
from daemon_helpers import FAST_DAEMON, http, metric, wait_for

from reconciler.config import load_config
from reconciler.reconcile.daemon import Daemon

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
ALICE = "alice-page-token-0123456789"
BOB = "bob-page-token-0123456789abc"
CAROL = "carol-viewer-token-0123456789"
USERS_OLD_ROWS = (
    "create table users (id int primary key, name text not null, legacy_score int);\n"
    "insert into users values (1, 'ann', 10), (2, 'bob', 20), (3, 'cy', 30);\n"
)
USERS_NEW = "create table users (id int primary key, name text not null);\n"
ARTIFACTS = Path(__file__).resolve().parents[1] / "artifacts"

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is a dev dependency (scripts/bootstrap)")
if shutil.which(CHROMIUM) is None and not Path(CHROMIUM).exists():
    pytest.skip(
        "Debian's chromium is not installed (scripts/bootstrap installs it): no browser test", allow_module_level=True
    )


@pytest.fixture()
def browser() -> Iterator[Any]:
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture()
def shots(tmp_path_factory: pytest.TempPathFactory) -> Callable[[Any, str], None]:
    folder = tmp_path_factory.getbasetemp() / "screenshots"
    folder.mkdir(exist_ok=True)
    ARTIFACTS.mkdir(exist_ok=True)

    def shot(page: Any, name: str) -> None:
        path = folder / f"{name}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copyfile(path, ARTIFACTS / f"{name}.png")

    return shot


@pytest.fixture()
def daemon(make_db: Callable[..., str], project: Callable[..., Path]) -> Iterator[tuple[Daemon, dict[str, str]]]:
    dsns = {"dev": make_db(USERS_OLD_ROWS), "prod": make_db(USERS_OLD_ROWS)}
    envs: dict[str, dict[str, Any]] = {n: {"dsn": d, "interval": "30s"} for n, d in dsns.items()}
    envs["prod"].update(approvers=["alice", "bob"], approvals_required=2)
    cfg = project(
        {"010_users.sql": USERS_NEW},
        envs,
        daemon={**FAST_DAEMON, "jitter": 0},
        server={
            "tokens": [
                {"identity": "alice", "token_env": "ALICE", "environments": ["*"]},
                {"identity": "bob", "token_env": "BOB", "environments": ["prod"]},
                {"identity": "carol", "token_env": "CAROL", "environments": ["dev", "prod"]},
            ]
        },
    )
    d = Daemon(load_config(cfg), port=0, environ={"ALICE": ALICE, "BOB": BOB, "CAROL": CAROL})
    d.start()
    try:
        for name in dsns:
            wait_for(
                f"a plan awaiting approval in {name}",
                lambda n=name: metric(d.url, "schema_reconciler_plans_awaiting_approval", environment=n) == 1,
            )
        yield d, dsns
    finally:
        d.stop()


def login(browser: Any, url: str, token: str) -> Any:
    page = browser.new_context(viewport={"width": 1280, "height": 900}).new_page()
    page.goto(f"{url}/login")
    page.fill("input[name=token]", token)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}/")
    return page


def pending_plan(url: str, env: str) -> dict[str, Any]:
    status, doc, _ = http(f"{url}/api/v1/plans?environment={env}&status=pending", token=ALICE)
    assert status == 200 and len(doc["plans"]) == 1
    return doc["plans"][0]  # type: ignore[no-any-return]


def test_approving_in_the_browser_applies_the_plan(
    daemon: tuple[Daemon, dict[str, str]], browser: Any, shots: Callable[[Any, str], None]
) -> None:
    d, dsns = daemon
    plan = pending_plan(d.url, "dev")
    page = login(browser, d.url, ALICE)
    assert page.get_by_test_id("identity").inner_text() == "alice"
    card = page.get_by_test_id("env-dev")
    assert "PlanPending" in card.get_by_test_id("cond-AwaitingApproval").inner_text()
    shots(page, "environments")

    page.goto(f"{d.url}/plans")
    assert f"#{plan['id']}" in page.get_by_test_id("queue").inner_text()
    shots(page, "plans")

    page.goto(f"{d.url}/plans/{plan['id']}")
    hazards = page.get_by_test_id("hazard").all_inner_texts()
    assert any("DS103" in h and "legacy_score" in h for h in hazards)
    assert page.get_by_test_id("figures-public.users").get_by_test_id("rows").inner_text() == "3"
    assert "3 rows (exact)" in page.get_by_test_id("data-loss").inner_text()
    assert plan["fingerprint"][:16] in page.inner_text("dl.binding")
    assert page.get_by_test_id("approvals").inner_text() == "0 of 1"
    shots(page, "plan")

    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_test_id("approve").click()
    page.wait_for_url(f"{d.url}/plans/{plan['id']}?done=approved")
    wait_for("drift 0", lambda: metric(d.url, "schema_reconciler_drift", environment="dev") == 0, 30)
    wait_for("applied", lambda: http(f"{d.url}/api/v1/plans/{plan['id']}", token=ALICE)[1]["status"] == "applied")
    assert run_sql(
        dsns["dev"], "select count(*) from information_schema.columns where column_name = 'legacy_score'"
    ) == [(0,)]
    page.reload()
    assert page.get_by_test_id("plan-status").inner_text() == "applied"

    page.goto(f"{d.url}/audit?environment=dev&event=plan_approved")
    rows = page.get_by_test_id("audit").inner_text()
    assert "plan_approved" in rows and "alice" in rows and "plan_queued" not in rows
    assert "intact" in page.get_by_test_id("chain").inner_text()
    shots(page, "audit")
    assert ALICE not in page.content()


def test_rights_csrf_two_person_rule_and_rejection(
    daemon: tuple[Daemon, dict[str, str]], browser: Any, shots: Callable[[Any, str], None]
) -> None:
    d, _ = daemon
    plan = pending_plan(d.url, "prod")
    url = f"{d.url}/plans/{plan['id']}"

    # carol may read prod but is not one of its approvers: no buttons, and a forged POST is refused.
    viewer = login(browser, d.url, CAROL)
    viewer.goto(url)
    assert viewer.get_by_test_id("approve").count() == 0 and viewer.get_by_test_id("reject").count() == 0
    assert "may not decide" in viewer.get_by_test_id("no-rights").inner_text()
    shots(viewer, "plan-viewer")
    alice = login(browser, d.url, ALICE)
    for page, form in ((alice, {}), (alice, {"csrf": "guessed-token"}), (viewer, {})):
        forged = page.request.post(f"{url}/approve", form=form, max_redirects=0)
        assert forged.status == 403, form
        assert forged.json()["error"]["code"] == "forbidden"
    assert http(f"{d.url}/api/v1/plans/{plan['id']}", token=ALICE)[1]["approvals"] == []

    # Two-person rule: alice's approval alone does not run the plan.
    alice.goto(url)
    assert "2 different approvers" in alice.get_by_test_id("two-person").inner_text()
    alice.once("dialog", lambda dialog: dialog.accept())
    alice.get_by_test_id("approve").click()
    alice.wait_for_url(f"{url}?done=approved")
    assert alice.get_by_test_id("approvals").inner_text() == "1 of 2"
    assert alice.get_by_test_id("approve").count() == 0  # not twice by the same person
    assert alice.get_by_test_id("plan-status").inner_text() == "pending"

    # bob rejects with a reason instead.
    bob = login(browser, d.url, BOB)
    bob.goto(url)
    bob.get_by_test_id("reason-input").fill("not before the release")
    bob.get_by_test_id("reject").click()
    bob.wait_for_url(f"{url}?done=rejected")
    assert bob.get_by_test_id("plan-status").inner_text() == "rejected"
    assert bob.get_by_test_id("reason").inner_text() == "not before the release"
    shots(bob, "plan-rejected")
    doc = http(f"{d.url}/api/v1/plans/{plan['id']}", token=ALICE)[1]
    assert doc["status"] == "rejected" and doc["reason"] == "not before the release" and doc["decided_by"] == "bob"
    bob.goto(f"{d.url}/audit?actor=bob")
    assert "plan_rejected" in bob.get_by_test_id("audit").inner_text()
    # bob's token lists prod only: dev is not shown to him, in the page or the API.
    bob.goto(f"{d.url}/")
    assert bob.get_by_test_id("env-dev").count() == 0
    assert http(f"{d.url}/api/v1/environments/dev", token=BOB)[0] == 404
