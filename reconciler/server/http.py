"""The socket side of the API: a stdlib ThreadingHTTPServer that hands every request to :class:`.api.Api`.

Every method is routed (an unsupported one gets 405 from the API, not 501 from the stdlib), bodies are capped,
and an unexpected exception becomes a JSON 500 without details; requests are logged at debug level without
headers (tokens) or query strings.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import structlog

from .api import MAX_BODY, Api, ApiError, Request, Response, error_response

log = structlog.get_logger("reconciler.http")


class _Handler(BaseHTTPRequestHandler):
    server_version = "schema-reconciler"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    api: Api  # set on the subclass made per server

    def _dispatch(self) -> None:
        try:
            response = self._respond()
        except Exception:
            with contextlib.suppress(Exception):  # even a failing log sink must not cost the client its answer
                log.exception("http_handler_crashed", method=self.command, path=urlsplit(self.path).path)
            response = error_response(ApiError(500, "internal_error", "internal error"))
        self._send(response)

    def _respond(self) -> Response:
        parts = urlsplit(self.path)
        length_text = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(length_text)
        except ValueError:
            self.close_connection = True
            return error_response(ApiError(400, "bad_request", "Content-Length is not a number"))
        if length < 0 or length > MAX_BODY:
            self.close_connection = True
            return error_response(ApiError(413, "payload_too_large", f"the body may have at most {MAX_BODY} bytes"))
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True
            return error_response(ApiError(411, "length_required", "send the body with a Content-Length"))
        body = self.rfile.read(length) if length else b""
        try:
            query = parse_qs(parts.query, keep_blank_values=True, strict_parsing=False, max_num_fields=20)
        except ValueError:
            return error_response(ApiError(400, "bad_request", "too many query parameters"))
        req = Request(
            method=self.command,
            path=parts.path,
            query=query,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        return self.api.handle(req)

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.send_header("Cache-Control", "no-store")
        for k, v in response.headers:
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(response.body)

    def __getattr__(self, name: str) -> Callable[[], None]:
        # do_GET, do_POST, do_DELETE, ... and any other method: the API answers (405 for what it does not serve).
        if name.startswith("do_"):
            return self._dispatch
        raise AttributeError(name)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # replaced by log_request below

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.debug("http_request", method=self.command, path=urlsplit(self.path).path, status=str(code))


class _Server6(ThreadingHTTPServer):
    address_family = socket.AF_INET6


class HttpServer:
    """The API on ``listen:port`` (port 0 picks a free one), served from a background thread."""

    def __init__(self, api: Api, listen: str, port: int) -> None:
        handler = type("Handler", (_Handler,), {"api": api})
        server_cls = _Server6 if ":" in listen else ThreadingHTTPServer
        self._server = server_cls((listen, port), handler)
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    @property
    def url(self) -> str:
        host, port = self.address
        shown = f"[{host}]" if ":" in host else host
        return f"http://{shown}:{port}"

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="reconciler-http", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:
            self._server.shutdown()
            self._thread.join(timeout=5)
            self._thread = None
        self._server.server_close()
