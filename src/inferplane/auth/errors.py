"""The OpenAI error JSON every refusal of the gateway carries."""

from __future__ import annotations

from dataclasses import dataclass, field

import orjson


@dataclass(frozen=True)
class Denial:
    """A refused request: HTTP status, OpenAI error fields and extra response headers."""

    status: int
    message: str
    type: str
    code: str
    param: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def body(self) -> bytes:
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}
        )


def missing_key() -> Denial:
    return Denial(401, "You didn't provide an API key. Send it as 'Authorization: Bearer KEY'.",
                  "invalid_request_error", "invalid_api_key")


def bad_key() -> Denial:
    return Denial(401, "Incorrect or revoked API key provided.", "invalid_request_error", "invalid_api_key")


def model_not_allowed(model: str) -> Denial:
    return Denial(403, f"This API key may not use the model '{model}'.", "permission_error", "model_not_allowed",
                  param="model")


def rate_limited(what: str, limit: int, retry_after_s: int) -> Denial:
    return Denial(429, f"Rate limit reached: {limit} {what} per minute. Retry after {retry_after_s} s.",
                  "rate_limit_exceeded", "rate_limit_exceeded", headers={"retry-after": str(retry_after_s)})
