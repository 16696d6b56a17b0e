"""Typed observability settings: ``telemetry`` (every component) and ``observe`` (``inferplane up``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TracingConfig(BaseModel):
    """OpenTelemetry tracing: off by default; OTLP/HTTP to ``endpoint``, or spans printed to stdout."""

    model_config = ConfigDict(extra="forbid")

    exporter: Literal["none", "otlp", "console"] = Field(
        default="none", description="none (tracing off), otlp (OTLP/HTTP protobuf to endpoint), console (stdout)")
    endpoint: str = Field(default="http://127.0.0.1:4318/v1/traces", description="OTLP/HTTP traces URL")
    headers: dict[str, str] = Field(default_factory=dict, description="extra HTTP headers for the OTLP exporter")
    sample_ratio: float = Field(default=1.0, ge=0, le=1,
                                description="share of new traces recorded (a sampled parent is always followed)")
    export_delay_ms: int = Field(default=1000, ge=1, description="the batch span processor's export interval")
    service_name: str | None = Field(default=None, description="resource service.name (default: inferplane-<component>)")

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @property
    def enabled(self) -> bool:
        return self.exporter != "none"


class TelemetryConfig(BaseModel):
    """Logs and traces of one component (section ``telemetry`` of ``server`` and ``picker``)."""

    model_config = ConfigDict(extra="forbid")

    log_format: Literal["text", "json"] = Field(
        default="text", description="json: one JSON object per line (time, level, component, message, request_id)")
    log_prompts: bool = Field(default=False, description="log prompts and completions (never logged otherwise)")
    tracing: TracingConfig = Field(default_factory=TracingConfig, description="OpenTelemetry spans")


class ExtraScrapeJob(BaseModel):
    """A further scrape job (e.g. ``inferplane async run --metrics-port`` processors started outside up)."""

    model_config = ConfigDict(extra="forbid")

    job: str = Field(min_length=1, pattern=r"^[a-zA-Z_][a-zA-Z0-9_-]*$", description="job name")
    targets: list[str] = Field(min_length=1, description="host:port of each target")
    metrics_path: str = Field(default="/metrics", description="path of the metrics on each target")


class PrometheusConfig(BaseModel):
    """The Prometheus server ``inferplane up --observe`` starts."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = Field(default=False, description="start Prometheus (also: inferplane up --observe)")
    binary: str = Field(default="prometheus", description="the prometheus executable (Debian package prometheus)")
    host: str = Field(default="127.0.0.1", description="address Prometheus listens on")
    port: int = Field(default=9091, ge=0, le=65535, description="Prometheus web / API port")
    scrape_interval_s: float = Field(default=2.0, gt=0, le=300, description="how often every target is scraped")
    retention: str = Field(default="1d", pattern=r"^\d+[smhdwy]$", description="how long samples are kept")
    extra_jobs: list[ExtraScrapeJob] = Field(default_factory=list,
                                             description="more targets to scrape besides the platform's own")


class ObserveConfig(BaseModel):
    """Section ``observe`` of ``inferplane up``: Prometheus, and the telemetry every component gets."""

    model_config = ConfigDict(extra="forbid")

    prometheus: PrometheusConfig = Field(default_factory=PrometheusConfig, description="the Prometheus server")
    log_format: Literal["text", "json"] = Field(
        default="text", description="log format of up and of every component (unless its telemetry section says)")
    log_prompts: bool = Field(default=False, description="let model servers log prompts and completions")
    tracing: TracingConfig = Field(default_factory=TracingConfig,
                                   description="tracing for the picker and model servers (unless their telemetry says)")

    def telemetry(self) -> dict:
        """The ``telemetry`` section handed to each component."""
        return {"log_format": self.log_format, "log_prompts": self.log_prompts,
                "tracing": self.tracing.model_dump(mode="json")}
