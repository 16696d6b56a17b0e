"""The console's JSON API over a real picker and a real Batch API (no browser, no Envoy)."""

from __future__ import annotations

import asyncio
import io
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
from console_support import metrics_app, serve, vllm_metrics, wait_for
from platform_runner import free_port

from inferplane.configfile import ConfigError, validate_model
from inferplane.console.app import build_app
from inferplane.console.config import ConsoleConfig
from inferplane.jobs.config import BatchConfig
from inferplane.jobs.server import build_server_app
from inferplane.picker.config import PickerConfig
from inferplane.picker.request import InferenceRequest
from inferplane.picker.server import PickerServer


async def test_snapshot_aggregates_the_picker_and_the_batch_api(tmp_path: Path) -> None:
    load = {"a": (2, 1, 0.25), "b": (0, 0, 0.05)}
    batch_config = BatchConfig(database=f"sqlite:///{tmp_path / 'batch.db'}", files_url=str(tmp_path / "files"),
                               worker=False)
    async with (serve(metrics_app(lambda: vllm_metrics(*load["a"]))) as server_a,
                serve(metrics_app(lambda: vllm_metrics(*load["b"]))) as server_b,
                serve(build_server_app(batch_config)) as batch_url):
        a, b = server_a.removeprefix("http://"), server_b.removeprefix("http://")
        picker = PickerServer(PickerConfig(grpc_port=0, health_port=0, metrics_port=0, endpoints=[a, b],
                                           scrape_interval=0.02, pool_name="console-pool",
                                           flow_control={"enabled": True}))
        await picker.start()
        try:
            await wait_for(lambda: len(picker.datastore.ready()) == 2)
            for i in range(4):
                picker.scheduler.schedule(InferenceRequest(request_id=f"req-{i}", model="m", requested_model="m",
                                                           fairness_id="tenant-x"))
            openai_client = openai.AsyncOpenAI(base_url=f"{batch_url}/v1", api_key="unused")
            lines = "\n".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                          "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}})
                              for i in range(3))
            upload = await openai_client.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
            batch = await openai_client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                                       completion_window="24h")

            closed_port = free_port()  # nothing listens there: the gateway source is down
            config = ConsoleConfig(picker_url=f"http://127.0.0.1:{picker.metrics_port}", batch_url=batch_url,
                                   envoy_admin_url=f"http://127.0.0.1:{closed_port}", poll_interval_s=0.1,
                                   history_s=10)
            async with serve(build_app(config)) as console, httpx.AsyncClient(base_url=console) as client:
                page = await client.get("/console/")
                script = await client.get("/console/static/console.js")
                root = await client.get("/", follow_redirects=False)
                first = (await client.get("/console/api/snapshot")).json()
                load["a"] = (5, 3, 0.6)  # the next polls must show the new load

                async def shows_new_load() -> dict | None:
                    snap = (await client.get("/console/api/snapshot")).json()
                    rows = {e["address"]: e for e in (snap["state"] or {}).get("endpoints", [])}
                    return snap if rows.get(a, {}).get("running") == 5 and len(snap["history"]) >= 3 else None

                snap = await eventually(shows_new_load)
                newest = snap["history"][-1]["t"]
                since = (await client.get("/console/api/snapshot", params={"since": newest})).json()
                bad_since = await client.get("/console/api/snapshot", params={"since": "yesterday"})
        finally:
            await picker.stop(grace=0)

    assert first["history"] and first["state"]["endpoints"]  # the first poll happens before the console answers
    assert page.status_code == 200 and "inferplane console" in page.text
    assert script.status_code == 200 and "api/snapshot" in script.text
    assert root.status_code in (302, 307) and root.headers["location"].endswith("/console/")

    assert snap["sources"]["picker"]["ok"] and snap["sources"]["batch"]["ok"]
    gateway = snap["sources"]["gateway"]
    assert not gateway["ok"] and str(closed_port) in gateway["error"]

    state = snap["state"]
    assert state["pool"] == "console-pool"
    rows = {e["address"]: e for e in state["endpoints"]}
    assert (rows[a]["running"], rows[a]["waiting"], rows[a]["kv_cache_usage"]) == (5, 3, 0.6)
    assert rows[b]["last_score"]["total"] > 0
    assert state["flow_control"]["enabled"]

    assert [d["request_id"] for d in snap["decisions"]][:4] == ["req-3", "req-2", "req-1", "req-0"]
    assert all(d["fairness_id"] == "tenant-x" and d["picked"][0] in (a, b) for d in snap["decisions"])

    [row] = [x for x in snap["batches"] if x["id"] == batch.id]
    assert row["status"] in ("validating", "in_progress") and row["endpoint"] == "/v1/chat/completions"

    samples = snap["history"]
    assert [s["t"] for s in samples] == sorted(s["t"] for s in samples)
    assert samples[-1]["endpoints"][a]["running"] == 5
    assert samples[0]["endpoints"][a]["running"] == 2
    assert samples[-1]["decisions_ps"] is not None  # a rate once two samples exist
    assert all(s["t"] > newest for s in since["history"])

    assert bad_since.status_code == 400 and "since" in bad_since.json()["error"]["message"]


async def eventually(read, limit_s: float = 20.0):
    """The first truthy answer of the coroutine function ``read``, polled until ``limit_s``."""
    deadline = asyncio.get_running_loop().time() + limit_s
    while (answer := await read()) is None:
        assert asyncio.get_running_loop().time() < deadline, f"no answer within {limit_s}s"
        await asyncio.sleep(0.05)
    return answer


def test_configuration_errors_name_the_field() -> None:
    with pytest.raises(ConfigError, match="picker_url"):
        validate_model(ConsoleConfig, {"picker_url": "localhost:9090"}, "test")
    with pytest.raises(ConfigError, match="history_s"):
        validate_model(ConsoleConfig, {"poll_interval_s": 10, "history_s": 15}, "test")
    with pytest.raises(ConfigError, match="colour"):
        validate_model(ConsoleConfig, {"colour": "blue"}, "test")
    assert ConsoleConfig(batch_url=None, history_s=60, poll_interval_s=0.5).samples == 120


def test_the_cli_reports_a_bad_flag_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "inferplane", "console", "--picker-url", "nowhere"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "picker_url" in result.stderr and "Traceback" not in result.stderr

    config = tmp_path / "console.yaml"
    config.write_text("console:\n  port: 99999\n")
    result = subprocess.run([sys.executable, "-m", "inferplane", "console", "--config", str(config)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "port" in result.stderr and "Traceback" not in result.stderr


def test_the_cli_serves_until_sigterm_and_reports_a_taken_port() -> None:
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "inferplane", "console", "--port", str(port),
                                "--picker-url", f"http://127.0.0.1:{free_port()}", "--poll-interval-s", "0.5"],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        assert process.stdout is not None
        assert f"http://127.0.0.1:{port}/console/" in process.stdout.readline()
        health = _get_when_up(f"http://127.0.0.1:{port}/console/health")
        snapshot = httpx.get(f"http://127.0.0.1:{port}/console/api/snapshot", timeout=5).json()

        taken = subprocess.run([sys.executable, "-m", "inferplane", "console", "--port", str(port)],
                               capture_output=True, text=True, timeout=60)
    finally:
        process.send_signal(signal.SIGTERM)
        code = process.wait(30)
    assert health == "ok"
    assert not snapshot["sources"]["picker"]["ok"] and snapshot["state"] is None  # the picker is not there
    assert taken.returncode == 1 and f"127.0.0.1:{port} (port)" in taken.stderr and "Traceback" not in taken.stderr
    assert code == 0


def _get_when_up(url: str, limit_s: float = 30.0) -> str:
    deadline = time.monotonic() + limit_s
    while True:
        try:
            return httpx.get(url, timeout=2).text
        except httpx.HTTPError:
            assert time.monotonic() < deadline, f"{url} did not answer within {limit_s}s"
            time.sleep(0.1)


async def test_gateway_counts_every_pool_cluster_of_a_several_pool_gateway() -> None:
    import re

    from inferplane.console.sources import GATEWAY_STATS, Sources

    stats = {"cluster.inference_pool_llm.upstream_rq_total": 5, "cluster.inference_pool_embed.upstream_rq_total": 2,
             "http.inference_gateway.downstream_rq_total": 9, "cluster.picker_llm.upstream_rq_total": 40}

    def envoy_admin(request: httpx.Request) -> httpx.Response:
        wanted = re.compile(request.url.params["filter"])
        return httpx.Response(200, json={"stats": [{"name": k, "value": v} for k, v in stats.items()
                                                   if wanted.search(k)]})

    config = ConsoleConfig(picker_url="http://picker.invalid", envoy_admin_url="http://envoy.invalid")
    async with httpx.AsyncClient(transport=httpx.MockTransport(envoy_admin)) as client:
        reading = await Sources(config, client).gateway()
    assert reading.ok and re.search(GATEWAY_STATS, "cluster.inference_pool_llm.upstream_rq_total")
    assert reading.data == {"downstream_rq_total": 9, "cluster.inference_pool_llm.upstream_rq_total": 5,
                            "cluster.inference_pool_embed.upstream_rq_total": 2,
                            "cluster.inference_pool.upstream_rq_total": 7}
