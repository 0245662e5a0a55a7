"""The HTTP API as a plain function of a request: routing, authentication, validation, JSON errors.

No sockets here (see :mod:`.http`), so every 4xx path is testable without a server. Errors are JSON
``{"error": {"status", "code", "message"}}``; a bad request never gets a 5xx.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import structlog

from ..db import redact
from ..errors import BusyError, PlanError, ReconcilerError
from ..model import PlanStatus
from ..store import PlanRecord
from .auth import Principal, TokenAuth
from .openapi import openapi_document

log = structlog.get_logger("reconciler.api")

MAX_BODY = 64 * 1024
JSON_TYPE = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_PLAN_ID = re.compile(r"^[1-9][0-9]{0,17}$")


class Backend(Protocol):
    """What the API needs from the daemon."""

    def environment_names(self) -> list[str]: ...
    def environment_json(self, name: str) -> dict[str, Any]: ...
    def list_plans(self, environment: str | None, status: PlanStatus | None) -> list[PlanRecord]: ...
    def get_plan(self, plan_id: int) -> PlanRecord | None: ...
    def is_approver(self, environment: str, identity: str) -> bool: ...
    def approve(self, plan_id: int, by: str) -> PlanRecord: ...
    def reject(self, plan_id: int, by: str, reason: str) -> PlanRecord: ...
    def metrics_text(self) -> bytes: ...
    def readiness(self) -> dict[str, bool]: ...


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: Mapping[str, list[str]] = field(default_factory=dict)
    headers: Mapping[str, str] = field(default_factory=dict)  # lower-case names
    body: bytes = b""


@dataclass(frozen=True)
class Response:
    status: int
    body: bytes
    content_type: str = JSON_TYPE
    headers: tuple[tuple[str, str], ...] = ()


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, headers: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers


def json_response(status: int, data: Any, headers: tuple[tuple[str, str], ...] = ()) -> Response:
    return Response(status, json.dumps(data, indent=2, default=str).encode("utf-8") + b"\n", JSON_TYPE, headers)


def error_response(exc: ApiError) -> Response:
    body = {"error": {"status": exc.status, "code": exc.code, "message": redact(exc.message)}}
    return json_response(exc.status, body, exc.headers)


_UNAUTHORIZED = (("WWW-Authenticate", 'Bearer realm="schema-reconciler"'),)

Handler = Callable[["Api", Request, Mapping[str, str]], Response]


class Api:
    """Routes requests to handlers; wraps every failure into a JSON error."""

    def __init__(self, backend: Backend, auth: TokenAuth) -> None:
        self.backend = backend
        self.auth = auth

    # -- entry point ------------------------------------------------------------------------------
    def handle(self, req: Request) -> Response:
        try:
            handler, params = self._route(req)
            return handler(self, req, params)
        except ApiError as exc:
            return error_response(exc)
        except ReconcilerError as exc:
            log.warning("api_backend_error", path=req.path, error=str(exc))
            return error_response(ApiError(503, "unavailable", str(exc)))

    def _route(self, req: Request) -> tuple[Handler, dict[str, str]]:
        path = req.path.rstrip("/") or "/"
        for pattern, methods in _ROUTES:
            m = pattern.match(path)
            if m is None:
                continue
            handler = methods.get(req.method)
            if handler is None:
                allowed = ", ".join(sorted(methods))
                raise ApiError(
                    405, "method_not_allowed", f"{req.method} is not allowed on {path}", headers=(("Allow", allowed),)
                )
            return handler, m.groupdict()
        raise ApiError(404, "not_found", f"no such path: {path}")

    # -- authentication -----------------------------------------------------------------------------
    def _principal(self, req: Request) -> Principal:
        if not req.headers.get("authorization"):
            raise ApiError(401, "unauthorized", "a bearer token is required", headers=_UNAUTHORIZED)
        principal = self.auth.authenticate(req.headers.get("authorization"))
        if principal is None:
            raise ApiError(401, "unauthorized", "the bearer token is not valid", headers=_UNAUTHORIZED)
        return principal

    def _check_read(self, req: Request) -> None:
        if self.auth.read_requires_token:
            self._principal(req)

    # -- helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _query(req: Request, allowed: tuple[str, ...]) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, values in req.query.items():
            if key not in allowed:
                raise ApiError(400, "bad_request", f"unknown query parameter {key!r} (allowed: {', '.join(allowed)})")
            if len(values) != 1:
                raise ApiError(400, "bad_request", f"query parameter {key!r} must be given once")
            out[key] = values[0]
        return out

    @staticmethod
    def _body(req: Request, allowed: tuple[str, ...]) -> dict[str, Any]:
        if not req.body.strip():
            return {}
        ctype = req.headers.get("content-type", JSON_TYPE).split(";")[0].strip().lower()
        if ctype != JSON_TYPE:
            raise ApiError(415, "unsupported_media_type", "the request body must be application/json")
        try:
            data = json.loads(req.body)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ApiError(400, "bad_request", f"the request body is not valid JSON: {exc}") from None
        if not isinstance(data, dict):
            raise ApiError(400, "bad_request", "the request body must be a JSON object")
        unknown = sorted(set(data) - set(allowed))
        if unknown:
            raise ApiError(400, "bad_request", f"unknown field(s) in the request body: {', '.join(unknown)}")
        return data

    @staticmethod
    def _plan_id(params: Mapping[str, str]) -> int:
        raw = params["plan_id"]
        if not _PLAN_ID.match(raw):
            raise ApiError(400, "bad_request", f"plan id must be a positive integer, got {raw[:40]!r}")
        return int(raw)

    def _plan(self, plan_id: int) -> PlanRecord:
        rec = self.backend.get_plan(plan_id)
        if rec is None:
            raise ApiError(404, "not_found", f"plan {plan_id} does not exist")
        return rec

    def _environment(self, name: str) -> str:
        if name not in self.backend.environment_names():
            raise ApiError(404, "not_found", f"unknown environment {name[:63]!r}")
        return name

    # -- handlers -------------------------------------------------------------------------------------
    def index(self, req: Request, params: Mapping[str, str]) -> Response:
        return json_response(
            200,
            {
                "name": "schema-reconciler",
                "links": {
                    "metrics": "/metrics",
                    "healthz": "/healthz",
                    "readyz": "/readyz",
                    "environments": "/api/v1/environments",
                    "plans": "/api/v1/plans",
                    "openapi": "/api/v1/openapi.json",
                },
            },
        )

    def healthz(self, req: Request, params: Mapping[str, str]) -> Response:
        return json_response(200, {"status": "ok"})

    def readyz(self, req: Request, params: Mapping[str, str]) -> Response:
        checks = self.backend.readiness()
        ok = all(checks.values())
        return json_response(200 if ok else 503, {"status": "ok" if ok else "unavailable", "checks": checks})

    def metrics(self, req: Request, params: Mapping[str, str]) -> Response:
        self._check_read(req)
        return Response(200, self.backend.metrics_text(), METRICS_TYPE)

    def openapi(self, req: Request, params: Mapping[str, str]) -> Response:
        return json_response(200, openapi_document())

    def list_environments(self, req: Request, params: Mapping[str, str]) -> Response:
        self._check_read(req)
        self._query(req, ())
        return json_response(
            200, {"environments": [self.backend.environment_json(n) for n in self.backend.environment_names()]}
        )

    def get_environment(self, req: Request, params: Mapping[str, str]) -> Response:
        self._check_read(req)
        self._query(req, ())
        return json_response(200, self.backend.environment_json(self._environment(params["name"])))

    def list_plans(self, req: Request, params: Mapping[str, str]) -> Response:
        self._check_read(req)
        q = self._query(req, ("environment", "status"))
        env = self._environment(q["environment"]) if "environment" in q else None
        status = None
        if "status" in q:
            try:
                status = PlanStatus(q["status"])
            except ValueError:
                allowed = ", ".join(s.value for s in PlanStatus)
                raise ApiError(400, "bad_request", f"unknown status {q['status'][:40]!r} (one of: {allowed})") from None
        return json_response(200, {"plans": [p.to_json() for p in self.backend.list_plans(env, status)]})

    def get_plan(self, req: Request, params: Mapping[str, str]) -> Response:
        self._check_read(req)
        self._query(req, ())
        return json_response(200, self._plan(self._plan_id(params)).to_json())

    def _decide(
        self, req: Request, params: Mapping[str, str], what: str
    ) -> tuple[Principal, PlanRecord, dict[str, Any]]:
        principal = self._principal(req)
        plan_id = self._plan_id(params)
        body = self._body(req, ("reason",) if what == "reject" else ())
        plan = self._plan(plan_id)
        if not principal.may_decide(plan.environment):
            log.warning("api_forbidden", identity=principal.identity, action=what, plan_environment=plan.environment)
            raise ApiError(
                403,
                "forbidden",
                f"{principal.identity!r} may not {what} plans of environment {plan.environment!r}",
            )
        if not self.backend.is_approver(plan.environment, principal.identity):
            raise ApiError(
                403,
                "forbidden",
                f"{principal.identity!r} is not an approver of environment {plan.environment!r} (its approvers)",
            )
        return principal, plan, body

    def approve(self, req: Request, params: Mapping[str, str]) -> Response:
        principal, plan, _ = self._decide(req, params, "approve")
        try:
            rec = self.backend.approve(plan.id, principal.identity)
        except PlanError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        log.info("api_plan_approved", plan_environment=rec.environment, identity=principal.identity)
        return json_response(200, rec.to_json())

    def reject(self, req: Request, params: Mapping[str, str]) -> Response:
        principal, plan, body = self._decide(req, params, "reject")
        reason = body.get("reason")
        if not isinstance(reason, str) or not reason.strip():
            raise ApiError(
                400, "bad_request", 'a rejection needs a JSON body {"reason": "..."} with a non-empty reason'
            )
        try:
            rec = self.backend.reject(plan.id, principal.identity, reason)
        except PlanError as exc:
            raise ApiError(409, "conflict", str(exc)) from None
        except BusyError as exc:  # an apply holds the environment's lock: it may be running this plan
            raise ApiError(409, "busy", str(exc)) from None
        log.info("api_plan_rejected", plan_environment=rec.environment, identity=principal.identity)
        return json_response(200, rec.to_json())


_ENV = r"(?P<name>[^/]+)"
_ID = r"(?P<plan_id>[^/]+)"
_ROUTE_TABLE: tuple[tuple[str, dict[str, Handler]], ...] = (
    ("/", {"GET": Api.index}),
    ("/healthz", {"GET": Api.healthz}),
    ("/readyz", {"GET": Api.readyz}),
    ("/metrics", {"GET": Api.metrics}),
    ("/api/v1/openapi.json", {"GET": Api.openapi}),
    ("/api/v1/environments", {"GET": Api.list_environments}),
    (f"/api/v1/environments/{_ENV}", {"GET": Api.get_environment}),
    ("/api/v1/plans", {"GET": Api.list_plans}),
    (f"/api/v1/plans/{_ID}", {"GET": Api.get_plan}),
    (f"/api/v1/plans/{_ID}/approve", {"POST": Api.approve}),
    (f"/api/v1/plans/{_ID}/reject", {"POST": Api.reject}),
)
_ROUTES = tuple((re.compile(f"^{p}$"), m) for p, m in _ROUTE_TABLE)
