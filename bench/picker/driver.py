"""Replay a recorded Envoy ↔ picker conversation against a picker, many streams at once.

Each stream writes Envoy's messages in the recorded order and, after each, reads as many answers
as the picker gave at that point of the recording; the request body's ``request 000000`` is
replaced by a counter (same length) so prompts differ. Prints one JSON line: requests completed,
seconds, routing latency (first message → destination answer) percentiles, errors.

Run: ``python bench/picker/driver.py --target 127.0.0.1:9002 --conversation conv.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path

import grpc
from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

sys.path.insert(0, str(Path(__file__).parent))
from capture import load

PLACEHOLDER = b"request 000000"


def plan(conversation: list[tuple[str, bytes]]) -> list[tuple[pb.ProcessingRequest, int]]:
    """Envoy's messages, each with the number of answers read before the next is written."""
    steps: list[tuple[pb.ProcessingRequest, int]] = []
    pending = 0
    for direction, raw in conversation:
        if direction == "in":
            message = pb.ProcessingRequest()
            message.ParseFromString(raw)
            steps.append((message, 0))
        else:
            if not steps:
                pending += 1
                continue
            message, reads = steps[-1]
            steps[-1] = (message, reads + 1)
    if pending:
        raise ValueError("the recording starts with an answer")
    return steps


def with_counter(message: pb.ProcessingRequest, i: int) -> pb.ProcessingRequest:
    if message.WhichOneof("request") != "request_body" or PLACEHOLDER not in message.request_body.body:
        return message
    copy = pb.ProcessingRequest()
    copy.CopyFrom(message)
    copy.request_body.body = message.request_body.body.replace(PLACEHOLDER, b"request %06d" % (i % 1_000_000))
    return copy


async def replay(target: str, steps: list[tuple[pb.ProcessingRequest, int]], concurrency: int,
                 seconds: float) -> dict:
    latencies: list[float] = []
    errors = 0
    counter = 0
    stop = time.monotonic() + seconds
    async with grpc.aio.insecure_channel(target) as channel:
        stub = pb_grpc.ExternalProcessorStub(channel)

        async def one(i: int) -> None:
            call = stub.Process()
            started = time.perf_counter()
            routed = False
            for message, reads in steps:
                await call.write(with_counter(message, i))
                for _ in range(reads):
                    answer = await call.read()
                    if answer is grpc.aio.EOF:
                        raise RuntimeError("the picker ended the stream early")
                    if not routed and answer.WhichOneof("response") == "request_headers":
                        routed = True
                        latencies.append(time.perf_counter() - started)
            await call.done_writing()
            while await call.read() is not grpc.aio.EOF:
                pass

        async def worker() -> None:
            nonlocal counter, errors
            while time.monotonic() < stop:
                counter += 1
                try:  # a stream still open 10 s after the end counts as failed
                    await asyncio.wait_for(one(counter), stop + 10 - time.monotonic())
                except (grpc.aio.AioRpcError, RuntimeError):
                    errors += 1
                except TimeoutError:
                    errors += 1
                    return

        started = time.monotonic()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    ordered = sorted(latencies)

    def pct(p: float) -> float | None:
        return round(ordered[min(len(ordered) - 1, int(p * len(ordered)))] * 1e3, 3) if ordered else None

    return {"requests": len(latencies), "errors": errors, "seconds": round(elapsed, 3),
            "rps": round(len(latencies) / elapsed, 1), "routing_ms_p50": pct(0.5), "routing_ms_p99": pct(0.99)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target", required=True, help="the picker's ext_proc address host:port")
    parser.add_argument("--conversation", type=Path, required=True, help="capture.py's recording")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    steps = plan(load(args.conversation))
    print(json.dumps(asyncio.run(replay(args.target, steps, args.concurrency, args.seconds))), flush=True)


if __name__ == "__main__":
    main()
