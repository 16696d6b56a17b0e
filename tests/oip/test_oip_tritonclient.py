"""Unmodified tritonclient (HTTP and gRPC) against ``python -m inferplane.oip`` in its own process."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from oip_support import free_port
from platform_runner import wait_healthy
from tritonclient.utils import InferenceServerException

pytestmark = pytest.mark.integration
ROWS = np.array([[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, -2.0, 0.0]], dtype=np.float32)


@pytest.fixture(scope="module")
def ports(repo: Path, cache_dir: Path) -> Iterator[tuple[int, int]]:
    http_port, grpc_port = free_port(), free_port()
    command = [sys.executable, "-m", "inferplane.oip", "--repository", str(repo), "--cache-dir", str(cache_dir)]
    command += ["--port", str(http_port), "--grpc-port", str(grpc_port), "--load-model", "iris", "--load-model", "iris-onnx"]
    process = subprocess.Popen(command, env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_healthy(f"http://127.0.0.1:{http_port}/v2/health/ready", process, attempts=600, interval=0.1)
        yield http_port, grpc_port
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(params=["http", "grpc"])
def triton(request: pytest.FixtureRequest, ports: tuple[int, int]):
    http_port, grpc_port = ports
    if request.param == "http":
        return httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{http_port}")
    return grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{grpc_port}")


def test_health_and_metadata(triton) -> None:
    module, client = triton
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris") and not client.is_model_ready("doubler")
    meta = client.get_model_metadata("iris-onnx", as_json=True) if module is grpcclient else client.get_model_metadata("iris-onnx")
    assert meta["inputs"][0]["name"] == "X"
    assert [int(d) for d in meta["inputs"][0]["shape"]] == [-1, 4]


def test_infer_sklearn_and_onnx_agree(triton) -> None:
    module, client = triton
    sk_in = module.InferInput("input-0", list(ROWS.shape), "FP32")
    sk_in.set_data_from_numpy(ROWS)
    sk = client.infer("iris", [sk_in])
    onnx_in = module.InferInput("X", list(ROWS.shape), "FP32")
    onnx_in.set_data_from_numpy(ROWS)
    onnx = client.infer("iris-onnx", [onnx_in], outputs=[module.InferRequestedOutput("probabilities")])
    assert sk.as_numpy("predict").tolist() == [0, 1]
    assert np.allclose(sk.as_numpy("predict_proba"), onnx.as_numpy("probabilities"), atol=1e-5)


def test_errors_are_protocol_errors(triton) -> None:
    module, client = triton
    bad = module.InferInput("input-0", [1, 3], "FP32")
    bad.set_data_from_numpy(np.ones((1, 3), dtype=np.float32))
    with pytest.raises(InferenceServerException, match="shape"):
        client.infer("iris", [bad])
    with pytest.raises(InferenceServerException, match="nope"):
        client.infer("nope", [bad])


def test_repository_load_and_unload(triton) -> None:
    _, client = triton
    client.load_model("doubler")
    assert client.is_model_ready("doubler")
    client.unload_model("doubler")
    assert not client.is_model_ready("doubler")
