"""Whole pickers on the chart's own config and objects: discovery, objectives, rewrites, two replicas."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import uvicorn
import yaml
from envoy.config.core.v3 import base_pb2
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
from kubernetes_support import (
    NS,
    OBJECTIVES,
    PODS,
    POOLS,
    REWRITES,
    FakeApiServer,
    pod,
    serve_fake_api,
)
from picker_support import vllm_metrics, wait_until
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from inferplane.deploy.render import load_values, render_manifests
from inferplane.picker.kubernetes.config import load_picker_config
from inferplane.picker.server import PickerServer

REPO = Path(__file__).resolve().parents[2]
RELEASE = "demo"
PLURALS = {"InferencePool": POOLS, "InferenceObjective": OBJECTIVES, "InferenceModelRewrite": REWRITES}


def rendered(port: int) -> tuple[dict[str, Any], list[dict[str, Any]], dict[str, str]]:
    """The chart's picker.yaml, its Inference* objects (pool pointed at ``port``) and the model-server pod labels."""
    manifests = render_manifests(load_values([REPO / "deploy" / "examples" / "gke-h100-vllm.yaml"], None), RELEASE, NS)
    by_kind = {(m["kind"], m["metadata"]["name"]): m for m in manifests}
    config = yaml.safe_load(by_kind["ConfigMap", f"{RELEASE}-picker"]["data"]["picker.yaml"])
    objects = [m for m in manifests if m["kind"] in PLURALS]
    for obj in objects:
        if obj["kind"] == "InferencePool":
            obj["spec"]["targetPorts"] = [{"number": port}]  # where the fake model servers listen
    labels = by_kind["Deployment", f"{RELEASE}-model-server"]["spec"]["template"]["metadata"]["labels"]
    return config, objects, labels


@contextlib.asynccontextmanager
async def model_servers(ips: list[str]) -> AsyncIterator[int]:
    """Fake vLLM ``/metrics`` on every IP (127.0.0.x), all on one port, as pods of one pool are."""
    app = Starlette(routes=[Route("/metrics", lambda request: PlainTextResponse(vllm_metrics()))])
    for _ in range(20):
        socks = []
        try:
            for ip in ips:
                sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                socks.append(sock)
                sock.bind((ip, socks[0].getsockname()[1] if len(socks) > 1 else 0))
            break
        except OSError:
            for sock in socks:
                sock.close()
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    task = asyncio.create_task(server.serve(sockets=socks))
    while not server.started:
        await asyncio.sleep(0.01)
    try:
        yield socks[0].getsockname()[1]
    finally:
        server.should_exit = True
        await task
        for sock in socks:
            sock.close()


def picker_config_file(tmp_path: Path, api: FakeApiServer, config: dict[str, Any], name: str) -> Path:
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "current-context": "test",
        "clusters": [{"name": "fake", "cluster": {"server": api.url}}],
        "users": [{"name": "picker", "user": {"token": api.token}}],
        "contexts": [{"name": "test", "context": {"cluster": "fake", "user": "picker"}}],
    }))
    config = {
        "picker": {**config["picker"], "host": "127.0.0.1", "grpc_port": 0, "health_port": 0, "metrics_port": 0,
                   "scrape_interval": 0.02},
        "kubernetes": {**config["kubernetes"], "kubeconfig": str(kubeconfig), "backoff_initial": 0.05,
                       "backoff_max": 0.2},
    }
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


async def route(server: PickerServer) -> str:
    """Ask one picker, over its ext_proc gRPC port, where a ``GET /v1/models`` goes."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        headers = {":method": "GET", ":path": "/v1/models", ":authority": "gw"}
        await call.write(pb.ProcessingRequest(request_headers=pb.HttpHeaders(
            headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode())
                                                for k, v in headers.items()]),
            end_of_stream=True)))
        await call.done_writing()
        async for response in call:
            for option in response.request_headers.response.header_mutation.set_headers:
                if option.header.key == "x-gateway-destination-endpoint":
                    return option.header.raw_value.decode()
    raise AssertionError("no endpoint chosen")


async def test_two_replicas_on_the_charts_config_discover_pods_objectives_and_rewrites(tmp_path):
    ips = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    async with model_servers(ips) as port, serve_fake_api(bookmark_interval=0.2) as api:
        config, objects, labels = rendered(port)
        for obj in objects:
            api.apply(PLURALS[obj["kind"]], obj)
        api.apply(PODS, pod("ms-0", ips[0], labels=labels))
        api.apply(PODS, pod("ms-1", ips[1], labels=labels))
        api.apply(PODS, pod("ms-2", ips[2], labels=labels, ready=False))  # still loading the model
        api.apply(PODS, pod("picker-0", "127.0.0.9", labels={**labels, "app.kubernetes.io/component": "picker"}))

        replicas = [PickerServer(load_picker_config(picker_config_file(tmp_path, api, config, f"r{i}")))
                    for i in range(2)]
        try:
            for replica in replicas:
                await replica.start()  # returns once the first pod list is in the datastore
            expected = [f"{ip}:{port}" for ip in ips[:2]]
            for replica in replicas:
                assert sorted(ep.address for ep in replica.datastore.all()) == expected
                await wait_until(lambda r=replica: r.health.ready)  # scraped like any static endpoint
                # cluster objectives (priority) and rewrite rules, exactly as the chart created them
                await wait_until(lambda r=replica: r.rewrite_rules != [])
                assert replica.objectives.names() == {"premium": 10, "standard": 0, "batch": -10}
                assert replica.rewrite_rules == objects[-1]["spec"]["rules"]
                assert replica.rewrites.choose("qwen")[1] in {"qwen3-32b", "qwen3-32b-support-v2"}

            # both replicas schedule independently onto the same, shared set of endpoints
            chosen = {await route(replica) for replica in replicas for _ in range(6)}
            assert chosen <= set(expected) and chosen

            # the model finishes loading on ms-2 and ms-0 is being replaced: both replicas follow
            api.apply(PODS, pod("ms-2", ips[2], labels=labels))
            api.apply(PODS, pod("ms-0", ips[0], labels=labels, terminating=True))
            expected = [f"{ip}:{port}" for ip in ips[1:]]
            for replica in replicas:
                await wait_until(lambda r=replica: sorted(ep.address for ep in r.datastore.all()) == expected)
                await wait_until(lambda r=replica: len(r.datastore.ready()) == 2)
            chosen = {await route(replica) for replica in replicas for _ in range(6)}
            assert chosen <= set(expected)

            # objectives edited in the cluster override the chart's copy in picker.yaml
            api.apply(OBJECTIVES, {"metadata": {"name": "batch"},
                                   "spec": {"poolRef": {"name": RELEASE}, "priority": -1}})
            api.apply(OBJECTIVES, {"metadata": {"name": "gold"},
                                   "spec": {"poolRef": {"name": RELEASE}, "priority": 20}})
            for replica in replicas:
                await wait_until(lambda r=replica: r.objectives.names() == {"premium": 10, "standard": 0, "batch": -1,
                                                                            "gold": 20})
        finally:
            for replica in replicas:
                await replica.stop(grace=0)
        assert api.open_watches == 0 or await _closed(api)


async def _closed(api: FakeApiServer) -> bool:
    await wait_until(lambda: api.open_watches == 0, limit=3)
    return True
