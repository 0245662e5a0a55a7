"""The JSON API under ``/api/v1`` plus ``/healthz``, ``/readyz`` and ``/metrics``, as FastAPI routes.

Errors are JSON ``{"error": {"status", "code", "message"}}`` (see :mod:`.errors`). Bodies are parsed here, not by
FastAPI, so that a body that is not JSON is 415, a malformed one 400, and a deeply nested document or a
5000-digit number is a 400 too (the guards stop HTTP clients; the request size cap is in :mod:`.guard`).
Reads are scoped: a token sees only the environments it lists (others are 404, as if they did not exist).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Annotated, Any, Protocol

import structlog
from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response

from ..errors import BusyError, PlanError
from ..model import PlanStatus
from ..store import AuditRecord, PlanRecord
from ..store.store import AuditVerification
from .auth import Principal, TokenAuth
from .errors import ApiError, JsonResponse, error_responses
from .models import (
    NOT_BLANK,
    ApproveBody,
    EnvironmentList,
    Health,
    Links,
    Plan,
    PlanList,
    Readiness,
    RejectBody,
)
from .models import Environment as EnvironmentModel

log = structlog.get_logger("reconciler.api")

MAX_BODY = 64 * 1024
JSON_TYPE = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
MAX_PLAN_ID = 10**18 - 1
MAX_REASON = 4000


class Backend(Protocol):
    """What the HTTP side needs from the daemon."""

    def environment_names(self) -> list[str]: ...
    def environment_json(self, name: str) -> dict[str, Any]: ...
    def list_plans(self, environment: str | None, status: PlanStatus | None) -> list[PlanRecord]: ...
    def get_plan(self, plan_id: int) -> PlanRecord | None: ...
    def is_approver(self, environment: str, identity: str) -> bool: ...
    def approve(self, plan_id: int, by: str) -> PlanRecord: ...
    def reject(self, plan_id: int, by: str, reason: str) -> PlanRecord: ...
    def metrics_text(self) -> bytes: ...
    def readiness(self) -> dict[str, bool]: ...


class PageBackend(Backend, Protocol):
    """What the operator's page needs besides the API's backend."""

    def approvals_required(self, environment: str) -> int: ...
    def audit_records(self, environment: str | None, event: str | None, limit: int | None) -> list[AuditRecord]: ...
    def verify_audit(self) -> AuditVerification: ...
    def row_counts(self, record: PlanRecord) -> dict[str, tuple[int | None, bool]]: ...


_UNAUTHORIZED = {"WWW-Authenticate": 'Bearer realm="schema-reconciler"'}


class Access:
    """Who is asking: a bearer token (API clients) or a page session; reads scoped to the principal."""

    def __init__(self, auth: TokenAuth, session_principal: Callable[[Request], Principal | None]) -> None:
        self.auth = auth
        self._session_principal = session_principal

    def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if not header:
            raise ApiError(401, "unauthorized", "a bearer token is required", headers=_UNAUTHORIZED)
        principal = self.auth.authenticate(header)
        if principal is None:
            raise ApiError(401, "unauthorized", "the bearer token is not valid", headers=_UNAUTHORIZED)
        return principal

    def reader(self, request: Request) -> Principal | None:
        """The principal of a read: None means anonymous (allowed only while reads need no token)."""
        if request.headers.get("authorization"):
            return self.principal(request)
        principal: Principal | None = self._session_principal(request)
        if principal is None and self.auth.read_requires_token:
            raise ApiError(401, "unauthorized", "a bearer token is required", headers=_UNAUTHORIZED)
        return principal


def visible(principal: Principal | None, environment: str) -> bool:
    return principal is None or principal.may_decide(environment)


def check_query(request: Request, allowed: tuple[str, ...]) -> None:
    """Unknown or repeated query parameters are a 400 (a typo must not silently widen a filter)."""
    seen: set[str] = set()
    for key, _ in request.query_params.multi_items():
        if key not in allowed:
            raise ApiError(400, "bad_request", f"unknown query parameter {key[:40]!r} (allowed: {', '.join(allowed)})")
        if key in seen:
            raise ApiError(400, "bad_request", f"query parameter {key!r} must be given once")
        seen.add(key)


def parse_json_object(body: bytes, content_type: str | None, allowed: tuple[str, ...]) -> dict[str, Any]:
    """A JSON object body with only ``allowed`` fields; empty is ``{}``. Stops malformed bodies of HTTP clients."""
    if not body.strip():
        return {}
    ctype = (content_type or JSON_TYPE).split(";")[0].strip().lower()
    if ctype != JSON_TYPE:
        raise ApiError(415, "unsupported_media_type", "the request body must be application/json")
    try:
        data = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ApiError(400, "bad_request", f"the request body is not valid JSON: {exc}") from None
    except (RecursionError, ValueError):  # nesting too deep, or an integer with more digits than Python converts
        raise ApiError(400, "bad_request", "the request body is nested too deeply or holds a number too long") from None
    if not isinstance(data, dict):
        raise ApiError(400, "bad_request", "the request body must be a JSON object")
    unknown = sorted(set(data) - set(allowed))
    if unknown:
        raise ApiError(400, "bad_request", f"unknown field(s) in the request body: {', '.join(unknown)[:200]}")
    return data


PlanId = Annotated[int, Path(ge=1, le=MAX_PLAN_ID, description="a plan's id")]


def _body_doc(model: type[ApproveBody] | type[RejectBody], required: bool) -> dict[str, Any]:
    return {
        "requestBody": {
            "required": required,
            "content": {"application/json": {"schema": model.model_json_schema()}},
        }
    }


def build_router(backend: Backend, access: Access) -> APIRouter:
    """The API's routes, bound to ``backend``."""
    router = APIRouter()
    reader = Depends(access.reader)
    _health_routes(router, backend, access)
    _read_routes(router, backend, reader)
    _write_routes(router, backend, access)
    return router


def _health_routes(router: APIRouter, backend: Backend, access: Access) -> None:
    @router.get("/healthz", response_model=Health, tags=["health"], summary="200 while the process is alive")
    def healthz() -> JsonResponse:
        return JsonResponse({"status": "ok"})

    @router.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "not ready"}},
        tags=["health"],
        summary="200 when the config is loaded, the store answers and the scheduler runs",
    )
    def readyz() -> JsonResponse:
        checks = backend.readiness()
        ok = all(checks.values())
        return JsonResponse({"status": "ok" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    @router.get(
        "/metrics",
        response_class=Response,
        responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}, **error_responses(401)},
        tags=["health"],
        summary="Prometheus text format",
    )
    def metrics(request: Request) -> Response:
        access.reader(request)
        return Response(backend.metrics_text(), media_type=METRICS_TYPE)

    @router.get("/api/v1", response_model=Links, tags=["api"], summary="links to the API's parts")
    def index() -> JsonResponse:
        links = {
            "page": "/",
            "metrics": "/metrics",
            "healthz": "/healthz",
            "readyz": "/readyz",
            "environments": "/api/v1/environments",
            "plans": "/api/v1/plans",
            "openapi": "/api/v1/openapi.json",
        }
        return JsonResponse({"name": "schema-reconciler", "links": links})


def _environment(backend: Backend, principal: Principal | None, name: str) -> str:
    if name not in backend.environment_names() or not visible(principal, name):
        raise ApiError(404, "not_found", f"unknown environment {name[:63]!r}")
    return name


def _plan(backend: Backend, principal: Principal | None, plan_id: int) -> PlanRecord:
    record = backend.get_plan(plan_id)
    if record is None or not visible(principal, record.environment):
        raise ApiError(404, "not_found", f"plan {plan_id} does not exist")
    return record


def _read_routes(router: APIRouter, backend: Backend, reader: Any) -> None:
    reads = error_responses(400, 401, 404)

    @router.get("/api/v1/environments", response_model=EnvironmentList, responses=reads, tags=["api"])
    def list_environments(request: Request, principal: Principal | None = reader) -> JsonResponse:
        check_query(request, ())
        names = [n for n in backend.environment_names() if visible(principal, n)]
        return JsonResponse({"environments": [backend.environment_json(n) for n in names]})

    @router.get("/api/v1/environments/{name}", response_model=EnvironmentModel, responses=reads, tags=["api"])
    def get_environment(
        request: Request, name: Annotated[str, Path(max_length=200)], principal: Principal | None = reader
    ) -> JsonResponse:
        check_query(request, ())
        return JsonResponse(backend.environment_json(_environment(backend, principal, name)))

    @router.get("/api/v1/plans", response_model=PlanList, responses=reads, tags=["api"])
    def list_plans(
        request: Request,
        environment: Annotated[str | None, Query(max_length=200)] = None,
        status: PlanStatus | None = None,
        principal: Principal | None = reader,
    ) -> JsonResponse:
        check_query(request, ("environment", "status"))
        env = _environment(backend, principal, environment) if environment is not None else None
        plans = [p.to_json() for p in backend.list_plans(env, status) if visible(principal, p.environment)]
        return JsonResponse({"plans": plans})

    @router.get("/api/v1/plans/{plan_id}", response_model=Plan, responses=reads, tags=["api"])
    def get_plan(request: Request, plan_id: PlanId, principal: Principal | None = reader) -> JsonResponse:
        check_query(request, ())
        return JsonResponse(_plan(backend, principal, plan_id).to_json())


def authorize_decision(backend: Backend, principal: Principal, record: PlanRecord, what: str) -> None:
    """403 unless the principal may decide the plan's environment and is one of its approvers."""
    if not principal.may_decide(record.environment):
        log.warning("api_forbidden", identity=principal.identity, action=what, plan_environment=record.environment)
        raise ApiError(
            403, "forbidden", f"{principal.identity!r} may not {what} plans of environment {record.environment!r}"
        )
    if not backend.is_approver(record.environment, principal.identity):
        raise ApiError(
            403,
            "forbidden",
            f"{principal.identity!r} is not an approver of environment {record.environment!r} (its approvers)",
        )


def decide(backend: Backend, principal: Principal, record: PlanRecord, what: str, reason: str = "") -> PlanRecord:
    """Approve or reject through the daemon (which audits it and reconciles); conflicts are 409."""
    authorize_decision(backend, principal, record, what)
    try:
        if what == "approve":
            decided = backend.approve(record.id, principal.identity)
        else:
            decided = backend.reject(record.id, principal.identity, reason)
    except PlanError as exc:
        raise ApiError(409, "conflict", str(exc)) from None
    except BusyError as exc:  # an apply holds the environment's lock: it may be running this plan
        raise ApiError(409, "busy", str(exc)) from None
    event = "api_plan_approved" if what == "approve" else "api_plan_rejected"
    log.info(event, plan_environment=decided.environment, identity=principal.identity)
    return decided


async def raw_body(request: Request) -> bytes:
    """The request body (capped by the guard), read before a synchronous route runs in a worker thread."""
    return await request.body()


def _write_routes(router: APIRouter, backend: Backend, access: Access) -> None:
    def decision_route(what: str, body: type[ApproveBody] | type[RejectBody], summary: str) -> Callable[[Any], Any]:
        return router.post(
            f"/api/v1/plans/{{plan_id}}/{what}",
            response_model=Plan,
            responses=error_responses(400, 401, 403, 404, 409, 413, 415),
            openapi_extra=_body_doc(body, body is RejectBody),
            tags=["api"],
            summary=summary,
        )

    def read(
        request: Request, plan_id: int, raw: bytes, fields: tuple[str, ...]
    ) -> tuple[Principal, PlanRecord, dict[str, Any]]:
        """The caller (authenticated first), the plan it decides, and its JSON body."""
        principal = access.principal(request)
        body = parse_json_object(raw, request.headers.get("content-type"), fields)
        return principal, _plan(backend, None, plan_id), body

    @decision_route("approve", ApproveBody, "approve as the token's identity; the environment is reconciled at once")
    def approve(request: Request, plan_id: PlanId, body: bytes = Depends(raw_body)) -> JsonResponse:
        principal, record, _ = read(request, plan_id, body, ())
        return JsonResponse(decide(backend, principal, record, "approve").to_json())

    @decision_route("reject", RejectBody, 'reject with {"reason": "..."}')
    def reject(request: Request, plan_id: PlanId, raw: bytes = Depends(raw_body)) -> JsonResponse:
        principal, record, body = read(request, plan_id, raw, ("reason",))
        reason = body.get("reason")
        if not isinstance(reason, str) or not re.search(NOT_BLANK, reason):
            raise ApiError(
                400, "bad_request", 'a rejection needs a JSON body {"reason": "..."} with a non-empty reason'
            )
        if len(reason) > MAX_REASON:
            raise ApiError(400, "bad_request", f"the reason may have at most {MAX_REASON} characters")
        return JsonResponse(decide(backend, principal, record, "reject", reason).to_json())
