"""The whole picker process part by part: gRPC health, Prometheus, the endpoints file, SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import grpc
import httpx
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from picker_support import (
    FakeModelServer,
    serve_fake_model_server,
    vllm_metrics,
    wait_until,
)

from inferplane.picker.config import PickerConfig
from inferplane.picker.server import PickerServer

FREE_PORTS = {"grpc_port": 0, "health_port": 0, "metrics_port": 0}


async def health_status(channel: grpc.aio.Channel, service: str) -> str:
    stub = health_pb2_grpc.HealthStub(channel)
    reply = await stub.Check(health_pb2.HealthCheckRequest(service=service))
    return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)


@pytest.mark.parametrize("extproc_server", ["inferplane", "grpcio"])
async def test_health_follows_metrics_and_prometheus_exports_the_pool(model_server: FakeModelServer,
                                                                     extproc_server: str) -> None:
    model_server.status = 500  # not scrapeable yet
    model_server.text = vllm_metrics(waiting=3, kv=0.4)
    config = PickerConfig(**FREE_PORTS, endpoints=[model_server.address], scrape_interval=0.02, pool_name="pool-a",
                          extproc_server=extproc_server)
    server = PickerServer(config)
    await server.start()
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.health_port}") as channel:
            assert await health_status(channel, "liveness") == "SERVING"
            assert await health_status(channel, "readiness") == "NOT_SERVING"

            model_server.status = 200
            await wait_until(lambda: server.health.ready)
            for service in ("readiness", "envoy.service.ext_proc.v3.ExternalProcessor", ""):
                assert await health_status(channel, service) == "SERVING"

        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.grpc_port}") as channel:
            assert await health_status(channel, "readiness") == "SERVING"  # also on the ext_proc port

        async with httpx.AsyncClient() as client:
            text = (await client.get(f"http://127.0.0.1:{server.metrics_port}/metrics")).text
        assert 'inference_pool_ready_pods{name="pool-a"} 1.0' in text
        assert 'inference_pool_average_queue_size{name="pool-a"} 3.0' in text
        assert 'inference_pool_average_kv_cache_utilization{name="pool-a"} 0.4' in text
        assert "inference_extension_scheduler_e2e_duration_seconds" in text
    finally:
        await server.stop(grace=0)


async def test_endpoints_file_changes_are_applied(tmp_path: Path) -> None:
    listing = tmp_path / "endpoints.txt"
    async with serve_fake_model_server() as first, serve_fake_model_server() as second:
        listing.write_text(f"# the pool\n{first.address}\n")
        config = PickerConfig(**FREE_PORTS, endpoints_file=listing, scrape_interval=0.02)
        server = PickerServer(config)
        await server.start()
        try:
            await wait_until(lambda: [ep.address for ep in server.datastore.ready()] == [first.address])

            listing.write_text(f"- {second.address}\n- {first.address}  # YAML list lines work too\n")
            os.utime(listing, (1, 1))  # a different mtime even within the clock's resolution
            server.source.refresh()
            await wait_until(lambda: len(server.datastore.ready()) == 2)

            listing.write_text(f"{second.address}\n")
            os.utime(listing, (2, 2))
            server.source.refresh()
            assert [ep.address for ep in server.datastore.all()] == [second.address]

            listing.write_text("not-an-address\n")  # a bad file keeps the last good list
            os.utime(listing, (3, 3))
            server.source.refresh()
            assert [ep.address for ep in server.datastore.all()] == [second.address]
        finally:
            await server.stop(grace=0)


def test_process_serves_until_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "platform.yaml"
    config.write_text("picker:\n  grpc_port: 0\n  health_port: 0\n  metrics_port: 0\n")
    process = subprocess.Popen(
        [sys.executable, "-m", "inferplane", "picker", "--config", str(config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        for line in process.stdout:  # bounded: the process logs "picker ready" or exits
            if "picker ready" in line:
                break
        else:
            raise AssertionError("the picker exited before getting ready")
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def test_process_reports_config_errors_with_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "platform.yaml"
    config.write_text("picker:\n  staleness: -1\n")
    result = subprocess.run(
        [sys.executable, "-m", "inferplane", "picker", "--config", str(config)],
        check=False, capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 2
    assert "staleness" in result.stderr and "Traceback" not in result.stderr
