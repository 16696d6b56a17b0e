"""Model runtimes, each importing its library only when a model needs it."""

from __future__ import annotations

import importlib
from pathlib import Path

from inferplane.oip.config import ModelConfig
from inferplane.oip.errors import LoadError
from inferplane.oip.runtimes.base import Runtime

_RUNTIMES = {
    "sklearn": "inferplane.oip.runtimes.sklearn:SklearnRuntime",
    "xgboost": "inferplane.oip.runtimes.xgboost:XGBoostRuntime",
    "onnx": "inferplane.oip.runtimes.onnx:OnnxRuntime",
    "torchscript": "inferplane.oip.runtimes.torchscript:TorchScriptRuntime",
    "sentence-embeddings": "inferplane.oip.runtimes.embeddings:EmbeddingRuntime",
}


def create_runtime(config: ModelConfig, version_dir: Path, cache_dir: Path) -> Runtime:
    """Load the runtime named by ``config.runtime`` for one version directory."""
    module_name, _, class_name = _RUNTIMES[config.runtime].partition(":")
    runtime_class = getattr(importlib.import_module(module_name), class_name)
    runtime = runtime_class(config, version_dir, cache_dir)
    runtime.load()
    return runtime


__all__ = ["LoadError", "Runtime", "create_runtime"]
