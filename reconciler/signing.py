"""The installation's secret and what it keys: approval signatures, the audit chain, the apply lock's key.

The secret lives in a file (``security.signing_key_file``), created with 32 random bytes and mode 0600 on first
use, never in the state store. It stops whoever can write the store but cannot read that file (a shared store's
other users, a leaked database backup, an operator with SQL access to the store): they cannot forge a signed
approval, recompute the keyed audit chain, or learn the apply lock's key to keep the reconciler busy.

Each use gets its own key derived with HMAC-SHA256 (``derive``), so one never stands in for another.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import structlog

from .errors import ConfigError

log = structlog.get_logger("reconciler")

KEY_BYTES = 32

# Purposes of derived keys (never reused for another purpose).
APPROVALS = "approvals/v1"
AUDIT = "audit-chain/v1"
APPLY_LOCK = "apply-lock/v1"


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The installation's secret from ``path``; created (32 random bytes, hex, mode 0600) if it does not exist.

    A key file that others may read is used, with a warning: they could sign approvals."""
    p = Path(path)
    if not p.exists():
        _create(p)
    try:
        text = p.read_text(encoding="ascii").strip()
        mode = p.stat().st_mode
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read the signing key file {p}: {getattr(exc, 'strerror', None) or exc}") from exc
    try:
        key = bytes.fromhex(text)
    except ValueError:
        key = b""
    if len(key) < 16:
        raise ConfigError(f"the signing key file {p} does not hold a key of at least 16 bytes in hex")
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("signing_key_file_readable_by_others", path=str(p), mode=oct(mode & 0o777))
    return key


def _create(p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return  # another process created it first: read theirs
    except OSError as exc:
        raise ConfigError(f"cannot create the signing key file {p}: {exc.strerror}") from exc
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(secrets.token_hex(KEY_BYTES) + "\n")
    log.info("signing_key_created", path=str(p))


def derive(key: bytes, purpose: str) -> bytes:
    """The key for one purpose (``APPROVALS``, ``AUDIT``, ``APPLY_LOCK``)."""
    return hmac.new(key, purpose.encode("utf-8"), hashlib.sha256).digest()


def canonical(fields: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted-key compact JSON."""
    return json.dumps(fields, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str).encode("utf-8")


def mac(key: bytes, data: bytes) -> str:
    """HMAC-SHA256 of ``data``, hex."""
    return hmac.new(key, data, hashlib.sha256).hexdigest()


def sign(key: bytes, fields: Mapping[str, Any]) -> str:
    return mac(key, canonical(fields))


def verify(key: bytes, fields: Mapping[str, Any], signature: str | None) -> bool:
    """Whether ``signature`` is ``key``'s signature of ``fields`` (constant-time comparison)."""
    return bool(signature) and hmac.compare_digest(sign(key, fields), str(signature))


def lock_key(key: bytes, environment: str, database: str) -> int:
    """The advisory lock key of one environment's database: the first 8 bytes of an HMAC, as a signed bigint.

    Without the secret nobody can compute it, so a role with CONNECT cannot take it ahead of the reconciler."""
    digest = hmac.new(derive(key, APPLY_LOCK), f"{environment}\0{database}".encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
