"""Checks on every HTTP request before any route runs, each stopping what an HTTP client could send.

- ``Host`` must name this server (a configured name, the listen address, ``localhost`` or a loopback address):
  a page of another site that rebinds its DNS name to this address (DNS rebinding) gets a 421. ``/healthz`` and
  ``/readyz`` answer any Host: orchestrator probes address the pod by IP, and they tell nothing.
- At most ``max_headers`` header fields of at most ``max_head_bytes`` in all (431): a client cannot make every
  request costly (h11 bounds only a head that arrives in pieces).
- A body of at most ``max_body`` bytes (413), sent with a Content-Length (411 otherwise): bodies are never
  buffered beyond the cap.
- Every answer carries ``Cache-Control: no-store`` and a few browser hardening headers.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import error_bytes

PROBE_PATHS = frozenset({"/healthz", "/readyz"})
_SECURITY_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"content-security-policy", b"default-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'"),
]


def host_name(header: str) -> str:
    """The host part of a ``Host`` header, lower-case, without port or IPv6 brackets."""
    h = header.strip().lower()
    if h.startswith("["):
        return h[1 : h.find("]")] if "]" in h else ""
    return h.rsplit(":", 1)[0] if h.count(":") == 1 else h


def allowed_host_names(listen: str, configured: Iterable[str]) -> frozenset[str]:
    names = {"localhost", "127.0.0.1", "::1", listen.strip("[]").lower()}
    names.update(n.strip().lower() for n in configured)
    return frozenset(n for n in names if n)


def _is_loopback(name: str) -> bool:
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Guard:
    """ASGI middleware applying the checks above."""

    def __init__(
        self, app: ASGIApp, *, hosts: frozenset[str], max_headers: int, max_body: int, max_head_bytes: int
    ) -> None:
        self.app = app
        self.max_head_bytes = max_head_bytes
        self.hosts = hosts
        self.max_headers = max_headers
        self.max_body = max_body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refused = self._refusal(scope)
        if refused is not None:
            await _send_error(send, *refused)
            return

        async def send_hardened(message: Message) -> None:
            if message["type"] == "http.response.start":
                names = {k.lower() for k, _ in message.get("headers", [])}
                extra = [(k, v) for k, v in _SECURITY_HEADERS if k not in names]
                message = {**message, "headers": [*message.get("headers", []), *extra]}
            await send(message)

        await self.app(scope, receive, send_hardened)

    def _refusal(self, scope: Scope) -> tuple[int, str] | None:
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if len(headers) > self.max_headers:
            return 431, f"at most {self.max_headers} header fields are accepted"
        if sum(len(k) + len(v) + 4 for k, v in headers) > self.max_head_bytes:
            return 431, f"the header fields may have at most {self.max_head_bytes} bytes"
        values: dict[bytes, bytes] = {}
        for k, v in headers:
            values.setdefault(k.lower(), v)
        host = host_name(values.get(b"host", b"").decode("latin-1"))
        probe = scope.get("path") in PROBE_PATHS  # kubelet probes send the pod's IP; these paths reveal nothing
        if not probe and host not in self.hosts and not _is_loopback(host):
            return 421, "the Host header does not name this server (see server.allowed_hosts)"
        if b"transfer-encoding" in values:
            return 411, "send the body with a Content-Length"
        length = values.get(b"content-length", b"0") or b"0"
        if not length.isdigit() or len(length) > 12:
            return 400, "Content-Length is not a number"
        if int(length) > self.max_body:
            return 413, f"the body may have at most {self.max_body} bytes"
        return None


async def _send_error(send: Send, status: int, message: str) -> None:
    body = error_bytes(status, message)
    headers: list[Any] = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        *_SECURITY_HEADERS,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
