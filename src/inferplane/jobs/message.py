"""Async messages ``{id, created, deadline, payload, metadata}`` and results ``{id, status_code, payload, error}``."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


def _seconds(value: Any) -> Any:
    """Unix seconds from a number or an RFC 3339 string."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return datetime.fromisoformat(value).timestamp()
    return value


class Message(BaseModel):
    """A request to run: ``payload`` is the OpenAI request body; ``metadata`` may name the ``url``
    (default ``/v1/chat/completions``), an ``objective`` and a ``fairness_id``."""

    model_config = ConfigDict(extra="ignore")

    id: str = Field(min_length=1)
    created: float | None = None
    deadline: float | None = None
    payload: dict[str, Any]
    metadata: dict[str, Any] = Field(default_factory=dict)

    @field_validator("created", "deadline", mode="before")
    @classmethod
    def _times(cls, value: Any) -> Any:
        return _seconds(value)

    @property
    def url(self) -> str:
        url = str(self.metadata.get("url") or "/v1/chat/completions")
        return url if url.startswith("/") else "/" + url


class Result(BaseModel):
    id: str
    status_code: int
    payload: Any = None
    error: str | None = None
