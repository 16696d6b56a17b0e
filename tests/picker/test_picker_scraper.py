"""The scraper against a real HTTP server serving vLLM-format metrics."""

from __future__ import annotations

import asyncio
import time
from typing import Self

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


class RawMetricsServer:
    """A raw asyncio HTTP/1.1 server whose framing and connection handling the test chooses."""

    def __init__(self, mode: str = "length") -> None:
        self.mode = mode  # length | chunked | close-silently | stall | garbage
        self.connections = 0
        self.requests = 0
        self.server: asyncio.Server | None = None
        self.address = ""

    async def __aenter__(self) -> Self:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.address = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                assert head.startswith(b"GET /metrics HTTP/1.1\r\n")
                self.requests += 1
                body = vllm_metrics(waiting=self.requests, kv=0.5).encode()
                if self.mode == "stall":
                    await asyncio.sleep(3600)
                elif self.mode == "garbage":
                    writer.write(b"not http at all\r\n\r\n")
                elif self.mode == "chunked":
                    half = len(body) // 2
                    writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                                 + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n" % (half, body[:half], len(body) - half, body[half:]))
                else:
                    writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
                await writer.drain()
                if self.mode == "close-silently":  # no "Connection: close": the client finds out on reuse
                    await asyncio.sleep(0.005)
                    break
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            writer.close()


async def scraped(server: RawMetricsServer, interval: float = 0.01, timeout: float = 1.0,
                  until=lambda ep: ep.scrape_generation >= 5):
    datastore = Datastore(staleness=5.0, failure_grace=5.0)
    datastore.set_addresses([server.address])
    scraper = MetricsScraper(datastore, interval=interval, timeout=timeout)
    scraper.sync()
    endpoint = datastore.get(server.address)
    assert endpoint is not None
    try:
        await wait_until(lambda: until(endpoint))
    finally:
        await scraper.close()
    return endpoint


async def test_scrapes_reuse_one_keep_alive_connection() -> None:
    async with RawMetricsServer() as server:
        endpoint = await scraped(server)
        assert server.connections == 1
        assert endpoint.metrics is not None and endpoint.metrics.waiting >= 5
        assert endpoint.failing_since is None


async def test_chunked_pages_are_read() -> None:
    async with RawMetricsServer("chunked") as server:
        endpoint = await scraped(server)
        assert endpoint.metrics is not None and endpoint.metrics.kv_cache_usage == 0.5


async def test_a_server_closing_idle_connections_costs_no_failed_scrape() -> None:
    async with RawMetricsServer("close-silently") as server:
        endpoint = await scraped(server)
        assert server.connections >= 5  # a new connection per scrape...
        assert endpoint.last_error == "" and endpoint.failing_since is None  # ...and never a failure


async def test_a_stalled_server_times_out_and_a_garbage_one_fails() -> None:
    async with RawMetricsServer("stall") as server:
        endpoint = await scraped(server, timeout=0.05, until=lambda ep: ep.failing_since is not None)
        assert "TimeoutError" in endpoint.last_error
    async with RawMetricsServer("garbage") as server:
        endpoint = await scraped(server, until=lambda ep: ep.failing_since is not None)
        assert "ProtocolError" in endpoint.last_error


async def test_scraper_under_uvloop() -> None:
    """The picker runs on uvloop, whose transports differ from asyncio's: scrape there too."""
    import uvloop

    async def scrape_once() -> float:
        async with RawMetricsServer() as server:
            endpoint = await scraped(server, until=lambda ep: ep.scrape_generation >= 2)
            assert endpoint.metrics is not None
            return endpoint.metrics.waiting

    assert await asyncio.to_thread(lambda: uvloop.run(scrape_once())) >= 2
