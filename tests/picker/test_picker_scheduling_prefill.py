"""The prefill-backlog scorer and the scheduler's response-started hook, on hand-made endpoints."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import Datastore, Endpoint, EndpointMetrics
from inferplane.picker.request import InferenceRequest
from inferplane.picker.scheduling import registry
from inferplane.picker.scheduling.plugin import CycleContext
from inferplane.picker.scheduling.prefill import (
    PrefillBacklogParameters,
    PrefillBacklogScorer,
)
from inferplane.picker.scheduling.prefix import MATCHED_TOKENS_KEY, PrefixCacheScorer
from inferplane.picker.scheduling.profile import build_scheduler

NOW = 1000.0
ADDRESSES = ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.3:8000"]


def endpoints() -> list[Endpoint]:
    return [Endpoint(a, EndpointMetrics(), updated_at=NOW) for a in ADDRESSES]


def cycle(prompt: str, matched: dict[str, int] | None = None) -> CycleContext:
    request = InferenceRequest("r", model="m", prompt=prompt)
    if matched is not None:
        request.state[MATCHED_TOKENS_KEY] = matched
    return CycleContext(request, NOW, 0.2)


def scorer(**parameters: float) -> PrefillBacklogScorer:
    return PrefillBacklogScorer(parameters=PrefillBacklogParameters(**parameters))


def test_an_idle_pool_scores_every_endpoint_alike() -> None:
    assert scorer().score(cycle("x" * 400), endpoints()) == [1.0, 1.0, 1.0]


def test_uncached_tokens_lower_the_score_of_the_endpoints_without_the_prefix() -> None:
    # 400 characters = 100 tokens at 4 a token; endpoint 1 holds 80 of them, endpoint 2 40
    ctx = cycle("x" * 400, {ADDRESSES[0]: 80, ADDRESSES[1]: 40})
    # costs 20, 60, 100 tokens; with the offset: 30 / (cost + 10)
    assert scorer(offset_tokens=10).score(ctx, endpoints()) == pytest.approx([1.0, 30 / 70, 30 / 110])


def test_routed_requests_build_a_backlog_until_their_response_starts() -> None:
    s, eps = scorer(offset_tokens=0), endpoints()
    first = cycle("x" * 200)  # 50 tokens, nothing cached anywhere
    s.on_picked(first, eps[0])
    assert s.backlog[ADDRESSES[0]] == 50
    assert s.score(cycle("y" * 200), eps) == pytest.approx([0.5, 1.0, 1.0])
    s.on_response_started(first.request, eps[0])
    assert ADDRESSES[0] not in s.backlog
    s.on_response_started(first.request, eps[0])  # again (the request then ended): counted once
    assert ADDRESSES[0] not in s.backlog
    assert s.score(cycle("y" * 200), eps) == [1.0, 1.0, 1.0]


def test_a_cached_prefix_outweighs_a_backlog_of_cache_hits() -> None:
    s, eps = scorer(offset_tokens=0), endpoints()
    s.backlog[ADDRESSES[0]] = 120  # two cached 60-token questions queued ahead
    hit = cycle("x" * 1440, {ADDRESSES[0]: 300})  # 360 tokens, 300 cached on endpoint 1 only
    assert s.score(hit, eps) == pytest.approx([1.0, 180 / 360, 180 / 360])


def test_the_score_is_the_same_at_any_prompt_scale() -> None:
    small, large = scorer(offset_tokens=0), scorer(offset_tokens=0)
    small.backlog[ADDRESSES[0]] = 60
    large.backlog[ADDRESSES[0]] = 1200
    scores_small = small.score(cycle("x" * 1440, {ADDRESSES[0]: 300}), endpoints())
    scores_large = large.score(cycle("x" * 28800, {ADDRESSES[0]: 6000}), endpoints())
    assert scores_small == pytest.approx(scores_large)


def test_with_no_offset_a_free_endpoint_alone_scores_one() -> None:
    s, eps = scorer(offset_tokens=0), endpoints()
    s.backlog[ADDRESSES[1]] = 10
    fully_cached = cycle("x" * 64, {ADDRESSES[0]: 16, ADDRESSES[1]: 16, ADDRESSES[2]: 16})
    assert s.score(fully_cached, eps) == [1.0, 0.0, 1.0]


def test_a_forgotten_endpoint_loses_its_backlog() -> None:
    s, eps = scorer(), endpoints()
    s.on_picked(cycle("x" * 40), eps[1])
    s.forget_endpoint(ADDRESSES[1])
    assert ADDRESSES[1] not in s.backlog


def test_parameters_are_validated_by_name() -> None:
    with pytest.raises(ValueError, match="parameters.chars_per_token"):
        registry.build("scorer", "prefill-backlog-scorer", parameters={"chars_per_token": 0})
    with pytest.raises(ValueError, match="parameters.bogus"):
        registry.build("scorer", "prefill-backlog-scorer", parameters={"bogus": 1})
    assert isinstance(registry.build("scorer", "predicted-ttft-scorer"), PrefillBacklogScorer)


def test_the_prefix_scorer_leaves_its_matches_for_later_scorers() -> None:
    prefix, eps = PrefixCacheScorer(), endpoints()
    prompt = "a system prompt shared by many requests " * 20
    first = cycle(prompt)
    prefix.score(first, eps)
    assert first.request.state[MATCHED_TOKENS_KEY] == {}
    prefix.on_picked(first, eps[2])
    second = cycle(prompt + " and a question")
    prefix.score(second, eps)
    matched = second.request.state[MATCHED_TOKENS_KEY]
    assert list(matched) == [ADDRESSES[2]]
    assert matched[ADDRESSES[2]] == len(prompt) // 64 * 16  # whole 64-character blocks of 16 tokens


def scheduler_with(*scorers: tuple[str, float]) -> tuple[object, Datastore]:
    config = PickerConfig.model_validate(
        {"profile": {"scorers": [{"type": t, "weight": w} for t, w in scorers]}}
    )
    datastore = Datastore()
    datastore.set_addresses(ADDRESSES)
    for ep in datastore.all():
        datastore.record_scrape(ep, EndpointMetrics())
    return build_scheduler(config, datastore), datastore


def test_the_scheduler_spreads_a_burst_of_misses_by_prefill_backlog() -> None:
    scheduler, _ = scheduler_with(("prefix-cache-scorer", 3), ("prefill-backlog-scorer", 3))
    picked = [scheduler.schedule(InferenceRequest(str(i), model="m", prompt=f"{i} " * 300))[0] for i in range(3)]
    assert sorted(ep.address for ep in picked) == ADDRESSES  # no response started yet: one each


def test_the_scheduler_keeps_a_shared_prefix_together_once_responses_start() -> None:
    scheduler, _ = scheduler_with(("prefix-cache-scorer", 3), ("prefill-backlog-scorer", 3))
    system = "You are a helpful assistant who answers briefly. " * 30
    first = InferenceRequest("0", model="m", prompt=system + "question zero")
    home = scheduler.schedule(first)[0]
    scheduler.response_started(first, home)
    for i in range(1, 5):
        request = InferenceRequest(str(i), model="m", prompt=system + f"question {i}")
        assert scheduler.schedule(request)[0] is home
        scheduler.response_started(request, home)


def test_response_started_only_reaches_scorers_that_follow_responses() -> None:
    scheduler, _ = scheduler_with(("queue-scorer", 1), ("prefill-backlog-scorer", 1))
    assert [type(s).__name__ for s in scheduler._response_scorers] == ["PrefillBacklogScorer"]
    request = InferenceRequest("0", model="m", prompt="p" * 80)
    picked = scheduler.schedule(request)[0]
    backlog_scorer = scheduler._response_scorers[0]
    assert backlog_scorer.backlog[picked.address] == 20
    scheduler.response_started(request, picked)
    assert picked.address not in backlog_scorer.backlog


# ---- through the ext_proc service: the first response body chunk ends the prefill -----------


def _http_headers(pairs: dict[str, str]) -> object:
    from envoy.config.core.v3 import base_pb2
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb

    return pb.HttpHeaders(
        headers=base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v.encode()) for k, v in pairs.items()])
    )


@asynccontextmanager
async def ext_proc_with_backlog() -> AsyncIterator[tuple[object, Datastore, dict[str, float]]]:
    """An ext_proc stream to a service whose profile is the prefill-backlog scorer alone, its
    datastore, and the scorer's backlog; the request (a 400-character prompt) is already routed."""
    import orjson
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
    from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc
    from picker_support import grpc_server

    from inferplane.picker.extproc import ExtProcService, add_to_server
    from inferplane.picker.metrics import PickerMetrics

    config = PickerConfig.model_validate({"profile": {"scorers": [{"type": "prefill-backlog-scorer", "weight": 1}]}})
    datastore = Datastore(staleness=1e9)
    datastore.set_addresses(ADDRESSES)
    for ep in datastore.all():
        datastore.record_scrape(ep, EndpointMetrics())
    metrics = PickerMetrics()
    scheduler = build_scheduler(config, datastore, metrics)
    service = ExtProcService(scheduler, metrics, config.response_processing, config.objectives)
    body = orjson.dumps({"model": "m", "prompt": "p" * 400, "stream": True})
    async with grpc_server(lambda server: add_to_server(service, server)) as channel:
        call = pb_grpc.ExternalProcessorStub(channel).Process()
        await call.write(pb.ProcessingRequest(request_headers=_http_headers({":method": "POST", ":path": "/v1/completions"})))
        await call.write(pb.ProcessingRequest(request_body=pb.HttpBody(body=body, end_of_stream=True)))
        await call.read()
        await call.read()
        yield call, datastore, scheduler._response_scorers[0].backlog


async def test_ext_proc_clears_the_backlog_on_the_first_response_chunk_not_the_headers() -> None:
    from envoy.service.ext_proc.v3 import external_processor_pb2 as pb
    from picker_support import wait_until

    async with ext_proc_with_backlog() as (call, datastore, backlog):
        assert sum(backlog.values()) == 100  # the prompt's 400 characters at 4 a token
        await call.write(pb.ProcessingRequest(response_headers=_http_headers({":status": "200", "content-type": "text/event-stream"})))
        await call.read()
        assert sum(backlog.values()) == 100  # headers come before the prefill is done
        await call.write(pb.ProcessingRequest(response_body=pb.HttpBody(body=b'data: {"choices":[]}\n\n')))
        await call.read()
        assert backlog == {}
        await call.write(pb.ProcessingRequest(response_body=pb.HttpBody(body=b"data: [DONE]\n\n", end_of_stream=True)))
        await call.read()
        await call.done_writing()
        await wait_until(lambda: all(ep.in_flight == 0 for ep in datastore.all()))
        assert backlog == {}


async def test_ext_proc_clears_the_backlog_of_a_request_that_ends_without_a_response() -> None:
    from picker_support import wait_until

    async with ext_proc_with_backlog() as (call, datastore, backlog):
        assert sum(backlog.values()) == 100
        await call.done_writing()  # the client went away before any response
        await wait_until(lambda: all(ep.in_flight == 0 for ep in datastore.all()))
        assert backlog == {}


# ---- the hot-spot filter ------------------------------------------------------------------------


def test_the_hot_spot_filter_drops_only_endpoints_far_above_the_mean() -> None:
    from inferplane.picker.scheduling.filters import HotSpotFilter, HotSpotParameters

    eps = endpoints()
    for ep, n in zip(eps, (30, 10, 5)):
        ep.in_flight = n
    # mean 15: the limit is 1.5 x 15 + 4 = 26.5
    assert HotSpotFilter().filter(cycle(""), eps) == eps[1:]
    eps[0].in_flight = 23  # mean 12.7, limit 23
    kept = HotSpotFilter().filter(cycle(""), eps)
    assert kept is eps  # nothing dropped: the same list, not a copy
    strict = HotSpotFilter(parameters=HotSpotParameters(max_mean_multiple=1.0, slack=0))
    assert strict.filter(cycle(""), eps) == eps[1:]  # 10 and 5 are at most the mean, 12.7


def test_the_hot_spot_filter_never_drops_every_endpoint() -> None:
    from inferplane.picker.scheduling.filters import HotSpotFilter, HotSpotParameters

    eps = endpoints()
    for ep in eps:
        ep.in_flight = 7
    assert HotSpotFilter(parameters=HotSpotParameters(max_mean_multiple=1.0, slack=0)).filter(cycle(""), eps) == eps
    assert HotSpotFilter().filter(cycle(""), []) == []
    with pytest.raises(ValueError, match="parameters.max_mean_multiple"):
        registry.build("filter", "hot-spot-filter", parameters={"max_mean_multiple": 0.5})


# ---- the prefix index sized from the server's cache geometry ------------------------------------


def test_the_prefix_lru_can_follow_the_servers_kv_cache_size() -> None:
    from inferplane.picker.scheduling.prefix import PrefixCacheParameters

    follow = PrefixCacheScorer(parameters=PrefixCacheParameters(lru_capacity_from_server=True))
    fixed = PrefixCacheScorer()
    small = Endpoint(ADDRESSES[0], EndpointMetrics(num_gpu_blocks=4, block_size=16), updated_at=NOW)  # 64 tokens
    unknown = Endpoint(ADDRESSES[1], EndpointMetrics(), updated_at=NOW)
    prompt = "".join(f"{i:064d}" for i in range(10))  # 10 blocks of 64 characters = 160 tokens
    for scorer_, ep in ((follow, small), (follow, unknown), (fixed, small)):
        scorer_.on_picked(cycle(prompt), ep)
    assert follow.index.size() == 4 + 10  # 4 blocks of 16 tokens on the small server, all 10 elsewhere
    assert fixed.index.size() == 10
    assert follow.server_capacity(small) == 4 and follow.server_capacity(unknown) is None
    # what the small server keeps is the prompt's head: a later request still matches it there
    again = cycle(prompt)
    follow.score(again, [small, unknown])
    assert again.request.state[MATCHED_TOKENS_KEY] == {ADDRESSES[0]: 4 * 16, ADDRESSES[1]: 10 * 16}
