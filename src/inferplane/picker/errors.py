"""Why a request is answered by the picker itself instead of a model server, in OpenAI error format."""

from __future__ import annotations

from typing import ClassVar

import orjson

#: Header carrying the reason on every response the picker makes itself.
DROPPED_REASON_HEADER = "x-inference-request-dropped-reason"


class RequestRejected(Exception):
    """A user-visible failure; becomes an ext_proc ImmediateResponse, never a gRPC error."""

    status: ClassVar[int] = 500
    reason: ClassVar[str] = "internal-error"
    error_type: ClassVar[str] = "internal_error"
    #: ``error_code`` label of ``inference_objective_request_error_total`` (GIE's vocabulary).
    error_code: ClassVar[str] = "Internal"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def body(self) -> bytes:
        """OpenAI error JSON, as vLLM's server writes it."""
        return orjson.dumps(
            {"error": {"message": self.message, "type": self.error_type, "param": None, "code": self.status}}
        )


class BadRequest(RequestRejected):
    """The body cannot be parsed or routed (400)."""

    status = 400
    reason = "bad-request"
    error_type = "invalid_request_error"
    error_code = "BadRequest"


class BodyTooLarge(RequestRejected):
    """The request body exceeds ``max_body_bytes`` (413); the picker would have to buffer it all."""

    status = 413
    reason = "request-too-large"
    error_type = "invalid_request_error"
    error_code = "BadRequest"


class Saturated(RequestRejected):
    """A sheddable request while the pool is saturated (429)."""

    status = 429
    reason = "rejected-saturated"
    error_type = "rate_limit_exceeded"
    error_code = "InferencePoolResourceExhausted"


class NoReadyEndpoint(RequestRejected):
    """No endpoint can take the request (503)."""

    status = 503
    reason = "no-ready-endpoints"
    error_type = "service_unavailable"
    error_code = "ServiceUnavailable"


class InternalError(RequestRejected):
    """A bug in the picker; logged with its traceback, reported without it (500)."""


class QueueFull(RequestRejected):
    """Flow control: the request's priority band holds its limit of requests or bytes (429)."""

    status = 429
    reason = "rejected-queue-full"
    error_type = "rate_limit_exceeded"
    error_code = "InferencePoolResourceExhausted"


class QueueTimeout(RequestRejected):
    """Flow control: the request waited its time-to-live in the queue without capacity (503)."""

    status = 503
    reason = "queue-ttl-expired"
    error_type = "service_unavailable"
    error_code = "ServiceUnavailable"



class Evicted(RequestRejected):
    """Flow control: a sheddable request in flight was stopped to make room for more important work (429)."""

    status = 429
    reason = "evicted-for-priority"
    error_type = "rate_limit_exceeded"
    error_code = "InferencePoolResourceExhausted"
