"""The v2 REST API as a client sees it: health, metadata, infer, errors, repository, metrics."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import httpx
import numpy as np
import oip_support
import pytest
from oip_support import serve

from inferplane.oip.state import ServerState

ROWS = [[1.0, 2.0, 3.0, 4.0], [0.5, -1.0, -2.0, 0.0]]


def tensor(name: str, data: list, datatype: str = "FP32") -> dict:
    return {"name": name, "datatype": datatype, "shape": list(np.shape(data)), "data": data}


async def test_server_health_and_metadata(client: httpx.AsyncClient) -> None:
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    assert (await client.get("/v2/health/ready")).status_code == 200
    meta = (await client.get("/v2")).json()
    assert meta["name"] == "inferplane" and "binary_tensor_data" in meta["extensions"]


async def test_model_metadata_has_batch_dimension(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v2/models/iris")).json()
    assert meta["versions"] == ["1"] and meta["platform"] == "sklearn"
    assert meta["inputs"] == [{"name": "input-0", "datatype": "FP32", "shape": [-1, 4]}]
    assert {o["name"] for o in meta["outputs"]} == {"predict", "predict_proba"}
    onnx = (await client.get("/v2/models/iris-onnx/versions/1")).json()
    assert onnx["inputs"][0]["shape"] == [-1, 4] and onnx["platform"] == "onnxruntime_onnx"


async def test_sklearn_infer_matches_the_estimator(client: httpx.AsyncClient, repo: Path) -> None:
    import joblib

    response = await client.post("/v2/models/iris/infer", json={"id": "r1", "inputs": [tensor("input-0", ROWS)]})
    body = response.json()
    assert response.status_code == 200 and body["id"] == "r1" and body["model_version"] == "1"
    outputs = {o["name"]: o for o in body["outputs"]}
    estimator = joblib.load(repo / "iris" / "1" / "model.joblib")
    x = np.asarray(ROWS, dtype=np.float32)
    assert outputs["predict"]["data"] == estimator.predict(x).tolist()
    assert outputs["predict_proba"]["shape"] == [2, 2]
    assert np.allclose(outputs["predict_proba"]["data"], estimator.predict_proba(x).reshape(-1))


async def test_requested_output_only(client: httpx.AsyncClient) -> None:
    body = (await client.post("/v2/models/iris/infer", json={"inputs": [tensor("input-0", ROWS)], "outputs": [{"name": "predict"}]})).json()
    assert [o["name"] for o in body["outputs"]] == ["predict"]


async def test_onnx_xgboost_and_torchscript_models(client: httpx.AsyncClient) -> None:
    onnx = (await client.post("/v2/models/iris-onnx/infer", json={"inputs": [tensor("X", ROWS)]})).json()
    assert {o["name"] for o in onnx["outputs"]} == {"label", "probabilities"}
    xgb = (await client.post("/v2/models/iris-xgb/infer", json={"inputs": [tensor("input-0", ROWS)]})).json()
    values = xgb["outputs"][0]["data"]
    assert len(values) == 2 and all(0.0 <= v <= 1.0 for v in values)
    torch = (await client.post("/v2/models/doubler/infer", json={"inputs": [tensor("x", [[1.0, 2.0, 3.0]])]})).json()
    assert torch["outputs"][0]["data"] == [3.0, 5.0, 7.0]


async def test_binary_data_extension(client: httpx.AsyncClient) -> None:
    x = np.asarray(ROWS, dtype=np.float32)
    header = json.dumps(
        {
            "inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 4], "parameters": {"binary_data_size": x.nbytes}}],
            "outputs": [{"name": "predict_proba", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = await client.post(
        "/v2/models/iris/infer", content=header + x.tobytes(), headers={"Inference-Header-Content-Length": str(len(header))}
    )
    assert response.status_code == 200
    length = int(response.headers["Inference-Header-Content-Length"])
    meta = json.loads(response.content[:length])
    out = meta["outputs"][0]
    assert out["datatype"] == "FP64" and out["parameters"]["binary_data_size"] == 2 * 2 * 8
    proba = np.frombuffer(response.content[length:], dtype=np.float64).reshape(out["shape"])
    assert np.allclose(proba.sum(axis=1), 1.0, atol=1e-6)


@pytest.mark.parametrize(
    ("path", "body", "status", "fragment"),
    [
        ("/v2/models/nope/infer", {"inputs": [tensor("input-0", ROWS)]}, 404, "nope"),
        ("/v2/models/iris/infer", {"inputs": [tensor("input-0", [[1.0, 2.0, 3.0]])]}, 400, "shape"),
        ("/v2/models/iris/infer", {"inputs": [tensor("wrong", ROWS)]}, 400, "unexpected input"),
        ("/v2/models/iris/infer", {"inputs": [tensor("input-0", ROWS, "INT32")]}, 400, "datatype"),
        ("/v2/models/iris/infer", {"inputs": [{"name": "input-0", "datatype": "FP32", "shape": [2, 4], "data": [1]}]}, 400, "do not fill"),
        ("/v2/models/iris/infer", {"inputs": []}, 400, "inputs"),
        ("/v2/models/iris/infer", {"inputs": [tensor("input-0", ROWS)], "outputs": [{"name": "nope"}]}, 400, "unknown output"),
        ("/v2/models/iris/versions/7/infer", {"inputs": [tensor("input-0", ROWS)]}, 404, "version"),
    ],
)
async def test_bad_requests_get_v2_error_json(client: httpx.AsyncClient, path: str, body: dict, status: int, fragment: str) -> None:
    response = await client.post(path, json=body)
    assert response.status_code == status
    assert fragment in response.json()["error"]


async def test_invalid_json_is_a_400(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/iris/infer", content=b"{not json")
    assert response.status_code == 400 and "JSON" in response.json()["error"]


async def test_too_large_batch_is_rejected(client: httpx.AsyncClient) -> None:
    response = await client.post("/v2/models/iris/infer", json={"inputs": [tensor("input-0", [[0.0] * 4] * 65)]})
    assert response.status_code == 400 and "max_batch_size" in response.json()["error"]


async def test_version_policy_serves_latest_only(client: httpx.AsyncClient) -> None:
    meta = (await client.get("/v2/models/two-versions")).json()
    assert meta["versions"] == ["2"]
    assert (await client.get("/v2/models/two-versions/versions/1/ready")).status_code == 400
    assert (await client.get("/v2/models/two-versions/versions/2/ready")).status_code == 200


async def test_load_and_unload_at_run_time(client: httpx.AsyncClient) -> None:
    index = (await client.post("/v2/repository/index")).json()
    assert {"name": "minilm", "state": "UNAVAILABLE", "reason": ""} in index
    assert (await client.post("/v2/repository/models/iris/unload")).status_code == 200
    assert (await client.get("/v2/models/iris/ready")).status_code == 400
    assert (await client.post("/v2/models/iris/infer", json={"inputs": [tensor("input-0", ROWS)]})).status_code == 404
    assert (await client.post("/v2/repository/models/iris/load")).status_code == 200
    assert (await client.get("/v2/models/iris/ready")).status_code == 200
    ready = (await client.post("/v2/repository/index", json={"ready": True})).json()
    assert "iris" in {row["name"] for row in ready} and "minilm" not in {row["name"] for row in ready}
    assert (await client.post("/v2/repository/models/missing/load")).status_code == 404


async def test_load_with_config_override_selects_versions(client: httpx.AsyncClient) -> None:
    override = json.dumps({"version_policy": {"specific": {"versions": [1, 2]}}})
    assert (await client.post("/v2/repository/models/two-versions/load", json={"parameters": {"config": override}})).status_code == 200
    assert (await client.get("/v2/models/two-versions")).json()["versions"] == ["1", "2"]
    one = (await client.post("/v2/models/two-versions/versions/1/infer", json={"inputs": [tensor("input-0", ROWS)]})).json()
    two = (await client.post("/v2/models/two-versions/versions/2/infer", json={"inputs": [tensor("input-0", ROWS)]})).json()
    assert one["outputs"][0]["data"] == [1 - v for v in two["outputs"][0]["data"]]


async def test_concurrent_requests_are_batched_and_metrics_show_it(server: tuple[ServerState, httpx.AsyncClient]) -> None:
    state, client = server
    bodies = [{"inputs": [tensor("input-0", [row])]} for row in ROWS * 16]
    responses = await asyncio.gather(*(client.post("/v2/models/iris/infer", json=b) for b in bodies))
    assert all(r.status_code == 200 for r in responses)
    stats = state.repository.get("iris").batcher.stats
    assert stats.requests == 32 and stats.executions < 32
    text = (await client.get("/metrics")).text
    assert 'nv_inference_pending_request_count{model="iris",version="1"} 0.0' in text
    assert 'nv_inference_request_success_total{model="iris",version="1"} 32.0' in text
    assert 'inferplane_oip_batch_size_count{model="iris",version="1"} 32.0' in text
    assert "inferplane_oip_queue_duration_seconds_bucket" in text
    assert "vllm:num_requests_waiting" in text


async def test_a_broken_model_fails_alone(tmp_path: Path, repo: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    oip_support.build_sklearn(tmp_path, "good")
    oip_support.build_xgboost(tmp_path, "needs-xgboost")
    (tmp_path / "bad-file" / "1").mkdir(parents=True)
    (tmp_path / "bad-file" / "config.yaml").write_text("runtime: onnx\n")
    (tmp_path / "bad-file" / "1" / "model.onnx").write_bytes(b"not an onnx file")
    monkeypatch.setitem(sys.modules, "xgboost", None)  # as if the library were not installed
    async with serve(tmp_path, cache_dir, None) as (_state, client):
        index = {row["name"]: row for row in (await client.post("/v2/repository/index")).json()}
        assert index["good"]["state"] == "READY"
        assert index["needs-xgboost"]["state"] == "UNAVAILABLE" and "pip install xgboost" in index["needs-xgboost"]["reason"]
        assert index["bad-file"]["state"] == "UNAVAILABLE" and "model.onnx" in index["bad-file"]["reason"]
        assert (await client.get("/v2/health/ready")).status_code == 503
        ok = await client.post("/v2/models/good/infer", json={"inputs": [tensor("input-0", ROWS)]})
        assert ok.status_code == 200
        failed = await client.post("/v2/repository/models/needs-xgboost/load")
        assert failed.status_code == 400 and "xgboost" in failed.json()["error"]
