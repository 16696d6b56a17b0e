"""Errors that reach clients, each with the HTTP status and gRPC code it maps to."""

from __future__ import annotations

import grpc


class InferError(Exception):
    """A request failed; ``str(exc)`` is the message the client sees."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT


class BadRequest(InferError):
    """The request is malformed or does not match the model's inputs."""


class ModelNotFound(InferError):
    """No such model or version is loaded."""

    http_status = 404
    grpc_code = grpc.StatusCode.NOT_FOUND


class Unavailable(InferError):
    """The model is not ready, or its queue is full."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE


class QueueTimeout(InferError):
    """The request waited in the queue longer than its timeout."""

    http_status = 503
    grpc_code = grpc.StatusCode.DEADLINE_EXCEEDED


class ModelError(InferError):
    """The model itself raised while computing a batch."""

    http_status = 500
    grpc_code = grpc.StatusCode.INTERNAL


class LoadError(Exception):
    """A model cannot be loaded (bad files, bad config, missing runtime library)."""
