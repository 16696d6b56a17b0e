"""``inferplane async run``: the queue-fed async processor."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
from typing import Any


def add_async_parser(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("async", help="async inference from a queue (Redis Streams, Pub/Sub)",
                                   description="Consume {id, created, deadline, payload, metadata} messages, send "
                                   "them through the gateway as sheddable traffic, write {id, status_code, payload, error}.")
    sub = parser.add_subparsers(dest="async_command", metavar="ACTION")
    run = sub.add_parser("run", help="run a processor")
    run.add_argument("--config", metavar="FILE", help="YAML file; settings under its `async` section")
    run.add_argument("--source", help="redis://host:port/0?stream=S&group=G or pubsub://PROJECT/SUBSCRIPTION")
    run.add_argument("--consumer", help="consumer name (unique per worker)")
    run.add_argument("--gateway-url", help="gateway base URL (default http://127.0.0.1:8080)")
    run.add_argument("--metrics-url", help="picker metrics URL for the spare-capacity gate")
    run.add_argument("--metrics-port", type=int, help="serve this processor's /metrics on this port")
    run.set_defaults(func=_run)
    parser.set_defaults(func=lambda args: (parser.print_help(), 2)[1])


def _config(args: argparse.Namespace) -> Any:
    from inferplane.configfile import read_yaml, validate_model
    from inferplane.jobs.config import AsyncConfig

    raw: dict[str, Any] = {}
    if args.config:
        section = read_yaml(args.config).get("async") or {}
        raw = dict(section) if isinstance(section, dict) else {}
    for key in ("source", "consumer", "metrics_url", "metrics_port"):
        if getattr(args, key) is not None:
            raw[key] = getattr(args, key)
    if args.gateway_url:
        raw["dispatch"] = {**(raw.get("dispatch") or {}), "gateway_url": args.gateway_url}
    return validate_model(AsyncConfig, raw, args.config or "the command line")


def build_queue(config: Any) -> Any:
    from inferplane.configfile import ConfigError

    if config.source.startswith(("redis://", "rediss://", "unix://")):
        from inferplane.jobs.redis_queue import RedisQueue

        return RedisQueue(config.source, config.consumer, config.results, config.dead_letter, config.claim_idle_s)
    if config.source.startswith("pubsub://"):
        from inferplane.jobs.pubsub_queue import PubSubQueue

        return PubSubQueue(config.source, config.results, config.dead_letter, lease_s=config.claim_idle_s)
    raise ConfigError(f"source: unsupported queue URL {config.source!r} (redis://… or pubsub://…)")


async def run_processor(config: Any, stop: asyncio.Event) -> None:
    from prometheus_client import start_http_server

    from inferplane.jobs.gate import SaturationGate
    from inferplane.jobs.processor import Processor, ProcessorMetrics
    from inferplane.jobs.sender import Sender

    queue = build_queue(config)
    metrics = ProcessorMetrics()
    if config.metrics_port is not None:
        start_http_server(config.metrics_port, registry=metrics.registry)
    sender = Sender(config.dispatch)
    gate = SaturationGate(config.metrics_url, config.max_saturation, config.gate_poll_s)
    processor = Processor(queue, sender, gate, max_in_flight=config.max_in_flight, max_attempts=config.max_attempts,
                          claim_every_s=max(0.5, config.claim_idle_s / 2), metrics=metrics)
    try:
        await processor.run(stop)
    finally:
        await sender.aclose()
        await gate.aclose()
        await queue.close()


def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        print(f"inferplane async: consuming {config.source} as {config.consumer!r}, "
              f"sending to {config.dispatch.gateway_url}", flush=True)
        await run_processor(config, stop)

    asyncio.run(main())
    return 0
