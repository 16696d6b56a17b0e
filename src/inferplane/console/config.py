"""Typed configuration of the console (`console:` section; `inferplane console`)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


def _base_url(value: str | None) -> str | None:
    if value is None:
        return None
    value = value.rstrip("/")
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class ConsoleConfig(BaseModel):
    """Where the console listens and which components it reads."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=True, description="start the console with `inferplane up`")
    host: str = Field(default="127.0.0.1", description="address to listen on")
    port: int = Field(default=8070, ge=0, le=65535, description="port of the console (page under /console/)")
    picker_url: str = Field(default="http://127.0.0.1:9090",
                            description="the picker's metrics server (serves /debug/state and /debug/decisions)")
    batch_url: str | None = Field(default="http://127.0.0.1:8090",
                                  description="the Batch API (without /v1); null: no batch panel")
    envoy_admin_url: str | None = Field(default="http://127.0.0.1:9901",
                                        description="Envoy's admin interface, for gateway request rates; null: none")
    poll_interval_s: float = Field(default=1.0, ge=0.1, le=60, description="how often the sources are read")
    history_s: float = Field(default=300.0, ge=10, le=3600, description="how far back the charts go")
    decisions: int = Field(default=15, ge=1, le=256, description="routing decisions shown")
    batches: int = Field(default=20, ge=1, le=100, description="batch jobs shown (newest first)")
    timeout_s: float = Field(default=2.0, gt=0, description="timeout of one read of a source")

    @field_validator("picker_url", "batch_url", "envoy_admin_url")
    @classmethod
    def _url(cls, value: str | None) -> str | None:
        return _base_url(value)

    @model_validator(mode="after")
    def _history(self) -> ConsoleConfig:
        if self.history_s < 2 * self.poll_interval_s:
            raise ValueError("history_s must cover at least two poll intervals")
        return self

    @property
    def samples(self) -> int:
        """Samples the history ring buffer keeps."""
        return max(2, int(self.history_s / self.poll_interval_s))
