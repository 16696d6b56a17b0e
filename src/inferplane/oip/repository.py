"""The model repository: ``repo/MODEL/config.yaml`` + ``repo/MODEL/VERSION/``, loaded and unloaded at run time."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from inferplane.configfile import ConfigError
from inferplane.oip.batcher import Batcher
from inferplane.oip.config import ModelConfig, TensorSpec, load_model_config
from inferplane.oip.errors import BadRequest, LoadError, ModelNotFound, Unavailable
from inferplane.oip.metrics import OipMetrics
from inferplane.oip.runtimes import Runtime, create_runtime
from inferplane.oip.tensors import NUMPY_OF

log = logging.getLogger("inferplane.oip")


@dataclass
class ModelVersion:
    """One loaded version: its runtime and its batcher."""

    name: str
    version: str
    config: ModelConfig
    runtime: Runtime
    batcher: Batcher

    @property
    def inputs(self) -> list[TensorSpec]:
        return self.runtime.inputs

    @property
    def outputs(self) -> list[TensorSpec]:
        return self.runtime.outputs

    def public_shape(self, spec: TensorSpec) -> list[int]:
        """The shape clients see: a leading -1 batch dimension when the model batches."""
        return ([-1] + spec.shape) if self.config.max_batch_size > 0 else list(spec.shape)

    def check_inputs(self, inputs: dict[str, np.ndarray]) -> None:
        """Reject inputs whose names, datatypes or shapes do not match the model's."""
        specs = {spec.name: spec for spec in self.inputs}
        for name in inputs:
            if name not in specs:
                raise BadRequest(f"unexpected input '{name}' for model '{self.name}' (inputs: {', '.join(specs)})")
        for name, spec in specs.items():
            if name not in inputs:
                raise BadRequest(f"missing input '{name}' for model '{self.name}'")
            array = inputs[name]
            if array.dtype != NUMPY_OF[spec.datatype]:
                raise BadRequest(f"input '{name}': datatype must be {spec.datatype}")
            expected = self.public_shape(spec)
            if len(array.shape) != len(expected) or any(e not in (-1, a) for e, a in zip(expected, array.shape)):
                raise BadRequest(f"input '{name}': shape {list(array.shape)} does not match {expected}")

    async def infer(
        self, inputs: dict[str, np.ndarray], outputs: list[str] | None, priority: int = 0, timeout_us: int = 0
    ) -> dict[str, np.ndarray]:
        """Validate, queue and run one request; returns the requested outputs."""
        self.check_inputs(inputs)
        known = [spec.name for spec in self.outputs]
        wanted = outputs or known
        for name in wanted:
            if name not in known:
                raise BadRequest(f"unknown output '{name}' for model '{self.name}' (outputs: {', '.join(known)})")
        result = await self.batcher.infer(inputs, wanted, priority=priority, timeout_us=timeout_us)
        declared = {spec.name: spec.datatype for spec in self.outputs}
        for name, array in result.items():
            dtype = NUMPY_OF[declared[name]]
            if declared[name] != "BYTES" and array.dtype != dtype:
                result[name] = array.astype(dtype)
        return result


@dataclass
class ModelEntry:
    """A model in the repository index, loaded or not."""

    name: str
    state: str = "UNAVAILABLE"
    reason: str = ""
    versions: dict[str, ModelVersion] = field(default_factory=dict)


class ModelRepository:
    """Scans a directory of models and owns the loaded ones."""

    def __init__(self, root: Path, metrics: OipMetrics, cache_dir: Path | None = None) -> None:
        self.root = root
        self.metrics = metrics
        self.cache_dir = cache_dir or root / ".cache"
        self.models: dict[str, ModelEntry] = {}
        self._locks: dict[str, asyncio.Lock] = {}

    def scan(self) -> list[str]:
        """Model names present on disk (directories holding a ``config.yaml``)."""
        names = sorted(p.name for p in self.root.iterdir() if p.is_dir() and (p / "config.yaml").is_file())
        for name in names:
            self.models.setdefault(name, ModelEntry(name))
        return names

    def index(self) -> list[dict]:
        """Triton's repository index: every model on disk with its state."""
        self.scan()
        rows = []
        for entry in self.models.values():
            if entry.versions:
                rows.extend({"name": entry.name, "version": v, "state": entry.state, "reason": entry.reason} for v in entry.versions)
            else:
                rows.append({"name": entry.name, "state": entry.state, "reason": entry.reason})
        return rows

    async def load(self, name: str, overrides: dict | None = None) -> None:
        """(Re)load a model's selected versions; a failure leaves it UNAVAILABLE with the reason."""
        model_dir = self.root / name
        if "/" in name or name.startswith(".") or not (model_dir / "config.yaml").is_file():
            raise ModelNotFound(f"model '{name}' is not in the repository")
        lock = self._locks.setdefault(name, asyncio.Lock())
        async with lock:
            entry = self.models.setdefault(name, ModelEntry(name))
            old = entry.versions
            entry.state, entry.reason = "LOADING", ""
            try:
                versions = await asyncio.to_thread(self._load_versions, model_dir, overrides)
            except (LoadError, ConfigError) as exc:
                entry.state, entry.reason = "UNAVAILABLE", str(exc)
                log.error("model %s failed to load: %s", name, exc)
                raise LoadError(f"model '{name}': {exc}") from None
            for version in versions.values():
                version.batcher.start()
            entry.versions, entry.state = versions, "READY"
            for version in old.values():  # new requests reach the new versions; let the old finish
                await version.batcher.drain()

    def _load_versions(self, model_dir: Path, overrides: dict | None) -> dict[str, ModelVersion]:
        config = load_model_config(model_dir, overrides)
        available = [int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
        selected = config.version_policy.select(available)
        if not selected:
            raise LoadError(f"no version directory in {model_dir} matches the version policy")
        name = model_dir.name
        versions = {}
        for number in selected:
            try:
                runtime = create_runtime(config, model_dir / str(number), self.cache_dir / name / str(number))
            except (LoadError, ConfigError):
                raise
            except Exception as exc:
                log.exception("loading %s version %s", name, number)
                raise LoadError(f"version {number}: {type(exc).__name__}: {exc}") from None
            version = str(number)
            batcher = Batcher(
                runtime.predict,
                max_batch_size=config.max_batch_size,
                batching=config.dynamic_batching,
                instance_count=config.instance_count,
                name=f"{name}-{version}",
                observe=self.metrics.observer(name, version),
            )
            versions[version] = ModelVersion(name, version, config, runtime, batcher)
        return versions

    async def unload(self, name: str) -> None:
        """Unload every version of a model; queued requests fail with UNAVAILABLE."""
        entry = self.models.get(name)
        if entry is None:
            self.scan()
            if name not in self.models:
                raise ModelNotFound(f"model '{name}' is not in the repository")
            return
        async with self._locks.setdefault(name, asyncio.Lock()):
            versions, entry.versions = entry.versions, {}
            entry.state, entry.reason = "UNAVAILABLE", "unloaded"
            for version in versions.values():
                await version.batcher.drain()

    async def close(self) -> None:
        for name in list(self.models):
            await self.unload(name)

    def get(self, name: str, version: str | None = None) -> ModelVersion:
        """A ready model version (the latest when ``version`` is empty)."""
        entry = self.models.get(name)
        if entry is None or (not entry.versions and entry.state != "LOADING"):
            raise ModelNotFound(f"model '{name}' is not loaded" if entry else f"unknown model '{name}'")
        if not entry.versions:
            raise Unavailable(f"model '{name}' is loading")
        if version:
            try:
                return entry.versions[version]
            except KeyError:
                raise ModelNotFound(f"model '{name}' has no loaded version '{version}'") from None
        return entry.versions[max(entry.versions, key=int)]

    def ready_versions(self, name: str) -> list[str]:
        entry = self.models.get(name)
        return sorted(entry.versions, key=int) if entry else []

    def loaded(self) -> list[ModelVersion]:
        return [v for entry in self.models.values() for v in entry.versions.values()]
