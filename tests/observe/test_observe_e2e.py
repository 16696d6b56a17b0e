"""``inferplane up --observe`` end to end: real Prometheus, Envoy, picker, simulator model servers.

One platform (JSON logs, tracing to a real OTLP/HTTP receiver, Prometheus) serves the module: every
PromQL expression of every shipped dashboard is evaluated against the running Prometheus, a
request's trace is followed client → picker → model server, and the logs are checked line by line.
"""

from __future__ import annotations

import io
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import openai
import pytest
import redis
from otlp_receiver import OtlpReceiver
from platform_runner import (
    Platform,
    free_port,
    port_is_free,
    process_alive,
    start_platform,
)

from inferplane.observe import dashboards

MODEL = "sim-model"
ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = "0af7651916cd43dd8448eb211c80319c"
CLIENT_SPAN = "b7ad6b7169203331"
SECRET = "my secret prompt 5f3e9a"
CHATS = 8
BATCH_REQUESTS = 3
ASYNC_MESSAGES = 3
#: What Grafana puts for $__rate_interval; several scrape intervals of the test's Prometheus.
RATE_WINDOW = "30s"
#: Panels that must show data once the platform has served chat and batch traffic.
KEY_PANELS = {
    "pool": {"Gateway requests per second", "Gateway responses by class", "Gateway error rate (5xx share)",
             "Finished requests per endpoint", "Finish reasons", "Time to first token",
             "End-to-end request latency (server)", "Inter-token latency", "Gateway request time", "KV-cache use",
             "Waiting requests (queue)", "Running requests", "Output tokens per second", "Prompt tokens per second",
             "Ready endpoints"},
    "picker": {"Scheduling decisions per second", "Requests per model", "Requests per objective and tenant",
               "Tokens per objective and tenant", "Requests in flight", "Scheduling latency", "Plugin latency (p99)",
               "Request duration through the picker", "Input tokens per request", "Output tokens per request",
               "Pool saturation", "Pool average KV-cache use", "Pool average queue", "Queue per endpoint"},
    "jobs": {"Batches by status", "Batch requests answered per second", "Batch requests pending",
             "Batch traffic at the picker", "Async backlog", "Oldest message age", "Messages in flight",
             "Spare-capacity gate open", "Async outcomes"},
}

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def receiver() -> OtlpReceiver:
    running = OtlpReceiver()
    yield running
    running.stop()


@pytest.fixture(scope="module")
def prometheus_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def async_metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def platform(tmp_path_factory, receiver: OtlpReceiver, prometheus_port: int, async_metrics_port: int) -> Platform:
    observe = {
        "prometheus": {"enabled": True, "port": prometheus_port, "scrape_interval_s": 0.5,
                       "extra_jobs": [{"job": "async", "targets": [f"127.0.0.1:{async_metrics_port}"]}]},
        "log_format": "json",
        "tracing": {"exporter": "otlp", "endpoint": receiver.endpoint, "export_delay_ms": 100},
    }
    running = start_platform(tmp_path_factory.mktemp("observe"), replicas=2, observe=observe,
                             server={"engine": "sim", "served_model_name": MODEL, "log_level": "info"})
    yield running
    pids = [running.pid(name) for name in ("prometheus", "server-0", "picker", "envoy")]
    assert running.stop() == 0, "\n".join(running.lines[-40:])
    for pid in pids:
        assert not process_alive(pid), f"process {pid} outlived inferplane up"
    assert port_is_free(prometheus_port)


def _tcp_open(port: int) -> bool:
    with socket.socket() as probe:
        return probe.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture(scope="module")
def async_processor(tmp_path_factory, platform: Platform, async_metrics_port: int) -> redis.Redis:
    """A real Redis and ``inferplane async run`` (its /metrics scraped through observe.prometheus.extra_jobs)."""
    port = free_port()
    server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no", "--bind",
                               "127.0.0.1", "--dir", str(tmp_path_factory.mktemp("redis"))],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    processor = subprocess.Popen(
        [sys.executable, "-m", "inferplane", "async", "run", "--source", f"redis://127.0.0.1:{port}/0?stream=jobs&group=g",
         "--consumer", "w1", "--gateway-url", platform.base_url, "--metrics-port", str(async_metrics_port),
         "--metrics-url", f"http://127.0.0.1:{platform.ports['metrics']}/metrics"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not (_tcp_open(port) and _tcp_open(async_metrics_port)):
            assert processor.poll() is None and time.monotonic() < deadline, "async processor did not start"
            time.sleep(0.2)
        yield redis.Redis(port=port)
    finally:
        for process in (processor, server):
            process.terminate()
            process.wait(15)


@pytest.fixture(scope="module")
def traffic(platform: Platform, async_processor: redis.Redis) -> dict[str, str]:
    """Chat traffic (one request with a known traceparent), one small batch and a few async messages."""
    client = openai.OpenAI(base_url=platform.base_url, api_key="unused", max_retries=0, timeout=120)
    for i in range(CHATS):
        messages = [{"role": "user", "content": f"{SECRET} number {i}"}]
        if i % 2:
            list(client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8, stream=True,
                                                stream_options={"include_usage": True}))
        else:
            client.chat.completions.create(model=MODEL, messages=messages, max_tokens=8)
    traced = httpx.post(f"{platform.base_url}/chat/completions", timeout=60,
                        headers={"traceparent": f"00-{TRACE_ID}-{CLIENT_SPAN}-01"},
                        json={"model": MODEL, "max_tokens": 6, "messages": [{"role": "user", "content": SECRET}]})
    assert traced.status_code == 200, traced.text
    lines = "\n".join(json.dumps({"custom_id": f"b{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}})
                      for i in range(BATCH_REQUESTS))
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 120
    while (batch := client.batches.retrieve(batch.id)).status not in ("completed", "failed", "expired", "cancelled"):
        assert time.monotonic() < deadline, f"batch still {batch.status}"
        time.sleep(0.3)
    assert batch.status == "completed"
    for i in range(ASYNC_MESSAGES):
        async_processor.xadd("jobs", {"message": json.dumps({
            "id": f"a{i}", "created": time.time(), "deadline": None, "metadata": {},
            "payload": {"model": MODEL, "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}})})
    while async_processor.xlen("jobs-results") < ASYNC_MESSAGES:
        assert time.monotonic() < deadline, "async results missing"
        time.sleep(0.3)
    return {"request_id": traced.headers["x-request-id"]}


def _prometheus(platform: Platform) -> str:
    line = next(line for line in platform.lines if "Prometheus: http" in line)
    return json.loads(line)["message"].split("Prometheus: ", 1)[1].strip()


def _query(base: str, expr: str) -> dict:
    reply = httpx.get(f"{base}/api/v1/query", params={"query": expr}, timeout=10)
    document = reply.json()
    assert reply.status_code == 200 and document["status"] == "success", f"{expr}: {document}"
    return document["data"]


def _wait_for(base: str, expr: str, wanted: float, timeout_s: float = 60.0) -> float:
    deadline = time.monotonic() + timeout_s
    value = -1.0
    while time.monotonic() < deadline:
        result = _query(base, expr)["result"]
        value = float(result[0]["value"][1]) if result else -1.0
        if value >= wanted:
            return value
        time.sleep(0.5)
    raise AssertionError(f"{expr} stayed at {value}, wanted {wanted}")


def test_prometheus_scrapes_every_component(platform: Platform, prometheus_port: int, traffic: dict[str, str]) -> None:
    base = _prometheus(platform)
    assert base == f"http://127.0.0.1:{prometheus_port}"
    deadline = time.monotonic() + 60
    while True:
        targets = httpx.get(f"{base}/api/v1/targets", timeout=10).json()["data"]["activeTargets"]
        health = {(t["labels"]["job"], t["labels"]["instance"]): t["health"] for t in targets}
        if all(h == "up" for h in health.values()) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    jobs = sorted({job for job, _ in health})
    assert jobs == ["async", "batch-api", "envoy", "model-servers", "picker"]
    assert sum(job == "model-servers" for job, _ in health) == 2
    assert all(h == "up" for h in health.values()), health
    assert (platform.run_dir / "prometheus" / "data").is_dir()


def test_every_dashboard_expression_evaluates(platform: Platform, traffic: dict[str, str]) -> None:
    base = _prometheus(platform)
    # All traffic was counted, then rate() windows have enough samples.
    sent = CHATS + 1 + BATCH_REQUESTS + ASYNC_MESSAGES
    _wait_for(base, "sum(vllm:request_success_total)", sent)
    _wait_for(base, "sum(inferplane_async_results_total)", ASYNC_MESSAGES)
    _wait_for(base, 'sum(inferplane_batch_request_results_total{outcome="completed"})', BATCH_REQUESTS)
    _wait_for(base, "sum(inference_objective_request_total)", sent)
    time.sleep(1.5)  # a few more scrapes after the last change: rate() has two samples per new series
    empty: list[str] = []
    for name in ("pool", "picker", "jobs"):
        document = json.loads((ROOT / "deploy" / "grafana" / f"{name}.json").read_text())
        titles = set()
        for title, expr in dashboards.expressions(document):
            titles.add(title)
            data = _query(base, expr.replace("$__rate_interval", RATE_WINDOW))  # parses and evaluates
            if title in KEY_PANELS[name] and not data["result"]:
                empty.append(f"{name} / {title}: {expr}")
        assert KEY_PANELS[name] <= titles, KEY_PANELS[name] - titles
    assert not empty, "key panels without data:\n" + "\n".join(empty)
    # One KV-cache series per model server.
    assert len(_query(base, "max by (instance) (vllm:kv_cache_usage_perc)")["result"]) == 2


def test_a_trace_runs_from_the_client_through_the_picker_to_the_model_server(
        receiver: OtlpReceiver, traffic: dict[str, str]) -> None:
    deadline = time.monotonic() + 30
    while len(spans := receiver.trace(TRACE_ID)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    by_service = {span.service: span for span in spans}
    assert set(by_service) == {"inferplane-picker", "inferplane-server"}, spans
    picker, server = by_service["inferplane-picker"], by_service["inferplane-server"]
    assert picker.parent_span_id == CLIENT_SPAN
    assert server.parent_span_id == picker.span_id
    assert picker.name == f"route {MODEL}" and server.name == f"chat {MODEL}"
    for span in (picker, server):
        assert span.attributes["gen_ai.request.model"] == MODEL
        assert span.attributes["gen_ai.operation.name"] == "chat"
        assert span.attributes["gen_ai.usage.output_tokens"] > 0
        assert span.attributes["gen_ai.usage.input_tokens"] > 0
    assert server.attributes["gen_ai.response.finish_reasons"] in (["length"], ["stop"])
    endpoint = picker.attributes["inferplane.picker.endpoint"]
    assert endpoint.startswith("127.0.0.1:")
    assert server.attributes["inferplane.request_id"] == traffic["request_id"]


def test_logs_are_json_lines_with_request_ids_and_no_prompts(platform: Platform, traffic: dict[str, str]) -> None:
    lines = list(platform.lines)
    entries = []
    for line in lines:
        entry = json.loads(line)
        assert isinstance(entry, dict) and {"time", "level", "component", "message"} <= set(entry), line
        entries.append(entry)
    assert {"up", "server", "picker", "batch"} <= {e["component"] for e in entries}
    finished = [e for e in entries if e.get("logger") == "inferplane.server.requests"
                and e.get("request_id") == traffic["request_id"]]
    assert len(finished) == 1 and finished[0]["status"] == 200
    assert not any(SECRET in line for line in lines), "a prompt reached the logs"
