"""Errors of the model store; each message is written for the user."""

from __future__ import annotations


class ModelsError(Exception):
    """A model-store operation failed; ``exit_code`` is what the CLI returns."""

    exit_code = 1


class BadReferenceError(ModelsError):
    """A URL, model name or version given by the user is malformed (CLI exit 2)."""

    exit_code = 2


class NotFoundError(ModelsError):
    """The model, version or hub repository does not exist."""


class HubError(ModelsError):
    """The Hugging Face hub refused or failed a request."""


class ChecksumError(ModelsError):
    """Downloaded bytes do not match the recorded size or checksum."""


class VersionInUseError(ModelsError):
    """A version cannot be removed: a server holds a live lease on it, or ``latest`` points to it."""
