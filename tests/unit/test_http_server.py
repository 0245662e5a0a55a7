"""The HTTP server on a real socket (uvicorn in a thread) with a fake backend: slow clients, hostile requests,
Host checks, scoped reads and TLS. Every refusal is a JSON 4xx; nothing here needs a database."""

from __future__ import annotations

import http.client as httpclient
import json
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from test_api import ALICE, BOB, FakeBackend

from reconciler.config import load_config
from reconciler.server.app import create_app
from reconciler.server.auth import Principal, TokenAuth
from reconciler.server.http import DEFAULT_LIMITS, HttpServer, Limits


def serve(read_requires_token: bool = False, *, limits: Limits = DEFAULT_LIMITS, **tls: str) -> HttpServer:
    auth = TokenAuth(
        {ALICE: Principal("alice", frozenset({"*"})), BOB: Principal("bob", frozenset({"dev"}))},
        read_requires_token=read_requires_token,
    )
    app = create_app(FakeBackend(), auth, allowed_hosts=("reconciler.example",), tls=bool(tls))
    server = HttpServer(app, "127.0.0.1", 0, limits=limits, **tls)
    server.start()
    return server


@pytest.fixture()
def server() -> Iterator[HttpServer]:
    s = serve()
    yield s
    s.stop()


def request(
    server: HttpServer, method: str, path: str, *, headers: dict[str, str] | None = None, body: bytes | None = None
) -> tuple[int, Any, dict[str, str]]:
    host, port = server.address
    conn = httpclient.HTTPConnection(host, port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        resp = conn.getresponse()
        raw = resp.read()
        ctype = resp.getheader("Content-Type", "")
        return (
            resp.status,
            (json.loads(raw) if ctype.startswith("application/json") else raw),
            {k.lower(): v for k, v in resp.getheaders()},
        )
    finally:
        conn.close()


def raw_exchange(server: HttpServer, data: bytes, timeout: float = 5) -> bytes:
    """Send ``data`` on a fresh connection; everything the server answers until it closes (or ``timeout``)."""
    with socket.create_connection(server.address, timeout=timeout) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
    return b"".join(chunks)


def json_of(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def test_fifty_slow_clients_do_not_delay_healthz() -> None:
    server = serve(limits=Limits(header_timeout=3.0))
    slow: list[socket.socket] = []
    try:
        assert request(server, "GET", "/healthz")[0] == 200  # warm: the first request pays for lazy set-up
        for _ in range(50):  # half a request each: a request line and one header, never the blank line
            s = socket.create_connection(server.address, timeout=5)
            s.sendall(b"GET /api/v1/plans HTTP/1.1\r\nHost: 127.0.0.1\r\n")
            slow.append(s)
        time.sleep(0.2)
        started = time.monotonic()
        status, doc, _ = request(server, "GET", "/healthz")
        elapsed = time.monotonic() - started
        assert (status, doc) == (200, {"status": "ok"})
        assert elapsed < 1.0, f"/healthz took {elapsed:.2f}s with 50 slow clients connected"
        # The server does not wait for them forever: after the header timeout each gets a JSON 408 and is closed.
        slow[0].settimeout(6)
        answer = b""
        while chunk := slow[0].recv(65536):
            answer += chunk
        status, doc = json_of(answer)
        assert status == 408 and doc["error"]["code"] == "request_timeout"
    finally:
        for s in slow:
            s.close()
        server.stop()


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (b"[" * 100_00 + b"]" * 100_00, "deeply nested"),
        (b'{"reason": ' + b"9" * 5000 + b"}", "5000-digit number"),
        (b'{"reason": 1e999999}', "huge exponent"),
        (b"\xff\xfe{}", "not UTF-8"),
        (b'{"reason": "x", "reason": "y", "by": "mallory"}', "unknown field"),
    ],
)
def test_malformed_bodies_are_json_400(server: HttpServer, body: bytes, what: str) -> None:
    status, doc, _ = request(
        server,
        "POST",
        "/api/v1/plans/1/reject",
        headers={"Authorization": f"Bearer {ALICE}", "Content-Type": "application/json"},
        body=body,
    )
    assert status == 400, what
    assert doc["error"]["code"] == "bad_request"


def test_hostile_heads_get_json_4xx(server: HttpServer) -> None:
    many = "".join(f"X-H{i}: v\r\n" for i in range(100))
    status, doc = json_of(raw_exchange(server, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{many}\r\n".encode()))
    assert status == 431 and doc["error"]["status"] == 431
    huge = "X-Big: " + "a" * 40_000 + "\r\n"
    status, doc = json_of(raw_exchange(server, f"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n{huge}\r\n".encode()))
    assert status == 431 and doc["error"]["code"] == "request_header_fields_too_large"
    # A head that arrives in pieces and outgrows h11's buffer is refused by the protocol layer, as JSON too.
    with socket.create_connection(server.address, timeout=5) as s:
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n")
        for _ in range(40):
            try:
                s.sendall(b"X-Piece: " + b"b" * 1000 + b"\r\n")
            except OSError:  # the server answered and closed: what it said is in the receive buffer
                break
            time.sleep(0.005)
        answer = s.recv(65536)
    status, doc = json_of(answer)
    assert status == 400 and doc["error"]["code"] == "bad_request"
    status, doc = json_of(raw_exchange(server, b"NOT HTTP AT ALL\r\n\r\n"))
    assert status == 400 and doc["error"]["status"] == 400
    status, doc = json_of(
        raw_exchange(
            server, b"POST /api/v1/plans/1/reject HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 99999999\r\n\r\n"
        )
    )
    assert status == 413 and doc["error"]["code"] == "payload_too_large"
    status, doc = json_of(
        raw_exchange(
            server,
            b"POST /api/v1/plans/1/reject HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        )
    )
    assert status == 411


@pytest.mark.parametrize(
    ("host", "status"),
    [
        ("127.0.0.1", 200),
        ("localhost:9630", 200),
        ("[::1]:9630", 200),
        ("reconciler.example", 200),
        ("evil.example", 421),  # a rebinding attacker's name
        ("127.0.0.1.evil.example", 421),
    ],
)
def test_host_header_must_name_this_server(server: HttpServer, host: str, status: int) -> None:
    got, doc, headers = request(server, "GET", "/api/v1/environments", headers={"Host": host})
    assert got == status
    if status == 421:
        assert doc["error"]["code"] == "misdirected_request"
    assert headers["cache-control"] == "no-store"
    # Probes address the server by whatever IP it has (a kubelet sends the pod's): they answer any Host.
    assert request(server, "GET", "/healthz", headers={"Host": host})[0] == 200


def test_reads_are_scoped_to_the_token_environments(server: HttpServer) -> None:
    bob = {"Authorization": f"Bearer {BOB}"}
    status, doc, _ = request(server, "GET", "/api/v1/environments", headers=bob)
    assert status == 200 and [e["name"] for e in doc["environments"]] == ["dev"]
    assert request(server, "GET", "/api/v1/environments/prod", headers=bob)[0] == 404
    assert request(server, "GET", "/api/v1/plans/2", headers=bob)[0] == 404  # plan 2 is prod's
    assert request(server, "GET", "/api/v1/plans?environment=prod", headers=bob)[0] == 404
    status, doc, _ = request(server, "GET", "/api/v1/plans", headers=bob)
    assert {p["environment"] for p in doc["plans"]} == {"dev"}
    status, doc, _ = request(server, "GET", "/api/v1/plans", headers={"Authorization": f"Bearer {ALICE}"})
    assert {p["environment"] for p in doc["plans"]} == {"dev", "prod"}
    assert request(server, "GET", "/api/v1/plans", headers={"Authorization": "Bearer not-a-token-0000000"})[0] == 401


def _config(tmp_path: Path, server: str) -> Any:
    p = tmp_path / "reconciler.yaml"
    p.write_text("environments:\n  dev:\n    dsn: postgresql:///dev\n" + server)
    return load_config(p)


@pytest.mark.parametrize(
    ("server", "listen", "expected"),
    [
        ("", None, False),
        ("server:\n  listen: 0.0.0.0\n", None, True),
        ("server:\n  listen: '::'\n", None, True),
        ("server:\n  listen: '::1'\n", None, False),
        ("", "10.0.0.5", True),  # --listen on the command line counts
        ("server:\n  listen: 0.0.0.0\n  read_requires_token: false\n", None, False),
        ("server:\n  read_requires_token: true\n", None, True),
    ],
)
def test_reads_need_a_token_when_listening_beyond_loopback(
    tmp_path: Path, server: str, listen: str | None, expected: bool
) -> None:
    cfg = _config(tmp_path, server)
    assert TokenAuth.from_config(cfg, {}, listen=listen).read_requires_token is expected


def test_tls_pair_is_required_and_resolved(tmp_path: Path) -> None:
    from reconciler.errors import ConfigError

    with pytest.raises(ConfigError, match="tls_cert and tls_key"):
        _config(tmp_path, "server:\n  tls_cert: c.pem\n")
    cfg = _config(tmp_path, "server:\n  tls_cert: c.pem\n  tls_key: k.pem\n  allowed_hosts: [db-admin.example]\n")
    assert cfg.server.tls_cert == str(tmp_path / "c.pem") and cfg.server.allowed_hosts == ("db-admin.example",)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="openssl is needed to make a test certificate")
def test_tls_from_configured_certificate(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
         "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    server = serve(tls_cert=str(cert), tls_key=str(key))
    try:
        assert server.url.startswith("https://127.0.0.1:")
        ctx = ssl.create_default_context(cafile=str(cert))
        conn = httpclient.HTTPSConnection(*server.address, timeout=10, context=ctx)
        conn.request("GET", "/healthz")
        resp = conn.getresponse()
        assert resp.status == 200 and json.loads(resp.read()) == {"status": "ok"}
        conn.close()
        # Plain HTTP on the TLS port gets nowhere.
        plain = httpclient.HTTPConnection(*server.address, timeout=5)
        try:
            plain.request("GET", "/healthz")
            plain_status: int | None = plain.getresponse().status
        except (httpclient.HTTPException, OSError):
            plain_status = None
        finally:
            plain.close()
        assert plain_status is None
    finally:
        server.stop()
