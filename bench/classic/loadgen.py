"""A lean closed-loop HTTP/1.1 load generator: N keep-alive connections, each sending the next
request as soon as the previous answer arrives; latencies per request (stdlib asyncio only)."""

from __future__ import annotations

import asyncio
import time


async def _client(host: str, port: int, request: bytes, stop_at: float, warm_until: float, out: list[float], errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while True:
            started = time.perf_counter()
            if started >= stop_at:
                return
            writer.write(request)
            status_line = await reader.readline()
            length = 0
            while True:
                line = await reader.readline()
                if line in (b"\r\n", b""):
                    break
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            await reader.readexactly(length)
            done = time.perf_counter()
            if b" 200 " not in status_line:
                errors.append(1)
            elif started >= warm_until:
                out.append(done - started)
    finally:
        writer.close()


def run(host: str, port: int, path: str, body: bytes, concurrency: int, seconds: float, warmup: float) -> dict:
    """Throughput (requests/s after warm-up) and latency percentiles in milliseconds."""
    request = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[int] = []

    async def main() -> None:
        now = time.perf_counter()
        await asyncio.gather(
            *(_client(host, port, request, now + warmup + seconds, now + warmup, latencies, errors) for _ in range(concurrency))
        )

    asyncio.run(main())
    latencies.sort()

    def pct(q: float) -> float:
        return round(latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000, 2) if latencies else float("nan")

    return {
        "concurrency": concurrency,
        "requests": len(latencies),
        "errors": len(errors),
        "throughput_rps": round(len(latencies) / seconds, 1),
        "p50_ms": pct(0.50),
        "p90_ms": pct(0.90),
        "p99_ms": pct(0.99),
    }
