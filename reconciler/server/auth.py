"""Bearer tokens of the HTTP API: read from environment variables or files, each mapped to an identity.

Tokens are kept only as SHA-256 digests and compared in constant time; they never appear in logs, reprs or
responses. A token may approve or reject plans of the environments it lists (``*`` for all). The tokens are read
by :mod:`reconciler.principals`, which the CLI's ``approve`` and ``reject`` use too.
"""

from __future__ import annotations

from collections.abc import Mapping

from ..config import Config
from ..principals import MIN_TOKEN_LENGTH, Principal, find_principal, load_tokens, token_digest

__all__ = ["MIN_TOKEN_LENGTH", "Principal", "TokenAuth"]


class TokenAuth:
    """Checks ``Authorization: Bearer ...`` headers against the configured tokens."""

    def __init__(self, tokens: Mapping[str, Principal], *, read_requires_token: bool = False) -> None:
        self._by_digest = [(token_digest(t), p) for t, p in tokens.items()]
        self.read_requires_token = read_requires_token

    def __repr__(self) -> str:
        return f"TokenAuth({len(self._by_digest)} token(s), read_requires_token={self.read_requires_token})"

    @classmethod
    def from_config(
        cls, config: Config, environ: Mapping[str, str] | None = None, *, listen: str | None = None
    ) -> TokenAuth:
        """Read every token of ``server.tokens``; a missing, empty, short or duplicate token is a ConfigError.
        Reads need a token as configured, else when the server listens (on ``listen``) beyond loopback."""
        return cls(load_tokens(config, environ), read_requires_token=config.server.reads_need_token(listen))

    def authenticate(self, authorization: str | None) -> Principal | None:
        """The principal of a ``Bearer`` header, or None when it is missing, malformed or unknown."""
        if not authorization:
            return None
        scheme, _, token = authorization.strip().partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            return None
        return find_principal(self._by_digest, token)
