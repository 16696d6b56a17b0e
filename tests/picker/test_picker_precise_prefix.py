"""The precise prefix-cache scorer: the KV-event index, the event feed, the subscriber, the scorer,
and two real ``inferplane serve --engine sim`` servers publishing their KV-cache events."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgpack
import pytest
import zmq
from picker_support import wait_until
from platform_runner import wait_healthy

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import Datastore, Endpoint, EndpointMetrics
from inferplane.picker.kv_events import (
    EndpointFeed,
    KVBlockIndex,
    KVEventSubscriber,
    attach_kv_events,
    chain_hashes,
)
from inferplane.picker.prompt_tokens import SimPromptTokenizer, prompt_token_ids
from inferplane.picker.request import InferenceRequest
from inferplane.picker.scheduling import registry
from inferplane.picker.scheduling.plugin import CycleContext
from inferplane.picker.scheduling.precise_prefix import PrecisePrefixCacheScorer
from inferplane.picker.scheduling.prefix import MATCHED_TOKENS_KEY
from inferplane.picker.scheduling.profile import build_scheduler
from inferplane.server.config import ServerConfig
from inferplane.server.generation import chat_prompt_ids
from inferplane.sim.engine import create_engine
from inferplane.sim.kv_cache import CacheEvent, KVCache, KVCacheOwner
from inferplane.sim.kv_events import encode_event_batch

A, B = "10.0.0.1:8000", "10.0.0.2:8000"
BS = 4  # block size of the hand-written events


def tokens(start: int, count: int) -> list[int]:
    return list(range(start, start + count))


def frames(sequence: int, events: list[list[object]]) -> list[bytes]:
    """One ZMQ message as vLLM publishes it."""
    return [b"", sequence.to_bytes(8, "big"), msgpack.packb([1.0, events, 0])]


def stored(hashes: list[object], parent: object, token_ids: list[int], lora: str | None = None,
           medium: str = "GPU") -> list[object]:
    return ["BlockStored", hashes, parent, token_ids, BS, None, medium, lora]


# -- the index -----------------------------------------------------------------------------------


def test_stored_blocks_chain_across_batches_and_match_the_request_hashes() -> None:
    index = KVBlockIndex()
    prompt = tokens(100, 5 * BS)
    index.apply(A, [stored([11, 12], None, prompt[: 2 * BS])])
    index.apply(A, [stored([13, 14, 15], 12, prompt[2 * BS :])])  # parent: the last block of batch one
    hashes = chain_hashes(prompt, BS)
    assert index.matched_blocks(A, hashes) == 5
    assert index.block_size(A) == BS and index.size(A) == 5
    assert index.matched_blocks(B, hashes) == 0  # another endpoint holds nothing
    other = chain_hashes([7, *prompt[1:]], BS)  # differs in the first token: nothing in common
    assert index.matched_blocks(A, other) == 0


def test_removed_blocks_cut_the_prefix_and_cleared_drops_everything() -> None:
    index = KVBlockIndex()
    prompt = tokens(0, 4 * BS)
    index.apply(A, [stored([1, 2, 3, 4], None, prompt)])
    hashes = chain_hashes(prompt, BS)
    index.apply(A, [["BlockRemoved", [3], "GPU"]])
    assert index.matched_blocks(A, hashes) == 2  # the longest *consecutive* prefix
    index.apply(A, [["BlockRemoved", [99], "GPU"]])  # unknown engine hash: ignored
    assert index.size(A) == 3
    index.apply(A, [["AllBlocksCleared"]])
    assert index.matched_blocks(A, hashes) == 0 and index.size(A) == 0


def test_a_block_whose_parent_is_unknown_is_left_out() -> None:
    index = KVBlockIndex()
    prompt = tokens(0, 3 * BS)
    index.apply(A, [stored([2, 3], 1, prompt[BS:])])  # parent 1 was stored before we subscribed
    assert index.size(A) == 0 and index.orphaned_blocks == 2
    assert index.matched_blocks(A, chain_hashes(prompt, BS)) == 0


def test_lora_blocks_only_match_requests_for_that_adapter() -> None:
    index = KVBlockIndex()
    prompt = tokens(0, 2 * BS)
    index.apply(A, [stored([1, 2], None, prompt, lora="sql")])
    assert index.matched_blocks(A, chain_hashes(prompt, BS, "sql")) == 2
    assert index.matched_blocks(A, chain_hashes(prompt, BS)) == 0
    assert index.matched_blocks(A, chain_hashes(prompt, BS, "chat")) == 0


def test_a_block_stays_resident_while_any_medium_holds_it() -> None:
    index = KVBlockIndex()
    prompt = tokens(0, BS)
    hashes = chain_hashes(prompt, BS)
    index.apply(A, [stored([1], None, prompt), stored([1], None, prompt, medium="CPU")])
    index.apply(A, [["BlockRemoved", [1], "GPU"]])
    assert index.matched_blocks(A, hashes) == 1  # offloaded, still reusable
    index.apply(A, [["BlockRemoved", [1], "CPU"]])
    assert index.matched_blocks(A, hashes) == 0


def test_engine_hashes_may_be_bytes_and_memory_is_bounded() -> None:
    index = KVBlockIndex(max_blocks_per_endpoint=3)
    prompt = tokens(0, 5 * BS)
    engine = [bytes([i]) * 32 for i in range(5)]  # vLLM >= 0.11 sends 32-byte hashes
    index.apply(A, [stored(engine, None, prompt)])
    assert index.size(A) == 3  # the oldest two dropped
    index.apply(A, [["BlockRemoved", engine[3:], "GPU"]])
    assert index.size(A) == 1


def test_index_follows_the_simulators_real_kv_cache() -> None:
    """Events of the simulator's paged KV cache (prefix sharing, eviction) keep the index exact."""
    index = KVBlockIndex()
    events: list[CacheEvent] = []
    cache = KVCache(num_blocks=12, block_size=BS, on_event=events.append)

    def run(token_ids: list[int]) -> None:
        owner = KVCacheOwner(token_ids)
        hits = cache.find_cached_prefix(owner, len(token_ids))
        assert cache.allocate(owner, len(hits) * BS, len(token_ids) - len(hits) * BS, hits)
        cache.free(owner)
        batch = encode_event_batch(events, BS)
        events.clear()
        index.apply(A, msgpack.unpackb(batch)[1])

    shared = tokens(0, 6 * BS)
    first, second = [*shared, *tokens(500, 2 * BS)], [*shared, *tokens(900, 2 * BS)]
    run(first)
    run(second)  # shares 6 blocks, stores 2 more
    assert index.matched_blocks(A, chain_hashes(first, BS)) == 8
    assert index.matched_blocks(A, chain_hashes(second, BS)) == 8
    run(tokens(2000, 8 * BS))  # 8 new blocks: evicts 4 LRU ones (first's tail, then second's)
    resident = {h for h in cache.cached}
    assert index.size(A) == len(resident) == 12


# -- the feed: sequence numbers, gaps, reconnects --------------------------------------------------


def test_a_sequence_gap_drops_the_index_then_indexing_resumes() -> None:
    index = KVBlockIndex()
    feed = EndpointFeed(A, index)
    first, second = tokens(0, BS), tokens(50, BS)
    feed.message(frames(7, [stored([1], None, first)]))
    feed.message(frames(8, [stored([2], None, second)]))
    assert index.size(A) == 2 and feed.resets == {}
    feed.message(frames(10, [stored([3], None, tokens(90, BS))]))  # batch 9 was lost
    assert feed.resets == {"gap": 1}
    assert index.size(A) == 1  # only what came after the gap
    assert index.matched_blocks(A, chain_hashes(first, BS)) == 0


def test_a_restarted_publisher_or_a_disconnect_drops_the_index() -> None:
    index = KVBlockIndex()
    feed = EndpointFeed(A, index)
    feed.message(frames(41, [stored([1], None, tokens(0, BS))]))
    feed.message(frames(0, [stored([5], None, tokens(8, BS))]))  # the server restarted: numbering anew
    assert feed.resets == {"restart": 1} and index.size(A) == 1
    feed.disconnected()
    assert index.size(A) == 0
    feed.message(frames(9, [stored([6], None, tokens(16, BS))]))  # after reconnecting: a new baseline
    assert feed.resets == {"restart": 1, "disconnected": 1} and index.size(A) == 1


def test_malformed_and_undecodable_messages_drop_the_index() -> None:
    index = KVBlockIndex()
    feed = EndpointFeed(A, index)
    feed.message(frames(1, [stored([1], None, tokens(0, BS))]))
    feed.message([b"", b"\x00"])
    assert feed.resets == {"malformed": 1} and index.size(A) == 0
    feed.message(frames(2, [stored([1], None, tokens(0, BS))]))
    feed.message([b"", (3).to_bytes(8, "big"), b"\xc1not msgpack"])
    assert feed.resets == {"malformed": 1, "undecodable": 1} and index.size(A) == 0
    feed.message(frames(4, [["BlockStored", [1], None, [1, 2, 3, 4], "four", None, "GPU", None]]))
    assert feed.resets["undecodable"] == 2  # nonsense fields: the index is dropped, the feed goes on
    feed.message(frames(5, [stored([1], None, tokens(0, BS))]))
    assert index.size(A) == 1


# -- tokenization as the server does it --------------------------------------------------------------


async def test_prompt_tokens_match_the_simulator_servers() -> None:
    engine = create_engine(ServerConfig(engine="sim"))  # the server's own engine (not started)
    tokenizer = SimPromptTokenizer("llama3")
    messages = [
        {"role": "developer", "content": "Be brief."},
        {"role": "user", "content": [{"type": "text", "text": "Why "}, {"type": "text", "text": "cache?"}]},
    ]
    server_side = await chat_prompt_ids(engine, [{"role": "system", "content": "Be brief."},
                                                 {"role": "user", "content": "Why cache?"}], True)
    assert prompt_token_ids(tokenizer, {"model": "m", "messages": messages}) == server_side
    assert prompt_token_ids(tokenizer, {"prompt": "Hello there"}) == engine.tokenize("Hello there", True)
    assert prompt_token_ids(tokenizer, {"prompt": "Hi", "add_special_tokens": False}) == engine.tokenize("Hi", False)
    assert prompt_token_ids(tokenizer, {"prompt": [5, 6, 7]}) == [5, 6, 7]
    assert prompt_token_ids(tokenizer, {"prompt": [[1, 2], [3]]}) == [1, 2]
    assert prompt_token_ids(tokenizer, {"input": "embed me"}) is None
    long_chat = {"messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": "Hi " * 300}]}
    for _ in range(2):  # long pieces are remembered: the second call reads them back
        assert prompt_token_ids(tokenizer, long_chat) == await chat_prompt_ids(engine, long_chat["messages"], True)
    long_prompt = "The cache " * 100
    assert prompt_token_ids(tokenizer, {"prompt": long_prompt}) == engine.tokenize(long_prompt, True)
    assert prompt_token_ids(tokenizer, None) is None


# -- the scorer ----------------------------------------------------------------------------------------


def endpoint(address: str, models: frozenset[str] = frozenset({"m"})) -> Endpoint:
    return Endpoint(address, metrics=EndpointMetrics(models=models))


def request(body: dict[str, object], model: str = "m") -> InferenceRequest:
    body = {"model": model, **body}
    return InferenceRequest("r", path="/v1/completions", model=model, body=body)


def scorer(**parameters: object) -> PrecisePrefixCacheScorer:
    built = registry.build("scorer", "precise-prefix-cache-scorer", parameters=parameters)
    assert isinstance(built, PrecisePrefixCacheScorer)
    return built


def test_score_is_the_share_of_leading_blocks_resident() -> None:
    s = scorer(block_size=BS, full_score_blocks=1, speculative_ttl_s=0)
    prompt = tokens(1000, 10 * BS + 2)  # 10 full blocks and a partial one
    s.index.apply(A, [stored(list(range(4)), None, prompt[: 4 * BS])])
    eps = [endpoint(A), endpoint(B)]
    req = request({"prompt": prompt})
    assert s.score(CycleContext(req, 0.0, 1.0), eps) == [0.4, 0.0]
    assert req.state[MATCHED_TOKENS_KEY] == {A: 4 * BS}  # what the prefill-backlog scorer reads
    unrelated = request({"prompt": tokens(5000, 10 * BS)})
    assert s.score(CycleContext(unrelated, 0.0, 1.0), eps) == [0.0, 0.0]


def test_the_prefill_backlog_scorer_reads_exact_token_counts() -> None:
    s = scorer(block_size=BS, speculative_ttl_s=0)
    backlog = registry.build("scorer", "prefill-backlog-scorer")
    prompt = tokens(0, 10 * BS)
    s.index.apply(A, [stored(list(range(6)), None, prompt[: 6 * BS])])
    req = request({"prompt": prompt})
    ctx = CycleContext(req, 0.0, 1.0)
    s.score(ctx, [endpoint(A), endpoint(B)])
    assert backlog.costs(ctx, [endpoint(A), endpoint(B)]) == [4 * BS, 10 * BS]  # uncached tokens, exactly


def test_short_prompts_score_over_full_score_blocks() -> None:
    s = scorer(block_size=BS, full_score_blocks=8, speculative_ttl_s=0)
    prompt = tokens(0, 2 * BS)
    s.index.apply(A, [stored([1, 2], None, prompt)])
    assert s.score(CycleContext(request({"prompt": prompt}), 0.0, 1.0), [endpoint(A)]) == [2 / 8]


def test_the_block_size_comes_from_the_endpoints_events() -> None:
    s = scorer(block_size=16, full_score_blocks=1, speculative_ttl_s=0)  # the default would be wrong
    prompt = tokens(0, 4 * BS)
    s.index.apply(A, [stored([1, 2, 3, 4], None, prompt)])
    assert s.score(CycleContext(request({"prompt": prompt}), 0.0, 1.0), [endpoint(A)]) == [1.0]


def test_adapter_requests_match_adapter_blocks_only() -> None:
    s = scorer(block_size=BS, full_score_blocks=1, speculative_ttl_s=0)
    prompt = tokens(0, 2 * BS)
    s.index.apply(A, [stored([1, 2], None, prompt, lora="sql")])
    s.index.apply(B, [stored([1, 2], None, prompt)])
    eps = [endpoint(A), endpoint(B)]
    assert s.score(CycleContext(request({"prompt": prompt}, model="sql"), 0.0, 1.0), eps) == [1.0, 0.0]
    assert s.score(CycleContext(request({"prompt": prompt}, model="m"), 0.0, 1.0), eps) == [0.0, 1.0]


def test_routed_blocks_count_until_events_confirm_them_or_they_expire() -> None:
    s = scorer(block_size=BS, full_score_blocks=1, speculative_ttl_s=10)
    prompt = tokens(0, 4 * BS)
    eps = [endpoint(A), endpoint(B)]
    first = request({"prompt": prompt})
    ctx = CycleContext(first, 100.0, 1.0)
    assert s.score(ctx, eps) == [0.0, 0.0]  # no index anywhere yet
    s.on_picked(ctx, eps[1])  # routed to B: its blocks are credited there at once
    assert s.score(CycleContext(request({"prompt": prompt}), 105.0, 1.0), eps) == [0.0, 1.0]
    assert s.score(CycleContext(request({"prompt": prompt}), 110.0, 1.0), eps) == [0.0, 0.0]  # expired

    s.on_picked(CycleContext(request({"prompt": prompt}), 200.0, 1.0), eps[1])
    s.index.apply(B, [stored([1, 2, 3, 4], None, prompt)])  # B prefilled it: confirmed
    assert s.speculative.size() == 0
    s.index.apply(B, [["BlockRemoved", [3, 4], "GPU"]])  # evicted: the score follows at once
    assert s.score(CycleContext(request({"prompt": prompt}), 201.0, 1.0), eps) == [0.0, 0.5]


def test_without_speculation_an_unknown_index_scores_zero() -> None:
    s = scorer(block_size=BS, speculative_ttl_s=0)
    ctx = CycleContext(request({"prompt": tokens(0, 4 * BS)}), 0.0, 1.0)
    s.on_picked(ctx, endpoint(A))
    assert s.score(CycleContext(request({"prompt": tokens(0, 4 * BS)}), 0.0, 1.0), [endpoint(A)]) == [0.0]


def test_bodiless_requests_score_zero() -> None:
    s = scorer()
    req = InferenceRequest("r", method="GET", path="/v1/models")
    assert s.score(CycleContext(req, 0.0, 1.0), [endpoint(A), endpoint(B)]) == [0.0, 0.0]


# -- configuration and wiring ----------------------------------------------------------------------------


def precise_profile(**kv_events: object) -> PickerConfig:
    return PickerConfig(
        grpc_port=0, health_port=0, metrics_port=0,
        profile={"filters": [], "scorers": [{"type": "queue-scorer", "weight": 1},
                                            {"type": "precise-prefix-cache-scorer", "weight": 3}]},
        kv_events=kv_events,
    )


def test_config_errors_name_the_field() -> None:
    with pytest.raises(ValueError, match=r"kv_events\.addresses") as error:
        precise_profile(addresses={A: "10.0.0.1:5557"})
    assert "not a ZMQ address" in str(error.value)
    with pytest.raises(ValueError, match="parameters.tokenizer: .*path is required"):
        PickerConfig(profile={"scorers": [{"type": "precise-prefix-cache-scorer",
                                           "parameters": {"tokenizer": {"kind": "huggingface"}}}]})
    with pytest.raises(ValueError, match=r"kv_events\.port"):
        precise_profile(port=0)


def test_the_subscriber_exists_only_for_a_profile_with_the_scorer() -> None:
    assert attach_kv_events(PickerConfig(), Datastore(), build_scheduler(PickerConfig(), Datastore())) is None
    config = precise_profile(port=6000, addresses={B: "ipc:///tmp/b.sock"})
    datastore = Datastore()
    scheduler = build_scheduler(config, datastore)
    subscriber = attach_kv_events(config, datastore, scheduler)
    assert subscriber is not None
    precise = [s for s, _ in scheduler.scorers if isinstance(s, PrecisePrefixCacheScorer)]
    assert precise[0].index is subscriber.index
    assert subscriber.zmq_address(A) == "tcp://10.0.0.1:6000"
    assert subscriber.zmq_address(B) == "ipc:///tmp/b.sock"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_subscriber_follows_the_endpoint_list_and_drops_a_disconnected_index() -> None:
    port = free_port()
    publisher = zmq.Context.instance().socket(zmq.PUB)
    publisher.bind(f"tcp://127.0.0.1:{port}")
    datastore = Datastore()
    datastore.set_addresses([A])
    index = KVBlockIndex()
    config = precise_profile(addresses={A: f"tcp://127.0.0.1:{port}"}).kv_events
    subscriber = KVEventSubscriber(index, datastore, config)
    subscriber.start()
    try:
        prompt = tokens(0, 2 * BS)
        sequence = 0

        def publish() -> bool:  # PUB drops messages until the subscription arrives: repeat
            nonlocal sequence
            publisher.send_multipart(frames(sequence, [stored([sequence], None, prompt)]))
            sequence += 1
            return index.size(A) > 0

        await wait_until(publish, step=0.02)
        assert index.matched_blocks(A, chain_hashes(prompt, BS)) == 1  # engine hashes 0.. all hold block one
        publisher.close(linger=0)  # the server goes away
        await wait_until(lambda: index.size(A) == 0)
        assert subscriber.feeds[A].resets.get("disconnected") == 1

        datastore.set_addresses([])
        subscriber.sync()
        assert A not in subscriber.feeds and not subscriber._tasks
    finally:
        await subscriber.close()
        publisher.close(linger=0)


# -- two real simulator servers ----------------------------------------------------------------------------

SYSTEM = (
    "You are the support assistant of a company that runs an inference platform. Answer questions "
    "about routing, prefix caching, KV-cache memory, batching and autoscaling with short, precise "
    "explanations, and give one example for every answer. Never invent numbers; say when you do not know. "
) * 5  # about 300 tokens: 19 blocks of 16


@pytest.fixture(scope="module")
def sim_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[str, int]]]:
    """Two ``inferplane serve --engine sim`` processes publishing KV events: [(address, events port)]."""
    directory = tmp_path_factory.mktemp("precise")
    processes: list[subprocess.Popen[str]] = []
    servers: list[tuple[str, int]] = []
    try:
        for i in range(2):
            port, events = free_port(), free_port()
            config = Path(directory / f"server{i}.yaml")
            config.write_text(
                "server:\n  engine: sim\n  served_model_name: m\n  warmup: false\n"
                f"  sim:\n    time_scale: 0.01\n    kv_events:\n      enabled: true\n"
                f"      endpoint: tcp://*:{events}\n"  # bound (a host name would connect)
            )
            processes.append(subprocess.Popen(
                [sys.executable, "-m", "inferplane", "serve", "--config", str(config), "--port", str(port)],
                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            ))
            servers.append((f"127.0.0.1:{port}", events))
        for (address, _), process in zip(servers, processes, strict=True):
            wait_healthy(f"http://{address}/health", process)
        yield servers
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def chat(question: str, system: str = SYSTEM) -> dict[str, object]:
    return {"model": "m", "max_tokens": 2,
            "messages": [{"role": "system", "content": system}, {"role": "user", "content": question}]}


@pytest.mark.integration
async def test_the_scorer_prefers_the_server_whose_events_show_the_prefix(
    sim_servers: list[tuple[str, int]],
) -> None:
    (first, first_events), (second, second_events) = sim_servers
    config = precise_profile(addresses={first: f"tcp://127.0.0.1:{first_events}",
                                        second: f"tcp://127.0.0.1:{second_events}"})
    config = config.model_copy(update={"endpoints": [first, second], "scrape_interval": 0.05})
    from inferplane.picker.server import PickerServer

    picker = PickerServer(config)
    await picker.start()
    try:
        assert picker.kv_events is not None
        feeds = picker.kv_events.feeds
        async with httpx.AsyncClient(timeout=30) as client:
            # PUB/SUB drops what is published before the subscription arrives: warm both streams up
            for attempt in range(100):
                waiting = [a for a in (first, second) if feeds[a].batches == 0]
                if not waiting:
                    break
                for address in waiting:
                    body = {"model": "m", "prompt": f"warm up {attempt} " * 20, "max_tokens": 1}
                    await client.post(f"http://{address}/v1/completions", json=body)
                await asyncio.sleep(0.05)
            assert all(feed.batches for feed in feeds.values()), "no KV events arrived"

            reply = await client.post(f"http://{first}/v1/chat/completions", json=chat("What is a KV block?"))
            assert reply.status_code == 200
        await wait_until(lambda: len(picker.datastore.ready()) == 2)

        (precise,) = [s for s, _ in picker.scheduler.scorers if isinstance(s, PrecisePrefixCacheScorer)]
        endpoints = sorted(picker.datastore.ready(), key=lambda ep: ep.address != first)
        shared = InferenceRequest("shared", path="/v1/chat/completions", model="m",
                                  body=chat("How does prefix caching help?"))
        await wait_until(lambda: precise.score(CycleContext(shared, 0.0, 1.0), endpoints)[0] > 0)
        scores = precise.score(CycleContext(shared, 0.0, 1.0), endpoints)
        assert scores[0] > 0.5 and scores[1] == 0.0
        assert picker.scheduler.schedule(shared)[0].address == first

        unrelated = InferenceRequest("unrelated", path="/v1/chat/completions", model="m",
                                     body=chat("What is a KV block?", system="Answer in French, tersely. " * 12))
        assert precise.score(CycleContext(unrelated, 0.0, 1.0), endpoints) == [0.0, 0.0]
    finally:
        await picker.stop(grace=0)
