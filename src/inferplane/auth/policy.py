"""The authorization decision for one request: who is calling, may they use this model, within their limits."""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass, field
from typing import Any

import orjson

from inferplane.auth import errors
from inferplane.auth.errors import Denial
from inferplane.auth.keys import KeyStore
from inferplane.auth.ratelimit import RateLimiter

#: Both spellings of the tenant header (design.md §2); set by the gateway, never trusted from clients.
TENANT_HEADERS = ("x-llm-d-inference-fairness-id", "x-gateway-inference-fairness-id")
#: Credentials are not passed on to the model servers or the Batch API.
CREDENTIAL_HEADERS = ("authorization", "x-api-key")


@dataclass(frozen=True)
class Allowed:
    """A request that may pass: the tenant and the headers to set upstream."""

    tenant: str
    set_headers: dict[str, str] = field(default_factory=dict)
    remove_headers: tuple[str, ...] = CREDENTIAL_HEADERS


def bearer_key(headers: dict[str, str]) -> str | None:
    """The API key from ``Authorization: Bearer KEY`` (or ``x-api-key``)."""
    value = headers.get("authorization", "")
    scheme, _, token = value.strip().partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key", "").strip() or None


def body_model(body: bytes) -> tuple[str | None, dict[str, Any] | None]:
    """``(model, parsed body)`` of a JSON request body; ``(None, None)`` when it is not a JSON object."""
    if not body:
        return None, None
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None, None
    if not isinstance(parsed, dict):
        return None, None
    model = parsed.get("model")
    return (model if isinstance(model, str) and model else None), parsed


def estimate_tokens(body: dict[str, Any], body_size: int, default_max_tokens: int, chars_per_token: float) -> int:
    """Body bytes / chars_per_token (the prompt, generously) plus the output tokens the request may produce."""
    limit = body.get("max_completion_tokens", body.get("max_tokens"))
    output = limit if isinstance(limit, int) and not isinstance(limit, bool) and limit >= 0 else default_max_tokens
    return math.ceil(body_size / chars_per_token) + output


class Policy:
    """Keys → tenant, allowed models, rate limits. Pure logic: the gRPC service only translates."""

    def __init__(self, keys: KeyStore, limiter: RateLimiter | None = None, internal_key: str | None = None,
                 default_max_tokens: int = 256, chars_per_token: float = 4.0) -> None:
        self.keys = keys
        self.limiter = limiter or RateLimiter()
        self._internal_digest = hashlib.sha256(internal_key.encode()).digest() if internal_key else None
        self.default_max_tokens = default_max_tokens
        self.chars_per_token = chars_per_token

    def _is_internal(self, key: str) -> bool:
        return self._internal_digest is not None and hmac.compare_digest(
            self._internal_digest, hashlib.sha256(key.encode()).digest())

    def decide(self, headers: dict[str, str], body: bytes = b"") -> Allowed | Denial:
        """Allow (with the upstream tenant headers) or deny (with the OpenAI error) one request."""
        key = bearer_key(headers)
        if key is None:
            return errors.missing_key()
        model, parsed = body_model(body)
        if self._is_internal(key):
            return self._internal(headers, model)
        record = self.keys.lookup(key)
        if record is None:
            return errors.bad_key()
        if model is not None and not record.allows(model):
            return errors.model_not_allowed(model)
        tokens = estimate_tokens(parsed, len(body), self.default_max_tokens, self.chars_per_token) if model and parsed else 0
        limited = self.limiter.check(record.tenant, record.rpm, record.tpm, tokens)
        if limited is not None:
            return errors.rate_limited(*limited)
        return Allowed(record.tenant, {name: record.tenant for name in TENANT_HEADERS})

    def _internal(self, headers: dict[str, str], model: str | None) -> Allowed | Denial:
        """inferplane's own traffic (batch dispatch) acts for the tenant it names, within that tenant's models."""
        tenant = next((headers[h] for h in TENANT_HEADERS if headers.get(h)), "")
        if tenant and model is not None:
            allowed = self.keys.tenant_models(tenant)
            if allowed is not None and model not in allowed:
                return errors.model_not_allowed(model)
        return Allowed(tenant, {name: tenant for name in TENANT_HEADERS} if tenant else {})
