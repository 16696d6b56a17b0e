import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from inferplane.server.config import ServerConfig
from inferplane.server.engine import (
    EngineError,
    EngineOutput,
    EngineRequest,
    SamplingParams,
)
from inferplane.sim.engine import SimEngine, create_engine

FAST = 0.01  # 100x faster than the modelled H100


def config(**fields: Any) -> ServerConfig:
    sim = {"time_scale": FAST, **fields.pop("sim", {})}
    return ServerConfig(engine="sim", sim=sim, **fields)


@pytest.fixture
async def engine() -> AsyncIterator[SimEngine]:
    engine = create_engine(config())
    await engine.start()
    yield engine
    await engine.stop()


def chat_prompt(engine: SimEngine, text: str) -> list[int]:
    rendered = engine.apply_chat_template([{"role": "user", "content": text}])
    return engine.tokenize(rendered, add_special_tokens=False)


async def collect(engine: SimEngine, request: EngineRequest) -> list[EngineOutput]:
    return [output async for output in engine.generate(request)]


def request(request_id: str, prompt: list[int], max_tokens: int = 16, **params: Any) -> EngineRequest:
    return EngineRequest(request_id, prompt, SamplingParams(max_tokens=max_tokens, **params))


async def test_streams_tokens_and_reuses_the_prefix_cache(engine: SimEngine) -> None:
    prompt = chat_prompt(engine, "Explain prefix caching in a few words. " * 20)
    first = await collect(engine, request("a", prompt, ignore_eos=True))
    assert sum(len(o.new_token_ids) for o in first) == 16
    assert first[-1].finished and first[-1].finish_reason == "length"
    assert all(not o.finished for o in first[:-1])
    assert first[-1].num_cached_tokens == 0
    text = engine.detokenize([t for o in first for t in o.new_token_ids])
    assert len(text.split()) >= 8

    second = await collect(engine, request("b", prompt, ignore_eos=True))
    cached = second[-1].num_cached_tokens
    assert cached > 0 and cached % 16 == 0 and cached >= len(prompt) - 16
    stats = engine.stats()
    assert stats.prefix_cache_hits == cached
    assert stats.prefix_cache_queries == 2 * len(prompt)
    assert stats.num_requests_running == 0 and stats.num_requests_waiting == 0
    assert stats.kv_cache_usage == 0.0
    assert stats.block_size == 16 and stats.num_gpu_blocks == 27_200


async def test_model_ends_with_eos_after_the_drawn_length() -> None:
    engine = create_engine(config(sim={"output_length": {"distribution": "fixed", "mean": 5}}))
    await engine.start()
    try:
        outputs = await collect(engine, request("eos", chat_prompt(engine, "Hi"), max_tokens=50))
        tokens = [t for o in outputs for t in o.new_token_ids]
        assert len(tokens) == 5 and tokens[-1] in engine.eos_token_ids
        assert outputs[-1].finish_reason == "stop"
        assert not engine.detokenize(tokens).endswith(">")  # EOS is not rendered
        ignored = await collect(engine, request("more", chat_prompt(engine, "Hi"), max_tokens=9, ignore_eos=True))
        assert sum(len(o.new_token_ids) for o in ignored) == 9
    finally:
        await engine.stop()


async def test_stop_token_ids_end_generation(engine: SimEngine) -> None:
    prompt = chat_prompt(engine, "Say something")
    probe = await collect(engine, request("probe", prompt, max_tokens=6, temperature=0.0, ignore_eos=True))
    tokens = [t for o in probe for t in o.new_token_ids]
    stop_at = tokens[3]
    first_index = tokens.index(stop_at)
    outputs = await collect(
        engine, request("stop", prompt, max_tokens=6, temperature=0.0, ignore_eos=True, stop_token_ids=[stop_at])
    )
    got = [t for o in outputs for t in o.new_token_ids]
    assert got == tokens[: first_index + 1]
    assert outputs[-1].finish_reason == "stop"


async def test_concurrent_requests_share_engine_steps(engine: SimEngine) -> None:
    prompts = [chat_prompt(engine, f"Question number {i} about routing") for i in range(8)]
    results = await asyncio.gather(
        *(collect(engine, request(f"c{i}", p, max_tokens=20, ignore_eos=True)) for i, p in enumerate(prompts))
    )
    assert all(sum(len(o.new_token_ids) for o in outputs) == 20 for outputs in results)
    # 160 tokens came out of far fewer steps than 160: requests were batched.
    assert engine.stats().extra["engine_steps"] < 60


async def test_closing_the_stream_aborts_and_frees_blocks(engine: SimEngine) -> None:
    stream = engine.generate(
        request("gone", chat_prompt(engine, "A long answer please"), max_tokens=5000, ignore_eos=True)
    )
    first = await stream.__anext__()
    assert first.new_token_ids
    assert engine.stats().num_requests_running == 1 and engine.stats().kv_cache_usage > 0
    await stream.aclose()  # type: ignore[attr-defined]
    stats = engine.stats()
    assert stats.num_requests_running == 0 and stats.kv_cache_usage == 0.0


async def test_cancelling_the_consumer_aborts(engine: SimEngine) -> None:
    started = asyncio.Event()

    async def consume() -> None:
        async for _ in engine.generate(
            request("cancel", chat_prompt(engine, "Go on"), max_tokens=5000, ignore_eos=True)
        ):
            started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), timeout=30)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    stats = engine.stats()
    assert stats.num_requests_running == 0 and stats.num_requests_waiting == 0 and stats.kv_cache_usage == 0.0


async def test_stop_aborts_streams_in_flight() -> None:
    engine = create_engine(config())
    await engine.start()
    stream = engine.generate(request("long", chat_prompt(engine, "Tell a story"), max_tokens=5000, ignore_eos=True))
    await stream.__anext__()
    await engine.stop()
    rest = [output async for output in stream]
    assert rest[-1].finished and rest[-1].finish_reason == "abort"


async def test_stop_ends_requests_still_in_the_api_server_delay() -> None:
    engine = create_engine(config(sim={"cost": {"request_overhead_s": 3000.0}}))  # 30 s at FAST
    await engine.start()
    task = asyncio.create_task(collect(engine, request("slow", chat_prompt(engine, "Hi"), max_tokens=3)))
    for _ in range(100):  # let the request reach its delay
        await asyncio.sleep(0)
    assert engine.stats().num_requests_waiting == 0  # not scheduled yet
    await engine.stop()
    outputs = await asyncio.wait_for(task, timeout=10)
    assert outputs[-1].finish_reason == "abort" and outputs[-1].new_token_ids == []


async def test_requests_that_cannot_fit_are_refused(engine: SimEngine) -> None:
    with pytest.raises(EngineError, match="maximum context length is 32768") as error:
        await collect(engine, request("huge", [5] * 32_000, max_tokens=1000))
    assert error.value.status == 400
    with pytest.raises(EngineError, match="max_tokens"):
        await collect(engine, request("zero", [5, 6], max_tokens=0))


async def test_idle_engine_does_no_steps(engine: SimEngine) -> None:
    await collect(engine, request("one", chat_prompt(engine, "Hi"), max_tokens=3, ignore_eos=True))
    steps = engine.stats().extra["engine_steps"]
    await asyncio.sleep(0.05)
    assert engine.stats().extra["engine_steps"] == steps


def test_user_settings_override_the_preset() -> None:
    engine = create_engine(
        config(
            max_num_seqs=4,
            max_num_batched_tokens=256,
            num_blocks=500,
            max_model_len=4096,
            sim={"preset": "qwen3-32b-tp2-h100", "cost": {"step_base_s": 0.02}},
        )
    )
    spec = engine.replica.spec
    assert (spec.max_num_seqs, spec.max_num_batched_tokens, spec.num_blocks, spec.max_model_len) == (4, 256, 500, 4096)
    assert spec.cost.step_base_s == 0.02 and spec.cost.prefill_per_token_s == 0.0001
    assert spec.block_size == 16  # the server's default (32) was not set by the user: preset wins
    assert engine.eos_token_ids == {
        engine.tokenizer.special_ids["<|im_end|>"],
        engine.tokenizer.special_ids["<|endoftext|>"],
    }

    defaults = create_engine(config()).replica.spec
    assert (defaults.max_num_seqs, defaults.max_num_batched_tokens, defaults.num_blocks) == (1024, 8192, 27_200)


def test_kv_cache_too_small_for_max_model_len_is_a_config_error() -> None:
    with pytest.raises(ValueError, match="larger than the KV cache"):
        create_engine(config(num_blocks=10, max_model_len=4096))


async def test_priority_policy_lets_urgent_work_preempt_filler_work() -> None:
    """One batch slot held by a long low-priority request; an urgent request preempts it at once and
    finishes first, then the preempted one resumes ahead of the later low-priority request."""
    engine = create_engine(config(scheduling_policy="priority", max_num_seqs=1))
    await engine.start()
    try:
        finished: list[str] = []

        async def run(request_id: str, priority: int, max_tokens: int) -> None:
            req = EngineRequest(
                request_id,
                chat_prompt(engine, f"request {request_id}"),
                SamplingParams(max_tokens=max_tokens, ignore_eos=True),
                priority=priority,
            )
            await collect(engine, req)
            finished.append(request_id)

        first = asyncio.create_task(run("batch-1", 10, 40))
        while engine.stats().num_requests_running == 0:
            await asyncio.sleep(0.001)
        rest = [asyncio.create_task(run("batch-2", 10, 5)), asyncio.create_task(run("critical", -5, 5))]
        await asyncio.gather(first, *rest)
        assert finished == ["critical", "batch-1", "batch-2"]
        assert engine.stats().num_preemptions >= 1
    finally:
        await engine.stop()
