"""The interface every runtime implements, and helpers they share."""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from pathlib import Path
from types import ModuleType

import numpy as np

from inferplane.oip.config import ModelConfig, TensorSpec
from inferplane.oip.errors import BadRequest, LoadError


def require(module: str, package: str, runtime: str) -> ModuleType:
    """Import ``module`` or raise a LoadError telling which package the runtime needs."""
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise LoadError(f"runtime '{runtime}' needs the Python package '{package}' (pip install {package}): {exc}") from None


def find_model_file(version_dir: Path, suffixes: tuple[str, ...], name: str | None = None) -> Path:
    """The model file in ``version_dir``: ``name`` if given, else the one file with one of ``suffixes``."""
    if name:
        path = version_dir / name
        if not path.is_file():
            raise LoadError(f"model file {path} not found")
        return path
    found = sorted(p for p in version_dir.iterdir() if p.is_file() and p.name.endswith(suffixes))
    if len(found) != 1:
        what = "no" if not found else "more than one"
        raise LoadError(f"{what} model file ending in {', '.join(suffixes)} in {version_dir} (set parameters.file)")
    return found[0]


class Runtime(ABC):
    """One loaded model version; ``predict`` is called from worker threads with whole batches."""

    platform = ""

    def __init__(self, config: ModelConfig, version_dir: Path, cache_dir: Path) -> None:
        self.config = config
        self.version_dir = version_dir
        self.cache_dir = cache_dir
        self.inputs: list[TensorSpec] = list(config.inputs)
        self.outputs: list[TensorSpec] = list(config.outputs)

    @abstractmethod
    def load(self) -> None:
        """Read the model files; fill ``inputs`` / ``outputs`` when the config leaves them out."""

    @abstractmethod
    def predict(self, inputs: dict[str, np.ndarray], outputs: list[str]) -> dict[str, np.ndarray]:
        """Compute the named ``outputs`` for a batch of ``inputs``."""

    def single_input(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """The only input of a one-input model."""
        if len(inputs) != 1:
            raise BadRequest(f"model takes one input, got {len(inputs)}")
        return next(iter(inputs.values()))
