"""The socket side: uvicorn serving the ASGI app from a thread of the daemon process.

Connections are asyncio protocols, not threads, so clients that send half a request hold no worker; each such
connection is closed after ``header_timeout`` (408) and an idle keep-alive one after ``timeout_keep_alive``.
``limit_concurrency`` caps connections and tasks; a request head larger than ``max_head_bytes`` gets a JSON 400
(h11's limit), as does any request h11 cannot parse. Every limit stops what HTTP clients could hold or send.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any

import h11
import structlog
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .errors import error_bytes

log = structlog.get_logger("reconciler.http")


@dataclass(frozen=True)
class Limits:
    """What one HTTP client may hold or send."""

    limit_concurrency: int = 256  # connections and tasks at once; beyond it uvicorn answers 503
    timeout_keep_alive: float = 5.0  # seconds an idle keep-alive connection stays open
    header_timeout: float = 10.0  # seconds a new connection has to send its request head
    max_head_bytes: int = 16 * 1024  # request line and headers (h11_max_incomplete_event_size)
    max_headers: int = 64  # header fields per request
    max_body: int = 64 * 1024  # request body bytes


DEFAULT_LIMITS = Limits()


def _json_error(conn: h11.Connection, status: int, message: str) -> bytes:
    body = error_bytes(status, message)
    headers = [(b"content-type", b"application/json"), (b"connection", b"close"), (b"cache-control", b"no-store")]
    try:
        out = conn.send(h11.Response(status_code=status, headers=headers))
        out = (out or b"") + (conn.send(h11.Data(data=body)) or b"") + (conn.send(h11.EndOfMessage()) or b"")
    except h11.LocalProtocolError:  # the connection cannot carry a response any more: write one by hand
        reason = {400: b"Bad Request", 408: b"Request Timeout"}.get(status, b"Error")
        out = b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\nconnection: close\r\n" % (status, reason)
        out += b"content-length: %d\r\n\r\n" % len(body) + body
    return out


class JsonH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, answering unparseable requests with JSON and closing slow request heads."""

    header_timeout = Limits.header_timeout

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_timer = self.loop.call_later(self.header_timeout, self._head_deadline)

    def connection_lost(self, exc: Exception | None) -> None:
        self._head_timer.cancel()
        super().connection_lost(exc)

    def handle_events(self) -> None:
        super().handle_events()
        if self.cycle is not None:  # a request head arrived: from now on the keep-alive timeout applies
            self._head_timer.cancel()

    def _head_deadline(self) -> None:
        if self.cycle is None and not self.transport.is_closing():
            self.transport.write(_json_error(self.conn, 408, "the request head did not arrive in time"))
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        self.transport.write(_json_error(self.conn, 400, "the request is not valid HTTP/1.1 or its head is too large"))
        self.transport.close()


def _bind(listen: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((listen.strip("[]"), port))
        sock.listen(512)
    except OSError:
        sock.close()
        raise
    sock.set_inheritable(True)
    return sock


class HttpServer:
    """An ASGI app on ``listen:port`` (port 0 picks a free one), served by uvicorn from a background thread.

    The socket is bound in the constructor, so a port in use fails at once (OSError).
    """

    def __init__(
        self,
        app: Any,
        listen: str,
        port: int,
        *,
        limits: Limits = DEFAULT_LIMITS,
        tls_cert: str | None = None,
        tls_key: str | None = None,
    ) -> None:
        self._sock = _bind(listen, port)
        self._tls = tls_cert is not None
        protocol = type("Protocol", (JsonH11Protocol,), {"header_timeout": limits.header_timeout})
        config = uvicorn.Config(
            app,
            http=protocol,
            lifespan="off",
            log_config=None,
            access_log=False,
            server_header=False,
            date_header=True,
            proxy_headers=False,
            limit_concurrency=limits.limit_concurrency,
            timeout_keep_alive=int(max(1, limits.timeout_keep_alive)),
            h11_max_incomplete_event_size=limits.max_head_bytes,
            ssl_certfile=tls_cert,
            ssl_keyfile=tls_key,
        )
        self._server = uvicorn.Server(config)
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"{'https' if self._tls else 'http'}://{shown}:{port}"

    def start(self, timeout: float = 10.0) -> None:
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, name="reconciler-http", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started and self._thread.is_alive() and time.monotonic() < deadline:
            time.sleep(0.01)
        if not self._server.started:
            log.error("http_not_started")

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(timeout=5)
            if self._thread.is_alive():
                self._server.force_exit = True
                self._thread.join(timeout=2)
            self._thread = None
        self._sock.close()
