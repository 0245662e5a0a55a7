"""Every HTTP error is JSON ``{"error": {"status", "code", "message"}}``.

A request's fault is a 4xx; a 5xx says the daemon itself is unwell (its store does not answer, or a bug). Messages
are redacted (no DSN password) and never carry a token.
"""

from __future__ import annotations

import json
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from ..db import redact
from ..errors import ConfigError, ReconcilerError, RetryableError, StoreError
from .models import ErrorBody

log = structlog.get_logger("reconciler.http")

_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    409: "conflict",
    411: "length_required",
    413: "payload_too_large",
    415: "unsupported_media_type",
    421: "misdirected_request",
    431: "request_header_fields_too_large",
    500: "internal_error",
    503: "unavailable",
}


class ApiError(Exception):
    """An HTTP error answer: status, snake_case code, message and extra headers."""

    def __init__(self, status: int, code: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


class JsonResponse(JSONResponse):
    """JSON as the API always wrote it: indented, one trailing newline, dates as strings."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, indent=2, default=str).encode("utf-8") + b"\n"


def error_body(status: int, code: str, message: str) -> dict[str, Any]:
    return {"error": {"status": status, "code": code, "message": redact(message)[:2000]}}


def error_response(exc: ApiError) -> JsonResponse:
    return JsonResponse(error_body(exc.status, exc.code, exc.message), exc.status, headers=exc.headers)


def error_bytes(status: int, message: str) -> bytes:
    """The JSON error body for answers written below the ASGI app (the protocol layer)."""
    return json.dumps(error_body(status, _CODES.get(status, "error"), message)).encode() + b"\n"


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the given error statuses."""
    return {s: {"model": ErrorBody, "description": _CODES.get(s, "error")} for s in statuses}


def _from_backend(exc: ReconcilerError) -> ApiError:
    """The daemon's own errors: its store failing is a 503; the rest is about the request's plan or environment."""
    if isinstance(exc, StoreError):
        return ApiError(503, "unavailable", str(exc), headers={"Retry-After": "5"})
    if isinstance(exc, ConfigError):
        return ApiError(404, "not_found", str(exc))
    if isinstance(exc, RetryableError):
        return ApiError(409, "retry_later", str(exc), headers={"Retry-After": "5"})
    return ApiError(409, "conflict", str(exc))


def install_error_handlers(app: FastAPI) -> None:
    """Turn every failure into JSON: ours, Starlette's (404, 405), validation (400), backend, unexpected (500)."""

    @app.exception_handler(ApiError)
    async def api_error(request: Request, exc: ApiError) -> JsonResponse:
        return error_response(exc)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JsonResponse:
        status = exc.status_code
        message = f"no such path: {request.url.path[:200]}" if status == 404 else str(exc.detail)
        if status == 405:
            message = f"{request.method[:20]} is not allowed on {request.url.path[:200]}"
        return error_response(ApiError(status, _CODES.get(status, "error"), message, headers=dict(exc.headers or {})))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JsonResponse:
        parts = []
        for err in exc.errors()[:3]:
            where = ".".join(str(x) for x in err.get("loc", ()))
            parts.append(f"{where}: {err.get('msg', 'invalid')}")
        return error_response(ApiError(400, "bad_request", "; ".join(parts) or "invalid request"))

    @app.exception_handler(ReconcilerError)
    async def backend_error(request: Request, exc: ReconcilerError) -> JsonResponse:
        log.warning("api_backend_error", path=request.url.path, error=redact(str(exc)))
        return error_response(_from_backend(exc))

    @app.exception_handler(Exception)
    async def crashed(request: Request, exc: Exception) -> JsonResponse:
        log.error("http_handler_crashed", method=request.method, path=request.url.path, error=type(exc).__name__)
        return error_response(ApiError(500, "internal_error", "internal error"))
