"""``picker.kubernetes``: discover the pool's endpoints and objectives from the Kubernetes API."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from pydantic import BaseModel, ConfigDict, Field, model_validator

if TYPE_CHECKING:
    from inferplane.picker.config import PickerConfig


class KubernetesConfig(BaseModel):
    """Watch an InferencePool, its Pods, and the InferenceObjectives / InferenceModelRewrites naming it."""

    model_config = ConfigDict(extra="forbid")

    #: The InferencePool (``inference.networking.k8s.io/v1``) this picker serves.
    inference_pool: str = Field(min_length=1)
    #: Its namespace; default: the service account's (in cluster) or the kubeconfig context's, else ``default``.
    namespace: str | None = Field(None, min_length=1)
    #: Use this kubeconfig instead of the in-cluster service account (for running outside the cluster).
    kubeconfig: Path | None = None
    #: The kubeconfig context; default: its ``current-context``.
    context: str | None = None
    #: Watch InferenceObjectives (``spec.priority`` per objective name) for this pool.
    objectives: bool = True
    #: Watch InferenceModelRewrites (model-name rewrite rules) for this pool.
    rewrites: bool = True
    #: Server-side watch timeout (seconds); a watch that ends is resumed from the last resourceVersion.
    watch_timeout: int = Field(300, ge=1, le=3600)
    #: Timeout of one API request (list, connect); also the slack on a watch's read timeout.
    request_timeout: float = Field(10.0, gt=0)
    #: Retry delays after errors: exponential from ``backoff_initial`` up to ``backoff_max``, with jitter.
    backoff_initial: float = Field(0.5, gt=0)
    backoff_max: float = Field(30.0, gt=0)
    #: ``start()`` waits this long for the first pod list before serving (readiness covers the rest).
    initial_sync_timeout: float = Field(10.0, ge=0)

    @model_validator(mode="after")
    def _backoff_order(self) -> KubernetesConfig:
        if self.backoff_max < self.backoff_initial:
            raise ValueError(
                f"backoff_max ({self.backoff_max}s) must be at least backoff_initial ({self.backoff_initial}s)"
            )
        return self


def load_picker_config(path: str | Path | None) -> PickerConfig:
    """The ``picker`` section of a YAML file, with a top-level ``kubernetes`` section folded into it.

    The Helm chart writes ``kubernetes: {namespace, inference_pool}`` next to ``picker:``; it may also be
    given as ``picker.kubernetes`` (not both).
    """
    from inferplane.configfile import ConfigError, read_yaml, validate_model
    from inferplane.picker.config import PickerConfig

    if path is None:
        return PickerConfig.model_validate({})
    raw = read_yaml(path)
    section = raw.get("picker") or {}
    if not isinstance(section, dict):
        raise ConfigError(f"configuration file {path}: section 'picker' must be a mapping")
    if raw.get("kubernetes") is not None:
        if section.get("kubernetes") is not None:
            raise ConfigError(
                f"configuration file {path}: give 'kubernetes' either at the top level or as "
                "'picker.kubernetes', not both"
            )
        section = {**section, "kubernetes": raw["kubernetes"]}
    return validate_model(PickerConfig, section, f"{path} (section 'picker')")
