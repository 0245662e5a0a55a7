"""The ASGI application: the JSON API, the operator's page and its static files, behind the request guard."""

from __future__ import annotations

from typing import Any, cast

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from .. import __version__
from .api import Access, Backend, build_router
from .auth import TokenAuth
from .errors import install_error_handlers
from .guard import Guard, allowed_host_names
from .http import DEFAULT_LIMITS, Limits
from .page import STATIC, _LoginFirst, build_page
from .sessions import Sessions

DESCRIPTION = (
    "Schema Reconciler's daemon: environments, plans and their approval. Writes need "
    "`Authorization: Bearer TOKEN`; reads too when server.read_requires_token is true (the default when the "
    'server listens beyond loopback). Errors are JSON `{"error": {"status", "code", "message"}}`.'
)


def create_app(
    backend: Backend,
    auth: TokenAuth,
    *,
    listen: str = "127.0.0.1",
    allowed_hosts: tuple[str, ...] = (),
    tls: bool = False,
    limits: Limits = DEFAULT_LIMITS,
) -> FastAPI:
    """The whole HTTP side for ``backend``; the page is served when the backend can feed it."""
    app = FastAPI(
        title="Schema Reconciler",
        version=__version__,
        description=DESCRIPTION,
        openapi_url="/api/v1/openapi.json",
        docs_url=None,
        redoc_url=None,
    )
    sessions = Sessions(secure=tls)
    install_error_handlers(app)
    app.include_router(build_router(backend, Access(auth, sessions.principal)))
    if hasattr(backend, "audit_records"):
        router, login_first = build_page(backend, auth, sessions)  # type: ignore[arg-type]
        app.include_router(router)
        app.add_exception_handler(_LoginFirst, login_first)
        app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.add_middleware(
        Guard,
        hosts=allowed_host_names(listen, allowed_hosts),
        max_headers=limits.max_headers,
        max_body=limits.max_body,
        max_head_bytes=limits.max_head_bytes,
    )
    return app


def openapi_document() -> dict[str, Any]:
    """The OpenAPI document the daemon serves at ``/api/v1/openapi.json``, generated from the pydantic models."""
    return create_app(cast(Backend, _NoBackend()), TokenAuth({})).openapi()


class _NoBackend:
    """Enough of a backend to build the routes (the document does not depend on the data)."""
