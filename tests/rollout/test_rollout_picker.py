"""What the picker adds for rollouts: per-target TTFT, and versions of a model served side by side in one pool."""

from __future__ import annotations

from inferplane.picker.endpoints import Endpoint, EndpointMetrics
from inferplane.picker.scheduling.profile import serving
from inferplane.picker.scraper import parse_metrics

PAGE = """# TYPE vllm:num_requests_waiting gauge
vllm:num_requests_waiting{model_name="llama-v2"} 3.0
vllm:num_requests_running{model_name="llama-v2"} 1.0
"""


def test_scrape_reads_the_served_model() -> None:
    metrics = parse_metrics(PAGE)
    assert metrics.models == frozenset({"llama-v2"})
    assert metrics.waiting == 3.0


def endpoint(address: str, *models: str) -> Endpoint:
    return Endpoint(address, metrics=EndpointMetrics(models=frozenset(models)))


def test_requests_go_to_the_endpoints_serving_their_model() -> None:
    v1, v2, unlabelled = endpoint("10.0.0.1:8000", "llama-v1"), endpoint("10.0.0.2:8000", "llama-v2"), endpoint(
        "10.0.0.3:8000")
    pool = [v1, v2, unlabelled]
    assert serving(pool, "llama-v2") == [v2]
    assert serving(pool, "llama-v1") == [v1]
    # a name no endpoint reports (one model per pool, LoRA adapters): every endpoint stays a candidate
    assert serving(pool, "adapter-x") == pool
    assert serving(pool, "") == pool


def test_ttft_waits_for_the_first_generated_text() -> None:
    from inferplane.picker.extproc import has_token

    role = b'data: {"choices":[{"index":0,"delta":{"role":"assistant","content":""}}]}\n\n'
    assert not has_token(role)  # sent before any token is generated
    assert has_token(role + b'data: {"choices":[{"index":0,"delta":{"content":"Hi"}}]}\n\n')
    assert has_token(b'data: {"choices":[{"index":0,"text":"Hi","finish_reason":null}]}\n\n')
    assert not has_token(b'data: {"error":{"message":"boom","text":"x"}}\n\ndata: [DONE]\n\n')
    assert not has_token(b'data: {"choices":["text"]}\n\n')
