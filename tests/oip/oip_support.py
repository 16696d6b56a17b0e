"""Test helpers: small real models of every runtime (no downloads), an in-process server, free ports."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import numpy as np
import yaml

from inferplane.oip.config import OipConfig
from inferplane.oip.rest import create_app
from inferplane.oip.state import ServerState


def write_config(repo: Path, name: str, config: dict, versions: tuple[int, ...] = (1,)) -> list[Path]:
    model_dir = repo / name
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.yaml").write_text(yaml.safe_dump(config))
    dirs = []
    for v in versions:
        (model_dir / str(v)).mkdir(exist_ok=True)
        dirs.append(model_dir / str(v))
    return dirs


def training_data(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(300, 4)).astype(np.float32)
    y = (x[:, 0] + 0.5 * x[:, 1] - x[:, 2] > 0).astype(np.int64)
    return x, y


def build_sklearn(repo: Path, name: str = "iris", batching: dict | None = None, versions: tuple[int, ...] = (1,), **extra) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    x, y = training_data()
    config = {
        "runtime": "sklearn",
        "max_batch_size": 64,
        "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [4]}],
        "outputs": [{"name": "predict", "datatype": "INT64", "shape": []}, {"name": "predict_proba", "datatype": "FP64", "shape": [2]}],
        "dynamic_batching": batching if batching is not None else {"max_queue_delay_microseconds": 2000},
        **extra,
    }
    for i, d in enumerate(write_config(repo, name, config, versions)):
        model = LogisticRegression().fit(x, y if i % 2 == 0 else 1 - y)
        joblib.dump(model, d / "model.joblib")


def build_onnx(repo: Path, name: str = "iris-onnx") -> None:
    from skl2onnx import to_onnx
    from sklearn.linear_model import LogisticRegression

    x, y = training_data()
    model = LogisticRegression().fit(x, y)
    onx = to_onnx(model, x[:1], options={id(model): {"zipmap": False}}, target_opset=17)
    (d,) = write_config(repo, name, {"runtime": "onnx", "max_batch_size": 64, "dynamic_batching": {"max_queue_delay_microseconds": 1000}})
    (d / "model.onnx").write_bytes(onx.SerializeToString())


def build_xgboost(repo: Path, name: str = "iris-xgb") -> None:
    import xgboost as xgb

    x, y = training_data()
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 3, "nthread": 1}, xgb.DMatrix(x, label=y), num_boost_round=10)
    (d,) = write_config(repo, name, {"runtime": "xgboost", "max_batch_size": 32, "dynamic_batching": {}})
    booster.save_model(str(d / "model.json"))


def build_torchscript(repo: Path, name: str = "doubler") -> None:
    import torch

    class Doubler(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2 + 1

    config = {
        "runtime": "torchscript",
        "max_batch_size": 16,
        "inputs": [{"name": "x", "datatype": "FP32", "shape": [3]}],
        "outputs": [{"name": "y", "datatype": "FP32", "shape": [3]}],
        "dynamic_batching": {},
    }
    (d,) = write_config(repo, name, config)
    torch.jit.script(Doubler()).save(str(d / "model.pt"))


def build_embeddings(repo: Path, name: str = "minilm") -> None:
    write_config(repo, name, {"runtime": "sentence-embeddings", "max_batch_size": 32, "dynamic_batching": {"max_queue_delay_microseconds": 1000}})


@contextlib.asynccontextmanager
async def serve(repo: Path, cache_dir: Path, load: list[str] | None) -> AsyncIterator[tuple[ServerState, httpx.AsyncClient]]:
    state = ServerState(OipConfig(repository=repo, cache_dir=cache_dir, load_models=load))
    await state.start()
    transport = httpx.ASGITransport(app=create_app(state))
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://oip") as client:
            yield state, client
    finally:
        await state.stop()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
