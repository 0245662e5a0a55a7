"""structlog setup: JSON lines on stderr, or console rendering when stderr is a terminal.

Every event carries the context bound with ``structlog.contextvars`` (the daemon binds ``environment``,
``revision`` and ``reconcile_id`` for each reconcile). Passwords in DSNs are redacted from every string value,
exception text included. Records of the standard ``logging`` module (APScheduler's) go through the same
pipeline, so the output stays one format.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import MutableMapping
from typing import Any, TextIO

import structlog

from ..db import SECRET_KEYS, redact

_SECRET_NAMES = frozenset({*SECRET_KEYS, "token", "secret"})


def _redacted(value: Any, depth: int = 0) -> Any:
    """``value`` with passwords redacted from every string in it, however deeply nested in dicts, lists, tuples and
    sets; the value of a key named like a secret (``password``, ``sslpassword``, ``token``) is hidden whole."""
    if isinstance(value, str):
        return redact(value)
    if depth > 20:
        return "<nested too deep>"
    if isinstance(value, dict):
        return {k: "***" if str(k).lower() in _SECRET_NAMES else _redacted(v, depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [_redacted(v, depth + 1) for v in value]
    return value


def _redact_values(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
    """Never let a password inside a DSN reach a log line, at any depth of any value."""
    for k, v in list(event_dict.items()):
        event_dict[k] = "***" if k.lower() in _SECRET_NAMES else _redacted(v)
    return event_dict


class _ToStructlog(logging.Handler):
    """Forwards standard-library log records to structlog."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            logger = structlog.get_logger(record.name)
            event = record.getMessage()
            kw: dict[str, Any] = {"logger": record.name}
            if record.exc_info:
                kw["exc_info"] = record.exc_info
            logger.log(record.levelno, event, **kw)
        except Exception:
            self.handleError(record)


_BRIDGE = _ToStructlog()


class _CurrentStderr:
    """A structlog logger that writes to whatever ``sys.stderr`` is at the time of the call.

    ``PrintLoggerFactory(file=sys.stderr)`` would keep the stream that was current when logging was configured,
    which breaks when that stream is later closed or replaced (test capture, daemonised output).
    """

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _current_stderr_factory(*_: Any) -> _CurrentStderr:
    return _CurrentStderr()


def configure_logging(level: str = "info", *, json: bool | None = None, stream: TextIO | None = None) -> None:
    """Configure structlog for the process: ``level``; JSON unless ``stream`` (default stderr) is a terminal."""
    lvl = getattr(logging, level.upper(), logging.INFO)
    out = stream if stream is not None else sys.stderr
    if json is None:
        json = not out.isatty()
    factory: Any = structlog.PrintLoggerFactory(file=stream) if stream is not None else _current_stderr_factory
    renderer: Any = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer(colors=False)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info,
            _redact_values,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(lvl),
        logger_factory=factory,
        cache_logger_on_first_use=False,
    )
    for name in ("apscheduler",):
        std = logging.getLogger(name)
        if _BRIDGE not in std.handlers:
            std.addHandler(_BRIDGE)
        std.propagate = False
