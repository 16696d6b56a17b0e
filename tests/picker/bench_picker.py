"""Microbenchmarks of the picker (not collected by pytest; run ``python tests/picker/bench_picker.py``).

1. scheduling latency with the default profile over 100 endpoints, in-process;
2. ext_proc throughput and the picker process's CPU per request, through a real gRPC channel to
   ``python -m inferplane picker`` scraping 4 fake model servers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

sys.path.insert(0, str(Path(__file__).parent))


def bench_scheduling(endpoints: int, requests: int, prompt_chars: int) -> None:
    from inferplane.picker.config import PickerConfig
    from inferplane.picker.endpoints import Datastore, EndpointMetrics
    from inferplane.picker.metrics import PickerMetrics
    from inferplane.picker.request import from_headers, parse_body
    from inferplane.picker.scheduling.profile import build_scheduler

    random.seed(1)
    datastore = Datastore(staleness=1e9)
    datastore.set_addresses([f"10.0.{i // 250}.{i % 250}:8000" for i in range(endpoints)])
    for ep in datastore.all():
        datastore.record_scrape(ep, EndpointMetrics(waiting=random.randint(0, 5), kv_cache_usage=random.random()))
    scheduler = build_scheduler(PickerConfig(), datastore, PickerMetrics())
    groups = [f"system prompt of group {g} " * (prompt_chars // 25) for g in range(50)]
    bodies = [
        orjson.dumps({"model": "m", "messages": [{"role": "system", "content": random.choice(groups)},
                                                  {"role": "user", "content": f"question {i}"}]})
        for i in range(requests)
    ]
    parse_times, schedule_times = [], []
    for body in bodies:
        t0 = time.process_time()
        request = from_headers({":path": "/v1/chat/completions"})
        parse_body(request, body)
        t1 = time.process_time()
        picked = scheduler.schedule(request)
        t2 = time.process_time()
        picked[0].in_flight += 1
        if random.random() < 0.5:  # keep in-flight counts moving
            random.choice(datastore.all()).in_flight = 0
        parse_times.append(t1 - t0)
        schedule_times.append(t2 - t1)

    def q(values: list[float], p: float) -> float:
        return sorted(values)[int(p * (len(values) - 1))] * 1e3

    print(f"scheduling (CPU time per call; the machine is shared), {endpoints} endpoints, ~{prompt_chars}-char prompts, {requests} requests: "
          f"parse p50 {q(parse_times, .5):.3f} ms; schedule p50 {q(schedule_times, .5):.3f} ms, "
          f"p90 {q(schedule_times, .9):.3f} ms, p99 {q(schedule_times, .99):.3f} ms")


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def bench_extproc(requests: int, concurrency: int, sse_chunks: int, extra_yaml: str = "") -> None:
    import grpc
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
    from grpc_health.v1 import health_pb2, health_pb2_grpc
    from picker_support import serve_fake_model_server

    async with serve_fake_model_server() as a, serve_fake_model_server() as b, \
            serve_fake_model_server() as c, serve_fake_model_server() as d:
        endpoints = [s.address for s in (a, b, c, d)]
        with tempfile.TemporaryDirectory() as tmp:
            config = Path(tmp) / "p.yaml"
            config.write_text(
                "picker:\n  grpc_port: 19402\n  health_port: 19403\n  metrics_port: 19490\n"
                f"  endpoints: {endpoints}\n{extra_yaml}"
            )
            profile = ["-m", "cProfile", "-o", os.environ["PICKER_PROFILE"]] if os.environ.get("PICKER_PROFILE") else []
            command = [sys.executable, *profile, "-m", "inferplane", "picker", "--config", str(config)]
            process = subprocess.Popen(  # noqa: ASYNC220 (started once, before the measurement)
                command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
            )
            try:
                async with grpc.aio.insecure_channel("127.0.0.1:19403") as health:
                    stub = health_pb2_grpc.HealthStub(health)
                    for _ in range(300):
                        try:
                            reply = await stub.Check(health_pb2.HealthCheckRequest(service="readiness"))
                            if reply.status == health_pb2.HealthCheckResponse.SERVING:
                                break
                        except grpc.aio.AioRpcError:
                            pass
                        await asyncio.sleep(0.1)
                await run_load(pb, pb_grpc, base_pb2, process.pid, requests, concurrency, sse_chunks)
            finally:
                process.terminate()
                process.wait(timeout=30)


async def run_load(pb, pb_grpc, base_pb2, pid: int, requests: int, concurrency: int, sse_chunks: int) -> None:
    import grpc

    def hv(k: str, v: str):
        return base_pb2.HeaderValue(key=k, raw_value=v.encode())

    headers = pb.ProcessingRequest(request_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
        hv(":method", "POST"), hv(":path", "/v1/chat/completions"), hv("content-type", "application/json")])))
    system = "You are a helpful assistant. " * 40
    chunk = b'data: {"object":"chat.completion.chunk","choices":[{"delta":{"content":"tok"}}]}\n\n'
    resp_headers = pb.ProcessingRequest(response_headers=pb.HttpHeaders(headers=base_pb2.HeaderMap(headers=[
        hv(":status", "200"), hv("content-type", "text/event-stream")])))
    latencies: list[float] = []
    counter = iter(range(requests))

    async with grpc.aio.insecure_channel("127.0.0.1:19402") as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)

        async def one(i: int) -> None:
            body = orjson.dumps({"model": "m", "stream": True, "messages": [
                {"role": "system", "content": system}, {"role": "user", "content": f"q{i}"}]})
            t0 = time.perf_counter()
            call = stub.Process()
            await call.write(headers)
            await call.write(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)))
            await call.read()
            await call.read()
            latencies.append(time.perf_counter() - t0)  # routing decision received
            await call.write(resp_headers)
            await call.read()
            for k in range(sse_chunks):
                await call.write(pb.ProcessingRequest(response_body=pb.HttpBody(body=chunk, end_of_stream=k == sse_chunks - 1)))
                await call.read()
            await call.done_writing()
            await call.read()

        async def worker() -> None:
            for i in counter:
                await one(i)

        cpu0, t0 = cpu_seconds(pid), time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        cpu1, elapsed = cpu_seconds(pid), time.perf_counter() - t0
    ms = sorted(x * 1e3 for x in latencies)
    print(f"ext_proc, {requests} streamed requests ({sse_chunks} SSE chunks each), {concurrency} concurrent: "
          f"{requests / elapsed:.0f} req/s, picker CPU {1e3 * (cpu1 - cpu0) / requests:.2f} ms/request, "
          f"routing latency p50 {statistics.median(ms):.2f} ms p99 {ms[int(.99 * (len(ms) - 1))]:.2f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--prompt-chars", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--sse-chunks", type=int, default=0)
    parser.add_argument("--skip-extproc", action="store_true")
    parser.add_argument("--flow-control", action="store_true", help="run the picker with flow control on")
    args = parser.parse_args()
    bench_scheduling(args.endpoints, args.requests, args.prompt_chars)
    if not args.skip_extproc:
        extra = "  flow_control: {enabled: true}\n" if args.flow_control else ""
        asyncio.run(bench_extproc(args.requests, args.concurrency, args.sse_chunks, extra))


if __name__ == "__main__":
    main()
