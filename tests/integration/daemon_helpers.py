"""Helpers for the daemon's integration tests: HTTP calls, metrics parsing and bounded polling."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

from prometheus_client.parser import text_string_to_metric_families

T = TypeVar("T")

FAST_DAEMON = {
    "concurrency": 4,
    "backoff_base": "200ms",
    "backoff_max": "1s",
    "grace_period": "5s",
    "jitter": 0.1,
    "watch_interval": "200ms",
}


def http(url: str, method: str = "GET", *, token: str | None = None, body: Any = None) -> tuple[int, Any, bytes]:
    """(status, parsed JSON or None, raw body) of one request; never raises on HTTP errors."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, method=method, data=data)
    if data is not None:
        req.add_header("Content-Type", "application/json")
    if token is not None:
        req.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            raw = resp.read()
            status = resp.status
            ctype = resp.headers.get("Content-Type", "")
    except urllib.error.HTTPError as exc:
        raw = exc.read()
        status = exc.code
        ctype = exc.headers.get("Content-Type", "")
    doc = json.loads(raw) if ctype.startswith("application/json") else None
    return status, doc, raw


def metrics(base_url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    status, _, raw = http(f"{base_url}/metrics")
    assert status == 200
    out: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(raw.decode()):
        for s in family.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def metric(base_url: str, name: str, **labels: str) -> float | None:
    return metrics(base_url).get((name, frozenset(labels.items())))


def wait_for(
    what: str,
    fn: Callable[[], T | None],
    timeout: float = 30.0,
    interval: float = 0.1,
    details: Callable[[], str] | None = None,
) -> T:
    """Poll ``fn`` until it returns something truthy; fail after ``timeout`` seconds saying ``what``."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(interval)
    extra = f"\n{details()}" if details is not None else ""
    raise AssertionError(f"timed out after {timeout}s waiting for {what} (last: {last!r}){extra}")


def condition(env_doc: dict[str, Any], type_: str) -> tuple[str, str]:
    c = next(c for c in env_doc["status"]["conditions"] if c["type"] == type_)
    return c["status"], c["reason"]
