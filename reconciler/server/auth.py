"""Bearer tokens of the HTTP API: read from environment variables or files, each mapped to an identity.

Tokens are kept only as SHA-256 digests and compared in constant time; they never appear in logs, reprs or
responses. A token may approve or reject plans of the environments it lists (``*`` for all).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from ..config import Config
from ..errors import ConfigError

MIN_TOKEN_LENGTH = 16


@dataclass(frozen=True)
class Principal:
    """Who a valid token belongs to and which environments' plans it may decide."""

    identity: str
    environments: frozenset[str]

    def may_decide(self, environment: str) -> bool:
        return "*" in self.environments or environment in self.environments


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8")).digest()


class TokenAuth:
    """Checks ``Authorization: Bearer ...`` headers against the configured tokens."""

    def __init__(self, tokens: Mapping[str, Principal], *, read_requires_token: bool = False) -> None:
        self._by_digest = [(_digest(t), p) for t, p in tokens.items()]
        self.read_requires_token = read_requires_token

    def __repr__(self) -> str:
        return f"TokenAuth({len(self._by_digest)} token(s), read_requires_token={self.read_requires_token})"

    @classmethod
    def from_config(
        cls, config: Config, environ: Mapping[str, str] | None = None, *, listen: str | None = None
    ) -> TokenAuth:
        """Read every token of ``server.tokens``; a missing, empty, short or duplicate token is a ConfigError.
        Reads need a token as configured, else when the server listens (on ``listen``) beyond loopback."""
        env = os.environ if environ is None else environ
        tokens: dict[str, Principal] = {}
        for i, t in enumerate(config.server.tokens):
            if t.token_env is not None:
                key = f"server.tokens[{i}].token_env"
                value = env.get(t.token_env)
                if value is None:
                    raise ConfigError(f"environment variable {t.token_env} is not set", path=config.source, key=key)
            else:
                key = f"server.tokens[{i}].token_file"
                try:
                    value = Path(str(t.token_file)).read_text(encoding="utf-8")
                except OSError as exc:
                    raise ConfigError(
                        f"cannot read token file {t.token_file}: {exc.strerror}", path=config.source, key=key
                    ) from exc
            value = value.strip()
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
        return cls(tokens, read_requires_token=config.server.reads_need_token(listen))

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of a ``Bearer`` header, or None when it is missing, malformed or unknown."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        digest = _digest(token)
        found: Principal | None = None
        for known, principal in self._by_digest:  # no early exit: timing does not tell which token matched
            if hmac.compare_digest(known, digest):
                found = principal
        return found
