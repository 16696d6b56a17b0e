"""``picker.flow_control``: queue limits, time-to-live and the policies, per band where needed."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from inferplane.picker.flowcontrol.policies import FAIRNESS_POLICIES, ORDERING_POLICIES


def _known(kind: str, names: Mapping[str, object], value: str | None) -> str | None:
    if value is not None and value not in names:
        raise ValueError(f"unknown {kind} policy {value!r}; known: {', '.join(sorted(names))}")
    return value


class BandConfig(BaseModel):
    """Overrides for one priority band (requests whose objective has this priority)."""

    model_config = ConfigDict(extra="forbid")

    priority: int
    max_requests: int | None = Field(default=None, ge=1)
    max_bytes: int | None = Field(default=None, ge=1)
    ttl: float | None = Field(default=None, gt=0)
    fairness: str | None = None
    ordering: str | None = None

    @field_validator("fairness")
    @classmethod
    def _fairness(cls, value: str | None) -> str | None:
        return _known("fairness", FAIRNESS_POLICIES, value)

    @field_validator("ordering")
    @classmethod
    def _ordering(cls, value: str | None) -> str | None:
        return _known("ordering", ORDERING_POLICIES, value)


class FlowControlConfig(BaseModel):
    """Off by default: then sheddable requests get 429 on a saturated pool and the rest go straight through."""

    model_config = ConfigDict(extra="forbid")

    enabled: bool = False
    #: Seconds a request may wait in the queue; then it gets 503 ``queue-ttl-expired``.
    ttl: float = Field(default=60.0, gt=0)
    #: Per band: queued requests and queued body bytes; beyond them a request gets 429 ``rejected-queue-full``.
    max_requests: int = Field(default=1000, ge=1)
    max_bytes: int = Field(default=256 << 20, ge=1)
    #: Between the tenants (``x-llm-d-inference-fairness-id``) of one band.
    fairness: str = "round-robin"
    #: Inside one tenant's queue: ``fcfs``, or ``edf`` (earliest ``x-llm-d-slo-ttft-ms`` deadline first).
    ordering: str = "fcfs"
    #: ``weighted-round-robin``: share per fairness id (requests dispatched in proportion); others get
    #: ``default_weight``.
    weights: dict[str, float] = Field(default_factory=dict)
    default_weight: float = Field(default=1.0, gt=0)
    #: Sheddable requests (priority < 0) wait in their band instead of getting 429 at once on a saturated pool.
    queue_sheddable: bool = False
    #: When a request of priority >= 0 has to wait, stop the newest in-flight request of the lowest negative
    #: priority (429 ``evicted-for-priority``, or a reset stream once its response started) to free capacity.
    evict_sheddable: bool = False
    bands: list[BandConfig] = Field(default_factory=list)

    @field_validator("fairness")
    @classmethod
    def _fairness(cls, value: str) -> str:
        return _known("fairness", FAIRNESS_POLICIES, value) or value

    @field_validator("ordering")
    @classmethod
    def _ordering(cls, value: str) -> str:
        return _known("ordering", ORDERING_POLICIES, value) or value

    @field_validator("weights")
    @classmethod
    def _positive_weights(cls, weights: dict[str, float]) -> dict[str, float]:
        for tenant, weight in weights.items():
            if weight <= 0:
                raise ValueError(f"weight of {tenant!r} must be greater than 0")
        return weights

    @model_validator(mode="after")
    def _unique_bands(self) -> FlowControlConfig:
        priorities = [band.priority for band in self.bands]
        if len(priorities) != len(set(priorities)):
            raise ValueError("bands: each priority may appear once")
        return self

    def band(self, priority: int) -> BandConfig:
        """The effective settings of one band (its overrides over the defaults)."""
        for band in self.bands:
            if band.priority == priority:
                return BandConfig(
                    priority=priority,
                    max_requests=band.max_requests or self.max_requests,
                    max_bytes=band.max_bytes or self.max_bytes,
                    ttl=band.ttl or self.ttl,
                    fairness=band.fairness or self.fairness,
                    ordering=band.ordering or self.ordering,
                )
        return BandConfig(
            priority=priority,
            max_requests=self.max_requests,
            max_bytes=self.max_bytes,
            ttl=self.ttl,
            fairness=self.fairness,
            ordering=self.ordering,
        )
