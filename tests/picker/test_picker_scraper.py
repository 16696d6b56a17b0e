"""The scraper against a real HTTP server serving vLLM-format metrics."""

from __future__ import annotations

import time

from picker_support import (
    FakeModelServer,
    serve_fake_model_server,
    vllm_metrics,
    wait_until,
)

from inferplane.picker.endpoints import Datastore
from inferplane.picker.scraper import MetricsScraper, parse_metrics


def test_parse_vllm_metrics_reads_only_the_named_series() -> None:
    metrics = parse_metrics(vllm_metrics(waiting=4, kv=0.25))
    assert metrics.waiting == 4  # not the 99 of vllm:num_requests_waiting_by_reason
    assert metrics.running == 3
    assert metrics.kv_cache_usage == 0.25
    assert (metrics.block_size, metrics.num_gpu_blocks) == (16, 19208)


def test_parse_sums_engines_and_accepts_older_and_sglang_names() -> None:
    two_engines = (
        'vllm:num_requests_waiting{engine="0"} 2\nvllm:num_requests_waiting{engine="1"} 3\n'
        "vllm:gpu_cache_usage_perc 0.5\n"
    )
    metrics = parse_metrics(two_engines)
    assert metrics.waiting == 5
    assert metrics.kv_cache_usage == 0.5

    sglang = "sglang:num_queue_reqs{model_name=\"m\"} 7\nsglang:num_running_reqs 2\nsglang:token_usage 0.9\n"
    metrics = parse_metrics(sglang)
    assert (metrics.waiting, metrics.running, metrics.kv_cache_usage) == (7, 2, 0.9)


def test_parse_lora_info_takes_the_newest_sample() -> None:
    text = (
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="old",waiting_lora_adapters=""} 100.0\n'
        'vllm:lora_requests_info{max_lora="2",running_lora_adapters="a,b",waiting_lora_adapters="c"} 200.0\n'
    )
    metrics = parse_metrics(text)
    assert metrics.max_lora == 2
    assert metrics.running_loras == {"a", "b"}
    assert metrics.waiting_loras == {"c"}


def test_parse_ignores_garbage() -> None:
    metrics = parse_metrics("not prometheus at all\nvllm:num_requests_waiting NaNish\n")
    assert metrics.waiting == 0


async def test_scraper_reads_a_real_server(model_server: FakeModelServer) -> None:
    model_server.text = vllm_metrics(waiting=2, kv=0.5)
    datastore = Datastore(staleness=5.0, failure_grace=5.0)
    datastore.set_addresses([model_server.address])
    scraper = MetricsScraper(datastore, interval=0.02, timeout=1.0)
    scraper.sync()
    try:
        endpoint = datastore.get(model_server.address)
        assert endpoint is not None
        await wait_until(lambda: endpoint.metrics is not None)
        assert endpoint.metrics.waiting == 2
        assert datastore.ready() == [endpoint]
        assert datastore.has_fresh()

        model_server.text = vllm_metrics(waiting=9, kv=0.5)  # keeps polling: new values arrive
        await wait_until(lambda: endpoint.metrics.waiting == 9)
    finally:
        await scraper.close()


async def test_failing_endpoint_goes_stale_then_out_then_back(model_server: FakeModelServer) -> None:
    datastore = Datastore(staleness=0.1, failure_grace=0.3)
    datastore.set_addresses([model_server.address])
    scraper = MetricsScraper(datastore, interval=0.02, timeout=1.0)
    scraper.sync()
    try:
        endpoint = datastore.get(model_server.address)
        assert endpoint is not None
        await wait_until(lambda: endpoint.metrics is not None)

        model_server.status = 500
        await wait_until(lambda: endpoint.failing_since is not None)
        assert "HTTP 500" in endpoint.last_error
        await wait_until(lambda: endpoint.is_stale(time.monotonic(), datastore.staleness))
        await wait_until(lambda: not datastore.ready())  # out after the grace period
        assert not datastore.has_fresh()

        model_server.status = 200
        await wait_until(lambda: datastore.ready() == [endpoint])  # back once a scrape succeeds
        assert endpoint.failing_since is None
    finally:
        await scraper.close()


async def test_unreachable_endpoint_never_becomes_ready() -> None:
    async with serve_fake_model_server() as server:
        address = server.address  # the port is free again once the server is gone
    datastore = Datastore(staleness=0.1, failure_grace=0.0)
    datastore.set_addresses([address])
    scraper = MetricsScraper(datastore, interval=0.02, timeout=0.5)
    scraper.sync()
    try:
        endpoint = datastore.get(address)
        assert endpoint is not None
        await wait_until(lambda: endpoint.failing_since is not None)
        assert endpoint.metrics is None
        assert datastore.ready() == []
    finally:
        await scraper.close()


async def test_removed_endpoint_is_no_longer_scraped() -> None:
    async with serve_fake_model_server() as first, serve_fake_model_server() as second:
        datastore = Datastore(staleness=5.0)
        datastore.set_addresses([first.address, second.address])
        scraper = MetricsScraper(datastore, interval=0.02)
        scraper.sync()
        try:
            await wait_until(lambda: len(datastore.ready()) == 2)
            datastore.set_addresses([second.address])
            scraper.sync()
            await wait_until(lambda: first.scrapes > 0)
            before = first.scrapes
            seen = second.scrapes
            await wait_until(lambda: second.scrapes >= seen + 5)  # several rounds later...
            assert first.scrapes <= before + 1  # ...the removed one got at most one in-flight scrape
            assert [ep.address for ep in datastore.ready()] == [second.address]
        finally:
            await scraper.close()
