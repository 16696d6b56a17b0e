"""The picker's read-only debug views: ``/debug/state`` and ``/debug/decisions`` on the metrics port."""

from __future__ import annotations

import httpx
import pytest
from picker_support import serve_fake_model_server, vllm_metrics, wait_until

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import Endpoint
from inferplane.picker.errors import Saturated
from inferplane.picker.request import InferenceRequest
from inferplane.picker.scheduling.decisions import DecisionLog
from inferplane.picker.server import PickerServer

FREE_PORTS = {"grpc_port": 0, "health_port": 0, "metrics_port": 0}


async def test_state_and_decisions_show_the_pool_and_why_each_request_went_where() -> None:
    async with serve_fake_model_server() as busy, serve_fake_model_server() as idle:
        busy.text = vllm_metrics(waiting=6, kv=0.7)
        idle.text = vllm_metrics(waiting=0, kv=0.1)
        config = PickerConfig(**FREE_PORTS, endpoints=[busy.address, idle.address], scrape_interval=0.02,
                              pool_name="pool-a", objectives={"chat": 5, "batch": -1},
                              flow_control={"enabled": True},
                              model_rewrites=[{"name": "canary", "rules": [{
                                  "matches": [{"model": {"value": "m"}}],
                                  "targets": [{"modelRewrite": "m-v1", "weight": 90},
                                              {"modelRewrite": "m-v2", "weight": 10}]}]}])
        server = PickerServer(config)
        await server.start()
        try:
            await wait_until(lambda: len(server.datastore.ready()) == 2)
            for i in range(3):
                request = InferenceRequest(request_id=f"r{i}", model="m-v1", requested_model="m",
                                           objective="chat", priority=5, fairness_id="tenant-a")
                assert server.scheduler.schedule(request)[0].address == idle.address
            base = f"http://127.0.0.1:{server.metrics_port}"
            async with httpx.AsyncClient() as client:
                state = (await client.get(f"{base}/debug/state")).json()
                decisions = (await client.get(f"{base}/debug/decisions", params={"limit": 2})).json()
                metrics = await client.get(f"{base}/metrics")
                bad = await client.get(f"{base}/debug/decisions", params={"limit": "many"})
        finally:
            await server.stop(grace=0)

    assert metrics.status_code == 200 and "inference_pool_ready_pods" in metrics.text  # still served
    assert bad.status_code == 400 and "limit" in bad.json()["error"]

    assert state["pool"] == "pool-a"
    rows = {row["address"]: row for row in state["endpoints"]}
    assert rows[busy.address]["waiting"] == 6 and rows[busy.address]["kv_cache_usage"] == 0.7
    assert rows[idle.address]["ready"] and rows[idle.address]["in_flight"] == 0
    scorer_names = [s["name"] for s in state["profile"]["scorers"]]
    assert set(rows[idle.address]["last_score"]["scores"]) == set(scorer_names)
    assert rows[idle.address]["last_score"]["total"] > rows[busy.address]["last_score"]["total"]
    assert state["decisions_total"] == 3
    assert state["flow_control"]["enabled"] and state["flow_control"]["queued"] == 0
    assert {"name": "batch", "priority": -1} in state["objectives"]
    [rewrite] = state["rewrites"]
    assert rewrite["name"] == "canary"
    assert rewrite["rules"][0]["targets"] == [{"model": "m-v1", "weight": 90}, {"model": "m-v2", "weight": 10}]

    assert decisions["total"] == 3
    newest = decisions["decisions"]
    assert [d["request_id"] for d in newest] == ["r2", "r1"]
    first = newest[0]
    assert first["outcome"] == "picked" and first["picked"][0] == idle.address
    assert (first["model"], first["target_model"], first["objective"], first["priority"], first["fairness_id"]) == (
        "m", "m-v1", "chat", 5, "tenant-a")
    assert {c["address"] for c in first["candidates"]} == {busy.address, idle.address}
    assert first["reason"].startswith("highest total")


def _endpoint(address: str) -> Endpoint:
    return Endpoint(address)


def test_the_reason_names_the_scorers_that_made_the_difference() -> None:
    log = DecisionLog([("queue", 2.0), ("kv", 2.0), ("prefix", 3.0)], "max-score-picker", maxlen=2)
    a, b = _endpoint("10.0.0.1:8000"), _endpoint("10.0.0.2:8000")
    request = InferenceRequest(request_id="x", model="m")
    # b: queue 1 vs 0 (+2), kv 0.5 vs 0.5, prefix 0 vs 0.2 (−0.6)
    log.picked(request, [a, b], [[0.0, 1.0], [0.5, 0.5], [0.2, 0.0]], [1.6, 3.0], [b])
    [decision] = log.to_json()
    assert decision["reason"] == "highest total 3.00 vs 1.60 (10.0.0.1:8000); ahead on queue +2.00"
    assert decision["candidates"][1] == {"address": b.address, "total": 3.0,
                                         "scores": {"queue": 1.0, "kv": 0.5, "prefix": 0.0}}

    log.picked(request, [a, b], [[1.0, 1.0], [1.0, 1.0], [0.0, 0.0]], [4.0, 4.0], [a])
    assert "broke the tie" in log.to_json(1)[0]["reason"]

    log.rejected(request, [a, b], str(Saturated("the inference pool is saturated")))
    newest = log.to_json()
    assert len(newest) == 2 and log.total == 3  # bounded ring buffer
    assert newest[0]["outcome"] == "rejected" and newest[0]["reason"] == "the inference pool is saturated"
    assert log.last_scores()[a.address]["total"] == 4.0  # rejections carry no scores


@pytest.mark.parametrize("limit", [0, 1])
def test_limit_bounds_the_answer(limit: int) -> None:
    log = DecisionLog([("queue", 1.0)])
    ep = _endpoint("10.0.0.1:8000")
    for i in range(3):
        log.picked(InferenceRequest(request_id=str(i)), [ep], [[1.0]], [1.0], [ep])
    assert [d["request_id"] for d in log.to_json(limit)] == ["2"][:limit]
    assert log.to_json(limit)[:1] == [] or log.to_json(limit)[0]["reason"] == "the only candidate"


class _Waiter:
    """A queued request's owner (what an ext_proc stream is to flow control)."""

    def __init__(self) -> None:
        self.outcome = ""

    def dispatched(self, engine_rank: int | None = None) -> None:
        self.outcome = "dispatched"

    def rejected(self, error: Exception) -> None:
        self.outcome = f"rejected: {error}"


async def test_state_shows_queue_depth_per_band_and_tenant() -> None:
    async with serve_fake_model_server() as saturated:
        saturated.text = vllm_metrics(waiting=10, kv=0.5)  # waiting / 5 >= 1: no room, requests wait
        server = PickerServer(PickerConfig(**FREE_PORTS, endpoints=[saturated.address], scrape_interval=0.02,
                                           flow_control={"enabled": True}))
        await server.start()
        assert server.flow is not None
        waiters = []
        try:
            await wait_until(lambda: len(server.datastore.ready()) == 1)
            for i, (tenant, priority) in enumerate([("a", 0), ("a", 0), ("b", 0), ("b", 7)]):
                waiter = _Waiter()
                request = InferenceRequest(request_id=f"q{i}", model="m", priority=priority, fairness_id=tenant)
                assert server.flow.enqueue(waiter, request, 100) is not None  # held
                waiters.append(waiter)
            async with httpx.AsyncClient() as client:
                state = (await client.get(f"http://127.0.0.1:{server.metrics_port}/debug/state")).json()
            saturated.text = vllm_metrics(waiting=0, kv=0.1)  # room again: the queue drains
            await wait_until(lambda: all(w.outcome == "dispatched" for w in waiters))
        finally:
            await server.stop(grace=0)

    flow = state["flow_control"]
    assert flow["queued"] == 4
    assert [band["priority"] for band in flow["bands"]] == [7, 0]  # most important first
    high, normal = flow["bands"]
    assert high["requests"] == 1 and high["flows"] == [{"fairness_id": "b", "requests": 1, "bytes": 100}]
    assert normal["requests"] == 3 and normal["bytes"] == 300
    assert {f["fairness_id"]: f["requests"] for f in normal["flows"]} == {"a": 2, "b": 1}
    assert state["saturation"] >= 1
