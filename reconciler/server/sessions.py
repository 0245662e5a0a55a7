"""Sessions of the operator's page: a token exchanged once for an HttpOnly, SameSite=Strict cookie.

The cookie holds a random session id; the server keeps only its SHA-256 digest, the principal and the session's
CSRF token (what every form of the page must send back). A stolen page (XSS) cannot read the cookie; another site
cannot send it (SameSite=Strict) nor forge a form (it does not know the CSRF token). Sessions live in memory: a
restart logs everyone out.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass

from starlette.requests import Request
from starlette.responses import Response

from .auth import Principal

SESSION_COOKIE = "reconciler_session"
LOGIN_COOKIE = "reconciler_login"  # CSRF token of the login form, before there is a session
MAX_SESSIONS = 1000


@dataclass(frozen=True)
class Session:
    principal: Principal
    csrf: str
    expires: float


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8", "replace")).hexdigest()


def same_secret(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode("utf-8", "replace"), expected.encode())


class Sessions:
    """Page sessions in memory, keyed by the digest of their cookie."""

    def __init__(self, *, secure: bool, ttl_seconds: float = 8 * 3600) -> None:
        self.secure = secure
        self.ttl = ttl_seconds
        self._by_digest: dict[str, Session] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Sessions({len(self._by_digest)} open)"

    def create(self, principal: Principal, response: Response) -> Session:
        sid = secrets.token_urlsafe(32)
        session = Session(principal, secrets.token_urlsafe(32), time.time() + self.ttl)
        with self._lock:
            self._expire()
            if len(self._by_digest) >= MAX_SESSIONS:  # drop the oldest rather than grow without bound
                oldest = min(self._by_digest, key=lambda k: self._by_digest[k].expires)
                del self._by_digest[oldest]
            self._by_digest[_digest(sid)] = session
        self._set_cookie(response, SESSION_COOKIE, sid, int(self.ttl))
        response.delete_cookie(LOGIN_COOKIE, path="/")
        return session

    def get(self, request: Request) -> Session | None:
        sid = request.cookies.get(SESSION_COOKIE)
        if not sid or len(sid) > 200:
            return None
        with self._lock:
            session = self._by_digest.get(_digest(sid))
            if session is not None and session.expires < time.time():
                del self._by_digest[_digest(sid)]
                return None
        return session

    def principal(self, request: Request) -> Principal | None:
        session = self.get(request)
        return session.principal if session is not None else None

    def end(self, request: Request, response: Response) -> None:
        sid = request.cookies.get(SESSION_COOKIE)
        if sid:
            with self._lock:
                self._by_digest.pop(_digest(sid), None)
        response.delete_cookie(SESSION_COOKIE, path="/")

    def login_csrf(self, request: Request, response: Response) -> str:
        """The login form's CSRF token: the one its cookie holds, else a new one set in a cookie."""
        token = request.cookies.get(LOGIN_COOKIE)
        if not token or len(token) > 100:
            token = secrets.token_urlsafe(32)
            self._set_cookie(response, LOGIN_COOKIE, token, 3600)
        return token

    def _set_cookie(self, response: Response, name: str, value: str, max_age: int) -> None:
        response.set_cookie(
            name, value, max_age=max_age, path="/", httponly=True, samesite="strict", secure=self.secure
        )

    def _expire(self) -> None:
        now = time.time()
        for key in [k for k, s in self._by_digest.items() if s.expires < now]:
            del self._by_digest[key]
