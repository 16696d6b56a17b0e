"""The fraud example: train, serve the sklearn and ONNX models, score transactions through the v2 API."""

from __future__ import annotations

import importlib.util
import shutil
import sys
from pathlib import Path

import numpy as np
from oip_support import serve

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fraud"


def load(name: str):
    sys.path.insert(0, str(EXAMPLE))
    spec = importlib.util.spec_from_file_location(f"fraud_{name}", EXAMPLE / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


async def test_fraud_model_served_in_real_time(tmp_path: Path) -> None:
    repository = tmp_path / "repository"
    shutil.copytree(EXAMPLE / "repository", repository)
    metrics = load("train").train(repository, n=6000)
    assert metrics["auc"] > 0.75
    data = load("data")
    x, y = data.transactions(250, seed=5)
    async with serve(repository, tmp_path / "cache", None) as (_state, client):
        assert (await client.get("/v2/health/ready")).status_code == 200
        scores = {}
        for model, output in (("fraud", "predict_proba"), ("fraud-onnx", "probabilities")):
            request = {
                "inputs": [{"name": "transaction", "datatype": "FP32", "shape": list(x.shape), "data": x.tolist()}],
                "outputs": [{"name": output}],
            }
            response = await client.post(f"/v2/models/{model}/infer", json=request)
            assert response.status_code == 200
            out = response.json()["outputs"][0]
            scores[model] = np.asarray(out["data"]).reshape(out["shape"])[:, 1]
        assert np.allclose(scores["fraud"], scores["fraud-onnx"], atol=1e-4)
        assert scores["fraud"][y == 1].mean() > scores["fraud"][y == 0].mean()
        single = {"inputs": [{"name": "transaction", "datatype": "FP32", "shape": [1, 7], "data": x[:1].tolist()}], "parameters": {"priority": 1}}
        assert (await client.post("/v2/models/fraud/infer", json=single)).status_code == 200
