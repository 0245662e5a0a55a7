"""The HTTP API's routing, tokens and validation with a fake backend: every bad request is a JSON 4xx."""

from __future__ import annotations

import json
import re
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from reconciler.config import Config, load_config
from reconciler.errors import ConfigError, PlanError
from reconciler.model import Hazard, HazardKind, PlanStatus, Severity, Statement
from reconciler.server.app import create_app
from reconciler.server.auth import Principal, TokenAuth
from reconciler.server.models import NOT_BLANK
from reconciler.server.openapi import openapi_document
from reconciler.store import PlanRecord

ALICE = "alice-token-0123456789abcdef"
BOB = "bob-token-0123456789abcdef"
CAROL = "carol-token-0123456789abcdef"
NOW = datetime(2026, 3, 4, tzinfo=UTC)


def plan(pid: int, env: str, status: PlanStatus = PlanStatus.PENDING) -> PlanRecord:
    return PlanRecord(
        pid, env, status, "r" * 64, "h" * 64, "", (Statement("drop table t", (Hazard("DS102", HazardKind.DESTRUCTIVE, Severity.DANGER, "table dropped"),)),),
        NOW, NOW, None, None, None, None, None,
    )  # fmt: skip


class FakeBackend:
    def __init__(self) -> None:
        self.plans = {1: plan(1, "dev"), 2: plan(2, "prod"), 3: plan(3, "dev", PlanStatus.APPLIED)}
        self.calls: list[tuple[str, int, str]] = []

    def environment_names(self) -> list[str]:
        return ["dev", "prod"]

    def environment_json(self, name: str) -> dict[str, Any]:
        return {"name": name, "status": {}}

    def list_plans(self, environment: str | None, status: PlanStatus | None) -> list[PlanRecord]:
        return [
            p
            for p in self.plans.values()
            if (environment is None or p.environment == environment) and (status is None or p.status is status)
        ]

    def get_plan(self, plan_id: int) -> PlanRecord | None:
        return self.plans.get(plan_id)

    def is_approver(self, environment: str, identity: str) -> bool:
        return not (environment == "prod" and identity == "carol")  # prod's approvers leave carol out

    def approve(self, plan_id: int, by: str) -> PlanRecord:
        p = self.plans[plan_id]
        if p.status is not PlanStatus.PENDING:
            raise PlanError(f"plan {plan_id} is {p.status.value}; only a plan that is pending can become approved")
        self.calls.append(("approve", plan_id, by))
        return p

    def reject(self, plan_id: int, by: str, reason: str) -> PlanRecord:
        self.calls.append(("reject", plan_id, by))
        return self.plans[plan_id]

    def metrics_text(self) -> bytes:
        return b"schema_reconciler_drift 0\n"

    def readiness(self) -> dict[str, bool]:
        return {"config_loaded": True, "store_reachable": True, "scheduler_running": True}


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...]


class Api:
    """The ASGI app in-process (no socket), called as an HTTP client would."""

    def __init__(self, app: FastAPI) -> None:
        self.client = TestClient(app, base_url="http://127.0.0.1")

    def handle(
        self, method: str, path: str, query: dict[str, list[str]], headers: dict[str, str], body: bytes
    ) -> Response:
        r = self.client.request(method, path, params=query, headers=headers, content=body or None)
        pairs = tuple((k.title().replace("Www-", "WWW-"), v) for k, v in r.headers.items())
        return Response(r.status_code, r.content, r.headers.get("content-type", ""), pairs)


def make_api(read_requires_token: bool = False) -> tuple[Api, FakeBackend]:
    auth = TokenAuth(
        {
            ALICE: Principal("alice", frozenset({"*"})),
            BOB: Principal("bob", frozenset({"dev"})),
            CAROL: Principal("carol", frozenset({"*"})),
        },
        read_requires_token=read_requires_token,
    )
    backend = FakeBackend()
    return Api(create_app(backend, auth)), backend


def call(
    api: Api,
    method: str,
    path: str,
    *,
    token: str | None = None,
    body: bytes = b"",
    query: dict[str, list[str]] | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[Response, Any]:
    h = dict(headers or {})
    if token is not None:
        h["authorization"] = f"Bearer {token}"
    resp = api.handle(method, path, query or {}, h, body)
    doc = json.loads(resp.body) if resp.content_type.startswith("application/json") else resp.body
    return resp, doc


@pytest.mark.parametrize(
    ("method", "path", "token", "body", "status", "code"),
    [
        ("POST", "/api/v1/plans/1/approve", None, b"", 401, "unauthorized"),
        ("POST", "/api/v1/plans/1/approve", "wrong-token-0123456789", b"", 401, "unauthorized"),
        ("POST", "/api/v1/plans/2/approve", BOB, b"", 403, "forbidden"),  # bob may only decide dev
        ("POST", "/api/v1/plans/2/reject", BOB, b'{"reason": "no"}', 403, "forbidden"),
        ("POST", "/api/v1/plans/2/approve", CAROL, b"", 403, "forbidden"),  # not in prod's approvers
        ("POST", "/api/v1/plans/999/approve", ALICE, b"", 404, "not_found"),
        ("POST", "/api/v1/plans/abc/approve", ALICE, b"", 400, "bad_request"),
        ("POST", "/api/v1/plans/0/approve", ALICE, b"", 400, "bad_request"),
        ("POST", "/api/v1/plans/1/approve", ALICE, b"{not json", 400, "bad_request"),
        ("POST", "/api/v1/plans/1/approve", ALICE, b"[1]", 400, "bad_request"),
        ("POST", "/api/v1/plans/1/approve", ALICE, b'{"by": "mallory"}', 400, "bad_request"),
        ("POST", "/api/v1/plans/1/reject", ALICE, b"", 400, "bad_request"),
        ("POST", "/api/v1/plans/1/reject", ALICE, b'{"reason": "  "}', 400, "bad_request"),
        ("POST", "/api/v1/plans/1/reject", ALICE, b'{"reason": "\\u0085\\u3000"}', 400, "bad_request"),
        ("POST", "/api/v1/plans/1/reject", ALICE, b'{"reason": 5}', 400, "bad_request"),
        ("POST", "/api/v1/plans/3/approve", ALICE, b"", 409, "conflict"),  # already applied
        ("GET", "/api/v1/plans/1/approve", ALICE, b"", 405, "method_not_allowed"),
        ("DELETE", "/api/v1/plans/1", ALICE, b"", 405, "method_not_allowed"),
        ("BREW", "/metrics", None, b"", 405, "method_not_allowed"),
        ("GET", "/api/v1/nope", None, b"", 404, "not_found"),
        ("GET", "/api/v1/environments/staging", None, b"", 404, "not_found"),
    ],
)
def test_bad_requests_get_json_4xx_and_change_nothing(
    method: str, path: str, token: str | None, body: bytes, status: int, code: str
) -> None:
    api, backend = make_api()
    resp, doc = call(api, method, path, token=token, body=body)
    assert resp.status == status
    assert doc["error"]["code"] == code and doc["error"]["status"] == status and doc["error"]["message"]
    assert backend.calls == []
    if status == 401:
        assert ("WWW-Authenticate", 'Bearer realm="schema-reconciler"') in resp.headers
    for secret in (ALICE, BOB):
        assert secret.encode() not in resp.body


def test_wrong_content_type_is_415() -> None:
    api, backend = make_api()
    resp, _doc = call(
        api, "POST", "/api/v1/plans/1/reject", token=ALICE, body=b"reason=x", headers={"content-type": "text/plain"}
    )
    assert resp.status == 415 and backend.calls == []


@pytest.mark.parametrize(
    ("query", "status"),
    [
        ({"status": ["pending"]}, 200),
        ({"environment": ["dev"], "status": ["applied"]}, 200),
        ({"status": ["bogus"]}, 400),
        ({"environment": ["nope"]}, 404),
        ({"colour": ["red"]}, 400),
        ({"status": ["pending", "applied"]}, 400),
    ],
)
def test_plan_filters(query: dict[str, list[str]], status: int) -> None:
    api, _ = make_api()
    resp, doc = call(api, "GET", "/api/v1/plans", query=query)
    assert resp.status == status
    if status == 200:
        want_env = query.get("environment", [None])[0]
        want_status = query["status"][0]
        assert doc["plans"] and all(p["status"] == want_status for p in doc["plans"])
        assert want_env is None or all(p["environment"] == want_env for p in doc["plans"])


def test_approve_and_reject_map_the_token_to_the_identity() -> None:
    api, backend = make_api()
    resp, doc = call(api, "POST", "/api/v1/plans/1/approve", token=BOB)
    assert resp.status == 200 and doc["id"] == 1
    resp, _ = call(
        api, "POST", "/api/v1/plans/2/reject", token=ALICE, body=b'{"reason": "not now"}',
        headers={"content-type": "application/json; charset=utf-8"},
    )  # fmt: skip
    assert resp.status == 200
    assert backend.calls == [("approve", 1, "bob"), ("reject", 2, "alice")]


def test_reads_open_by_default_and_closed_when_configured() -> None:
    api, _ = make_api()
    assert call(api, "GET", "/api/v1/environments")[0].status == 200
    assert call(api, "GET", "/metrics")[0].status == 200
    closed, _ = make_api(read_requires_token=True)
    for path in ("/api/v1/environments", "/api/v1/plans", "/api/v1/plans/1", "/metrics"):
        assert call(closed, "GET", path)[0].status == 401
        assert call(closed, "GET", path, token="nope-nope-nope-nope")[0].status == 401
        assert call(closed, "GET", path, token=BOB)[0].status == 200
    # Health checks stay open: probes carry no token.
    assert call(closed, "GET", "/healthz")[0].status == 200
    assert call(closed, "GET", "/readyz")[0].status == 200


def test_openapi_document_lists_every_route() -> None:
    api, _ = make_api()
    resp, doc = call(api, "GET", "/api/v1/openapi.json")
    assert resp.status == 200 and doc["openapi"].startswith("3.1")
    assert set(doc["paths"]) >= {
        "/api/v1/environments",
        "/api/v1/environments/{name}",
        "/api/v1/plans",
        "/api/v1/plans/{plan_id}",
        "/api/v1/plans/{plan_id}/approve",
        "/api/v1/plans/{plan_id}/reject",
        "/metrics",
        "/healthz",
        "/readyz",
    }
    assert doc == openapi_document()


def _config(tmp_path: Path, tokens: str) -> Config:
    p = tmp_path / "reconciler.yaml"
    p.write_text("environments:\n  dev:\n    dsn: postgresql:///dev\n  prod:\n    dsn: postgresql:///prod\n" + tokens)
    return load_config(p)


def test_tokens_from_env_and_file(tmp_path: Path) -> None:
    (tmp_path / "bob.token").write_text(BOB + "\n")
    cfg = _config(
        tmp_path,
        "server:\n  tokens:\n"
        "    - {identity: alice, token_env: ALICE_TOKEN, environments: ['*']}\n"
        "    - {identity: bob, token_file: bob.token, environments: [dev]}\n",
    )
    assert cfg.server.tokens[1].token_file == str(tmp_path / "bob.token")
    auth = TokenAuth.from_config(cfg, {"ALICE_TOKEN": ALICE})
    alice = auth.authenticate(f"Bearer {ALICE}")
    bob = auth.authenticate(f"bearer  {BOB} ")
    assert alice is not None and alice.identity == "alice" and alice.may_decide("prod")
    assert bob is not None and bob.identity == "bob" and bob.may_decide("dev") and not bob.may_decide("prod")
    for bad in (None, "", "Bearer", f"Basic {ALICE}", f"Bearer {ALICE}x"):
        assert auth.authenticate(bad) is None
    assert ALICE not in repr(auth) and BOB not in repr(auth)


@pytest.mark.parametrize(
    ("tokens", "environ", "files", "message"),
    [
        (
            "- {identity: a, token_env: T, environments: [dev]}",
            {},
            {},
            "server.tokens[0].token_env: environment variable T is not set",
        ),
        ("- {identity: a, token_env: T, environments: [dev]}", {"T": "short"}, {}, "too short"),
        (
            "- {identity: a, token_file: missing.token, environments: [dev]}",
            {},
            {},
            "server.tokens[0].token_file: cannot read",
        ),
        ("- {identity: a, token_file: e.token, environments: [dev]}", {}, {"e.token": "\n"}, "empty"),
        (
            "- {identity: a, token_env: T, environments: [dev]}\n    - {identity: b, token_env: U, environments: [dev]}",
            {"T": ALICE, "U": ALICE},
            {},
            "server.tokens[1].token_env: the token of 'b' is also the token of 'a'",
        ),
    ],
    ids=["unset", "short", "no-file", "empty", "duplicate"],
)
def test_token_errors_name_the_key(
    tmp_path: Path, tokens: str, environ: dict[str, str], files: dict[str, str], message: str
) -> None:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    cfg = _config(tmp_path, f"server:\n  tokens:\n    {tokens}\n")
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        TokenAuth.from_config(cfg, environ)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "server:\n  tokens:\n    - {identity: a, token_env: T, environments: [staging]}\n",
            "server.tokens[0].environments: unknown environment 'staging'",
        ),
        (
            "server:\n  tokens:\n    - {identity: a, token_env: T, token_file: f, environments: [dev]}\n",
            "exactly one of token_env or token_file",
        ),
        ("server:\n  tokens:\n    - {identity: a, token_env: T}\n", "server.tokens[0].environments: Field required"),
        ("server:\n  port: 70000\n", "server.port"),
        ("server:\n  colour: red\n", "server.colour: unknown key"),
        ("daemon:\n  concurrency: 0\n", "daemon.concurrency"),
        ("daemon:\n  backoff_base: 10s\n  backoff_max: 1s\n", "backoff_max must not be smaller"),
        ("daemon:\n  jitter: 2\n", "daemon.jitter"),
        ("daemon:\n  grace: 5s\n", "daemon.grace: unknown key"),
    ],
)
def test_daemon_and_server_config_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")) as info:
        _config(tmp_path, text)
    assert str(tmp_path / "reconciler.yaml") in str(info.value)


def test_the_documented_pattern_of_a_reason_is_the_servers_rule() -> None:
    """A reason must hold a character that is not whitespace; the OpenAPI pattern says exactly which ones are."""
    blank = [chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace()]
    assert blank and not any(re.search(NOT_BLANK, c) for c in blank)
    assert all(re.search(NOT_BLANK, c) for c in "a.\u200b\u00e9")
