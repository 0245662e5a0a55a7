"""Who may approve: the identities of ``server.tokens``, each proved by a bearer token read from an environment
variable or a file. The HTTP API and the CLI's ``approve``/``reject`` authenticate with the same tokens.

Tokens are kept only as SHA-256 digests and compared in constant time; they never appear in logs, reprs or output.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import Config
from .errors import ConfigError

MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to and which environments' plans it may decide."""

    identity: str
    environments: frozenset[str]

    def may_decide(self, environment: str) -> bool:
        return "*" in self.environments or environment in self.environments


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


def _read(config: Config, i: int, env: Mapping[str, str]) -> tuple[str, str]:
    t = config.server.tokens[i]
    if t.token_env is not None:
        key = f"server.tokens[{i}].token_env"
        value = env.get(t.token_env)
        if value is None:
            raise ConfigError(f"environment variable {t.token_env} is not set", path=config.source, key=key)
        return value.strip(), key
    key = f"server.tokens[{i}].token_file"
    try:
        return Path(str(t.token_file)).read_text(encoding="utf-8").strip(), key
    except OSError as exc:
        raise ConfigError(
            f"cannot read token file {t.token_file}: {exc.strerror}", path=config.source, key=key
        ) from exc


def load_tokens(config: Config, environ: Mapping[str, str] | None = None) -> dict[str, Principal]:
    """Every token of ``server.tokens`` with its principal; a missing, empty, short or duplicate token is a
    ConfigError."""
    env = os.environ if environ is None else environ
    tokens: dict[str, Principal] = {}
    for i, t in enumerate(config.server.tokens):
        value, key = _read(config, i, env)
        if len(value) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"the token of {t.identity!r} is {'empty' if not value else 'too short'} "
                f"(at least {MIN_TOKEN_LENGTH} characters)",
                path=config.source,
                key=key,
            )
        if value in tokens:
            raise ConfigError(
                f"the token of {t.identity!r} is also the token of {tokens[value].identity!r}",
                path=config.source,
                key=key,
            )
        tokens[value] = Principal(t.identity, frozenset(t.environments))
    return tokens


def find_principal(known: list[tuple[bytes, Principal]], token: str) -> Principal | None:
    """The principal whose token is ``token`` (digests compared in constant time, no early exit), or None."""
    digest = token_digest(token.strip())
    found: Principal | None = None
    for candidate, principal in known:
        if hmac.compare_digest(candidate, digest):
            found = principal
    return found
