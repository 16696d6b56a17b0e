import asyncio
import socket

import zmq

from inferplane.server.config import ServerConfig
from inferplane.server.engine import EngineRequest, SamplingParams
from inferplane.sim.engine import create_engine
from inferplane.sim.kv_cache import CacheEvent, hash_prompt_blocks
from inferplane.sim.kv_events import decode_event_batch, encode_event_batch


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_batch_layout_matches_vllm() -> None:
    events = [
        CacheEvent("stored", [11, 12], None, list(range(32)), "adapter"),
        CacheEvent("removed", [7]),
        CacheEvent("cleared", []),
    ]
    ts, wire, rank = decode_event_batch(encode_event_batch(events, 16, ts=123.5))
    assert (ts, rank) == (123.5, 0)
    assert wire == [
        ["BlockStored", [11, 12], None, list(range(32)), 16, None, "GPU", "adapter"],
        ["BlockRemoved", [7], "GPU"],
        ["AllBlocksCleared"],
    ]


async def test_engine_publishes_stored_blocks_over_zmq() -> None:
    port = free_port()
    config = ServerConfig(
        engine="sim",
        sim={"time_scale": 0.01, "kv_events": {"enabled": True, "endpoint": f"tcp://*:{port}", "topic": "kv"}},
    )
    engine = create_engine(config)
    await engine.start()
    subscriber = zmq.Context.instance().socket(zmq.SUB)
    subscriber.connect(f"tcp://127.0.0.1:{port}")
    subscriber.setsockopt(zmq.SUBSCRIBE, b"kv")
    try:
        # PUB/SUB drops messages sent before the subscription reaches the publisher: send
        # requests with fresh prompts until one of their batches arrives (bounded).
        for attempt in range(50):
            prompt = [1000 + attempt] * 40
            async for _ in engine.generate(EngineRequest(f"r{attempt}", prompt, SamplingParams(max_tokens=2))):
                pass
            await asyncio.sleep(0.02)
            if subscriber.poll(timeout=100):
                break
        else:
            raise AssertionError("no KV event batch arrived")
        stored = []
        while subscriber.poll(timeout=200):
            topic, sequence, payload = subscriber.recv_multipart()
            assert topic == b"kv" and len(sequence) == 8
            _, wire, _ = decode_event_batch(payload)
            stored.extend(event for event in wire if event[0] == "BlockStored")
        prompt = [1000 + attempt] * 40
        expected = hash_prompt_blocks(prompt, 16)
        assert any(event[1][:2] == expected and event[3][:32] == prompt[:32] for event in stored)
    finally:
        subscriber.close(linger=0)
        await engine.stop()
