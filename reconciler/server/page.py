"""The operator's page at ``/``: environments, the plan queue, plan detail with approve and reject, the audit trail.

Server-rendered with Jinja2 (autoescaped) from templates shipped in the package, with a little JavaScript from
``/static`` (no CDN, no build step). Login exchanges a token for a session cookie (see :mod:`.sessions`); every
form carries the session's CSRF token, checked before anything is done (a forged POST from another site, or one
without the token, is a 403). Approve and reject go through the same backend calls as the API, so they are
authorized and audited the same way. Reads are scoped like the API's: a session sees its token's environments.
No token is ever rendered.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode

import structlog
from fastapi import APIRouter, Depends, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from jinja2 import Environment, FileSystemLoader, select_autoescape

from .. import __version__
from ..model import PlanStatus
from ..store import PlanRecord
from .api import PageBackend, PlanId, authorize_decision, decide, raw_body, visible
from .auth import Principal, TokenAuth
from .errors import ApiError
from .highlight import highlight_sql
from .sessions import Session, Sessions, same_secret

log = structlog.get_logger("reconciler.page")

TEMPLATES = Path(__file__).parent / "templates"
STATIC = Path(__file__).parent / "static"
FORM_TYPE = "application/x-www-form-urlencoded"
TIMELINE_EVENTS = ("apply_finished", "plan_queued", "plan_approved", "plan_rejected", "apply_failed", "plan_stale")
_LIVE = (PlanStatus.PENDING, PlanStatus.APPROVED)


def _age(at: str | None) -> str:
    if not at:
        return "never"
    try:
        then = datetime.fromisoformat(at)
    except ValueError:
        return at
    seconds = int((datetime.now(UTC) - then).total_seconds())
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{max(seconds, 0)}s ago"


def _human_bytes(n: int | None) -> str:
    if n is None:
        return "?"
    size = float(n)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if size < 1024 or unit == "TB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def make_templates() -> Environment:
    env = Environment(loader=FileSystemLoader(TEMPLATES), autoescape=select_autoescape(["html"]))
    env.filters["sql"] = highlight_sql
    env.filters["age"] = _age
    env.filters["bytes"] = _human_bytes
    env.globals["version"] = __version__
    return env


def parse_form(body: bytes, content_type: str | None, fields: tuple[str, ...]) -> dict[str, str]:
    """A urlencoded form with at most ``fields``; each value at most 4000 characters. Stops malformed forms."""
    if (content_type or "").split(";")[0].strip().lower() != FORM_TYPE:
        raise ApiError(415, "unsupported_media_type", "the form must be application/x-www-form-urlencoded")
    try:
        parsed = parse_qs(body.decode("utf-8"), keep_blank_values=True, strict_parsing=False, max_num_fields=10)
    except (UnicodeDecodeError, ValueError):
        raise ApiError(400, "bad_request", "the form is not valid") from None
    return {k: v[0][:4000] for k, v in parsed.items() if k in fields and v}


class Page:
    """Renders the page's views for one backend."""

    def __init__(self, backend: PageBackend, auth: TokenAuth, sessions: Sessions) -> None:
        self.backend = backend
        self.auth = auth
        self.sessions = sessions
        self.templates = make_templates()

    def render(self, request: Request, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        session = self.sessions.get(request)
        html = self.templates.get_template(name).render(
            session=session,
            identity=session.principal.identity if session else None,
            csrf=session.csrf if session else "",
            path=request.url.path,
            **context,
        )
        return HTMLResponse(html, status)

    def viewer(self, request: Request) -> Principal | None:
        """The session's principal; without one, anonymous while reads need no token, else a redirect to login."""
        principal = self.sessions.principal(request)
        if principal is None and self.auth.read_requires_token:
            raise _LoginFirst()
        return principal

    def environments(self, principal: Principal | None) -> list[str]:
        return [n for n in self.backend.environment_names() if visible(principal, n)]

    def plan(self, principal: Principal | None, plan_id: int) -> PlanRecord:
        record = self.backend.get_plan(plan_id)
        if record is None or not visible(principal, record.environment):
            raise ApiError(404, "not_found", f"plan {plan_id} does not exist")
        return record

    def may_decide(self, principal: Principal | None, record: PlanRecord, what: str) -> bool:
        if principal is None:
            return False
        try:
            authorize_decision(self.backend, principal, record, what)
        except ApiError:
            return False
        return True

    def timeline(self, environment: str) -> list[dict[str, Any]]:
        records = self.backend.audit_records(environment, None, 200)
        picked = [r.to_json() for r in records if r.event in TIMELINE_EVENTS][-12:]
        return picked


class _LoginFirst(Exception):
    """A read of the page without a session while reads need a token: the answer is a redirect to /login."""


def _csrf_session(page: Page, request: Request, form: dict[str, str]) -> Session:
    """The session of a form POST whose CSRF token matches it; else 403 (a forged or stale form)."""
    session = page.sessions.get(request)
    if session is None:
        raise ApiError(403, "forbidden", "log in first: this form needs a session")
    if not same_secret(form.get("csrf"), session.csrf):
        log.warning("page_csrf_refused", path=request.url.path)
        raise ApiError(403, "forbidden", "the form's CSRF token is missing or wrong")
    return session


def build_page(backend: PageBackend, auth: TokenAuth, sessions: Sessions) -> tuple[APIRouter, Callable[..., Any]]:
    """The page's routes and the handler that turns :class:`_LoginFirst` into a redirect."""
    page = Page(backend, auth, sessions)
    router = APIRouter(include_in_schema=False)
    _login_routes(router, page)
    _overview_routes(router, page)
    _plan_routes(router, page)

    async def login_first(request: Request, exc: _LoginFirst) -> Response:
        return RedirectResponse("/login?" + urlencode({"next": request.url.path}), 303)

    return router, login_first


def _safe_next(target: str | None) -> str:
    """Only a path of this site: ``//evil`` and ``https://evil`` become ``/`` (no open redirect)."""
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return "/"
    return target[:200]


def _login_routes(router: APIRouter, page: Page) -> None:
    @router.get("/login")
    def login_form(request: Request, next: str = "/") -> HTMLResponse:
        response = HTMLResponse("")
        token = page.sessions.login_csrf(request, response)
        rendered = page.render(request, "login.html", login_csrf=token, next=_safe_next(next))
        rendered.raw_headers.extend(h for h in response.raw_headers if h[0] == b"set-cookie")
        return rendered

    @router.post("/login")
    def login(request: Request, body: bytes = Depends(raw_body)) -> Response:
        form = parse_form(body, request.headers.get("content-type"), ("token", "csrf", "next"))
        expected = request.cookies.get("reconciler_login")
        if not expected or not same_secret(form.get("csrf"), expected):
            raise ApiError(403, "forbidden", "the login form's CSRF token is missing or wrong")
        principal = page.auth.authenticate(f"Bearer {form.get('token', '')}")
        if principal is None:
            log.warning("page_login_refused")
            return page.render(request, "login.html", 401, login_csrf=expected, next="/", error="unknown token")
        response = RedirectResponse(_safe_next(form.get("next")), 303)
        page.sessions.create(principal, response)
        log.info("page_login", identity=principal.identity)
        return response

    @router.post("/logout")
    def logout(request: Request, body: bytes = Depends(raw_body)) -> Response:
        form = parse_form(body, request.headers.get("content-type"), ("csrf",))
        _csrf_session(page, request, form)
        response = RedirectResponse("/login", 303)
        page.sessions.end(request, response)
        return response


def _env_view(page: Page, name: str) -> dict[str, Any]:
    doc = page.backend.environment_json(name)
    conditions = {c["type"]: c for c in doc.get("status", {}).get("conditions", [])}
    ready = conditions.get("Ready", {})
    return {
        "doc": doc,
        "conditions": conditions,
        "reachable": ready.get("reason") != "EnvironmentUnreachable",
        "timeline": page.timeline(name),
    }


def _overview_routes(router: APIRouter, page: Page) -> None:
    @router.get("/")
    def overview(request: Request) -> HTMLResponse:
        principal = page.viewer(request)
        envs = [_env_view(page, n) for n in page.environments(principal)]
        return page.render(request, "environments.html", environments=envs)

    @router.get("/audit")
    def audit(request: Request, environment: str = "", event: str = "", actor: str = "") -> HTMLResponse:
        principal = page.viewer(request)
        names = page.environments(principal)
        if environment and environment not in names:
            raise ApiError(404, "not_found", f"unknown environment {environment[:63]!r}")
        records = page.backend.audit_records(environment or None, event[:100] or None, 500)
        rows = [
            r.to_json()
            for r in records
            if (r.environment is None or r.environment in names) and (not actor or r.actor == actor)
        ]
        return page.render(
            request,
            "audit.html",
            records=list(reversed(rows)),
            verification=page.backend.verify_audit().to_json(),
            filters={"environment": environment, "event": event, "actor": actor},
            environments=names,
        )


def _plan_view(page: Page, principal: Principal | None, record: PlanRecord) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for st in record.statements:
        if st.destructive:
            figures.update(st.tables)
    counts = page.backend.row_counts(record) if figures and record.status in _LIVE else {}
    required = page.backend.approvals_required(record.environment)
    approved_by = list(record.approvers)
    already = principal is not None and principal.identity in approved_by
    return {
        "plan": record,
        "doc": record.to_json(),
        "counts": counts,
        "required": required,
        "approved_by": approved_by,
        "may_approve": record.status is PlanStatus.PENDING
        and not already
        and page.may_decide(principal, record, "approve"),
        "may_reject": record.status in (*_LIVE, PlanStatus.FAILED) and page.may_decide(principal, record, "reject"),
        "already_approved": already,
    }


def _plan_routes(router: APIRouter, page: Page) -> None:
    @router.get("/plans")
    def queue(request: Request, environment: str = "") -> HTMLResponse:
        principal = page.viewer(request)
        names = page.environments(principal)
        plans = [p for p in page.backend.list_plans(None, None) if p.environment in names]
        if environment:
            plans = [p for p in plans if p.environment == environment]
        live = [p for p in plans if p.status in _LIVE]
        done = [p for p in reversed(plans) if p.status not in _LIVE][:50]
        return page.render(request, "plans.html", live=live, done=done, environments=names, environment=environment)

    @router.get("/plans/{plan_id}")
    def detail(request: Request, plan_id: PlanId, done: str = "") -> HTMLResponse:
        principal = page.viewer(request)
        view = _plan_view(page, principal, page.plan(principal, plan_id))
        return page.render(request, "plan.html", done=done[:20], **view)

    @router.post("/plans/{plan_id}/{action}")
    def act(request: Request, plan_id: PlanId, action: str, body: bytes = Depends(raw_body)) -> Response:
        if action not in ("approve", "reject"):
            raise ApiError(404, "not_found", f"no such path: {request.url.path[:200]}")
        form = parse_form(body, request.headers.get("content-type"), ("csrf", "reason"))
        session = _csrf_session(page, request, form)
        record = page.plan(session.principal, plan_id)
        reason = form.get("reason", "").strip()
        if action == "reject" and not reason:
            raise ApiError(400, "bad_request", "a rejection needs a reason")
        try:
            decide(page.backend, session.principal, record, action, reason)
        except ApiError as exc:
            view = _plan_view(page, session.principal, page.plan(session.principal, plan_id))
            return page.render(request, "plan.html", exc.status, done="", error=exc.message, **view)
        log.info("page_plan_decided", action=action, plan_environment=record.environment)
        return RedirectResponse(f"/plans/{plan_id}?done={'approved' if action == 'approve' else 'rejected'}", 303)
