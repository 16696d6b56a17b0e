"""Typed configuration of the batch API server and of the async processor."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator


class DispatchConfig(BaseModel):
    """How requests are sent through the gateway (shared by batch and async)."""

    model_config = ConfigDict(extra="forbid")

    gateway_url: str = Field(default="http://127.0.0.1:8080", description="gateway base URL (without /v1)")
    objective: str = Field(default="batch", description="sent as x-llm-d-inference-objective (make it sheddable)")
    fairness_id: str | None = Field(default=None, description="sent as x-llm-d-inference-fairness-id")
    api_key: str | None = Field(default=None, description="sent as 'Authorization: Bearer' when the gateway needs keys")
    verify_tls: bool = Field(default=True, description="verify the gateway's TLS certificate (https gateway_url)")
    max_concurrency: int = Field(default=64, ge=1, description="requests in flight, all models together")
    per_model_concurrency: dict[str, int] = Field(default_factory=dict, description="cap per model name")
    default_model_concurrency: int | None = Field(default=None, ge=1, description="cap for models not listed")
    backoff_base_s: float = Field(default=2.0, gt=0, description="first retry delay on 429/503")
    backoff_max_s: float = Field(default=60.0, gt=0, description="longest retry delay")
    request_timeout_s: float = Field(default=600.0, gt=0, description="one HTTP request, end to end")
    pool_metrics_url: str | None = Field(
        default=None, description="picker /metrics: when set, an AIMD window keeps filler from queueing at the servers")
    target_queue: float = Field(default=0.0, ge=0, description="average waiting requests per server the window allows")

    @field_validator("gateway_url")
    @classmethod
    def _strip(cls, value: str) -> str:
        value = value.rstrip("/")
        value = value.removesuffix("/v1")
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value


class BatchConfig(BaseModel):
    """The `batch` section: `inferplane batch serve`."""

    model_config = ConfigDict(extra="forbid")

    host: str = "127.0.0.1"
    port: int = Field(default=8090, ge=0, le=65535)
    database: str = Field(default="sqlite:///inferplane-batch/batch.db",
                          description="sqlite:///PATH or postgresql://user@host:port/db")
    files_url: str = Field(default="inferplane-batch/files", description="fsspec URL for file contents (dir, gs://, s3://)")
    max_file_bytes: int = Field(default=200 * 1024 * 1024, gt=0, description="largest upload")
    max_requests_per_batch: int = Field(default=50_000, gt=0)
    worker: bool = Field(default=True, description="run the dispatcher in the API process")
    poll_interval_s: float = Field(default=0.5, gt=0, description="how often the worker looks for new work")
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)


class AsyncConfig(BaseModel):
    """The `async` section: `inferplane async run`."""

    model_config = ConfigDict(extra="forbid")

    source: str = Field(description="redis://host:port/db?stream=S&group=G or pubsub://project/subscription")
    results: str | None = Field(default=None, description="result stream / topic (default: <stream>-results)")
    dead_letter: str | None = Field(default=None, description="dead-letter stream / topic (default: <stream>-dead)")
    consumer: str = Field(default="worker-1", description="consumer name inside the group")
    max_attempts: int = Field(default=10, ge=1, description="deliveries before a message goes to the dead letter")
    claim_idle_s: float = Field(default=30.0, gt=0, description="re-deliver messages pending this long (crashed consumer)")
    max_in_flight: int = Field(default=32, ge=1)
    metrics_url: str | None = Field(default=None, description="picker Prometheus URL for the gate (…:9090/metrics)")
    max_saturation: float = Field(default=0.8, gt=0, description="dispatch only while pool saturation is below this")
    gate_poll_s: float = Field(default=0.25, gt=0)
    metrics_port: int | None = Field(default=None, ge=0, le=65535, description="serve /metrics for an autoscaler")
    dispatch: DispatchConfig = Field(default_factory=DispatchConfig)
