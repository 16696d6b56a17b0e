"""Scorers, filters, pickers, the saturation detector and the scheduler, on hand-made endpoints."""

from __future__ import annotations

import random
import time
from collections import Counter

import pytest

from inferplane.picker.config import PickerConfig
from inferplane.picker.endpoints import Datastore, Endpoint, EndpointMetrics
from inferplane.picker.errors import NoReadyEndpoint, Saturated
from inferplane.picker.request import InferenceRequest, from_headers, parse_body
from inferplane.picker.scheduling import registry
from inferplane.picker.scheduling.filters import (
    LowQueueFilter,
    NotSaturatedFilter,
    NotSaturatedParameters,
)
from inferplane.picker.scheduling.pickers import (
    MaxScorePicker,
    RandomPicker,
    WeightedRandomPicker,
)
from inferplane.picker.scheduling.plugin import CycleContext
from inferplane.picker.scheduling.prefix import (
    PrefixCacheParameters,
    PrefixCacheScorer,
    PrefixIndex,
    block_hashes,
)
from inferplane.picker.scheduling.profile import Scheduler, build_scheduler
from inferplane.picker.scheduling.saturation import UtilizationDetector
from inferplane.picker.scheduling.scorers import (
    InFlightScorer,
    KVCacheUtilizationScorer,
    LoraAffinityScorer,
    QueueScorer,
)

NOW = 1000.0


def endpoint(
    i: int, waiting: float = 0, kv: float = 0.0, age: float = 0.0, in_flight: int = 0, failing: bool = False
) -> Endpoint:
    ep = Endpoint(f"10.0.0.{i}:8000", EndpointMetrics(waiting=waiting, kv_cache_usage=kv), updated_at=NOW - age)
    ep.in_flight = in_flight
    if failing:
        ep.failing_since = NOW - age / 2
    return ep


def ctx(prompt: str = "", model: str = "m", staleness: float = 0.2) -> CycleContext:
    return CycleContext(InferenceRequest("r", model=model, prompt=prompt), NOW, staleness)


def chat(text: str, model: str = "m") -> InferenceRequest:
    request = from_headers({":path": "/v1/chat/completions"})
    parse_body(request, f'{{"model": "{model}", "messages": [{{"role": "user", "content": "{text}"}}]}}'.encode())
    return request


# ---- scorers ------------------------------------------------------------------------------


def test_queue_scorer_normalises_between_min_and_max() -> None:
    eps = [endpoint(1, waiting=0), endpoint(2, waiting=5), endpoint(3, waiting=10)]
    assert QueueScorer().score(ctx(), eps) == [1.0, 0.5, 0.0]


def test_queue_scorer_all_equal_is_one_and_stale_failing_is_zero() -> None:
    eps = [endpoint(1, waiting=3), endpoint(2, waiting=3), endpoint(3, waiting=0, age=1.0, failing=True)]
    assert QueueScorer().score(ctx(), eps) == [1.0, 1.0, 0.0]


def test_a_late_scrape_is_not_held_against_an_endpoint() -> None:
    """Old metrics of an endpoint whose scrapes succeed (the scraper is just behind) still count."""
    idle_but_late, busy = endpoint(1, waiting=0, kv=0.0, age=1.0), endpoint(2, waiting=2, kv=0.5)
    assert QueueScorer().score(ctx(), [idle_but_late, busy]) == [1.0, 0.0]
    assert KVCacheUtilizationScorer().score(ctx(), [idle_but_late, busy]) == [1.0, 0.5]
    assert LowQueueFilter(parameters=LowQueueFilter.Parameters(threshold=1)).filter(ctx(), [idle_but_late, busy]) == [idle_but_late]


def test_queue_scorer_counts_requests_routed_since_the_scrape() -> None:
    eps = [endpoint(1, waiting=2), endpoint(2, waiting=4)]
    eps[0].routed_since_scrape = 3  # the scrape cannot show these yet
    assert QueueScorer().score(ctx(), eps) == [0.0, 1.0]
    Datastore().record_scrape(eps[0], EndpointMetrics(waiting=2))  # a fresh scrape includes them
    assert eps[0].routed_since_scrape == 0


def test_queue_scorer_keeps_requests_a_scrape_missed_on_their_way() -> None:
    """A scrape taken while three routed requests were still in the server's API process shows
    none of them; the endpoint still has them ahead of the next request."""
    eps = [endpoint(1, waiting=0), endpoint(2, waiting=2)]
    eps[0].metrics.running = eps[1].metrics.running = 8
    eps[0].in_flight, eps[1].in_flight = 11, 10  # 8 running + 3 on their way; 8 running + 2 waiting
    Datastore().record_scrape(eps[0], EndpointMetrics(waiting=0, running=8), now=NOW)
    assert QueueScorer().score(ctx(), eps) == [0.0, 1.0]


def test_queue_scorer_forgets_a_scraped_request_that_has_finished() -> None:
    """The scrape caught a request queued; it finished since: the endpoint is idle again."""
    eps = [endpoint(1, waiting=1), endpoint(2, waiting=0)]
    eps[0].in_flight = 1
    eps[0].request_finished(generation=eps[0].scrape_generation - 1)  # routed before that scrape
    assert QueueScorer().score(ctx(), eps) == [1.0, 1.0]


def test_kv_cache_scorer_is_free_fraction() -> None:
    eps = [endpoint(1, kv=0.0), endpoint(2, kv=0.75), endpoint(3, kv=0.1, age=1.0, failing=True)]
    assert KVCacheUtilizationScorer().score(ctx(), eps) == [1.0, 0.25, 0.0]


def test_in_flight_scorer_prefers_fewer_requests_in_flight() -> None:
    eps = [endpoint(1, in_flight=4), endpoint(2, in_flight=0), endpoint(3, in_flight=2), endpoint(4, in_flight=9)]
    assert InFlightScorer().score(ctx(), eps) == [0.0, 1.0, 0.5, 0.0]  # tolerance 4 below the minimum


def test_in_flight_scorer_counts_only_competing_ranks_for_a_ranked_request() -> None:
    """Ranked dispatch: a replica full of lower-ranked filler work is as free for an urgent request
    as an idle one; the urgent requests already there are what it waits behind."""
    filler_only, one_urgent = endpoint(1), endpoint(2)
    for _ in range(8):
        filler_only.request_routed(rank=-1)
    for rank in (-1, -1, 21):
        one_urgent.request_routed(rank=rank)
    urgent, filler = ctx(), ctx()
    urgent.request.engine_rank, filler.request.engine_rank = 21, -1
    assert InFlightScorer().score(urgent, [filler_only, one_urgent]) == [1.0, 0.75]
    assert InFlightScorer().score(filler, [filler_only, one_urgent]) == [0.0, 1.0]  # 8 vs 3 in its way
    assert InFlightScorer().score(ctx(), [filler_only, one_urgent]) == [0.0, 1.0]  # no rank: every request counts


def test_queue_and_kv_scorers_leave_out_lower_ranked_work_for_a_ranked_request() -> None:
    """Filler work queued and cached at a priority-scheduling replica is preempted for an urgent request:
    for it, that replica is as good as an idle one, and one with urgent work waiting is worse."""
    filler_full, urgent_waiting = endpoint(1, waiting=5, kv=0.4), endpoint(2, waiting=1, kv=0.4)
    filler_full.metrics.running = urgent_waiting.metrics.running = 8  # every request routed there is in sight
    for _ in range(13):
        filler_full.request_routed(rank=-1)
    for rank in (-1,) * 6 + (21,) * 3:
        urgent_waiting.request_routed(rank=rank)
    urgent = ctx()
    urgent.request.engine_rank = 21
    assert QueueScorer().score(ctx(), [filler_full, urgent_waiting]) == [0.0, 1.0]
    assert QueueScorer().score(urgent, [filler_full, urgent_waiting]) == [1.0, 1.0]  # 5 - 13 and 1 - 6: none ahead
    urgent_waiting.metrics.waiting = 8  # 6 filler + 2 urgent waiting
    urgent_waiting.metrics.running = 1
    assert QueueScorer().score(urgent, [filler_full, urgent_waiting]) == [1.0, 0.0]
    assert KVCacheUtilizationScorer().score(urgent, [filler_full, urgent_waiting]) == pytest.approx([1.0, 1 - 0.4 * 3 / 9])


def test_in_flight_tolerance_grows_with_load() -> None:
    eps = [endpoint(1, in_flight=100), endpoint(2, in_flight=110), endpoint(3, in_flight=130)]
    # mean 113.3 -> tolerance 56.7: 10 extra in flight is a small difference at this load
    assert InFlightScorer().score(ctx(), eps) == pytest.approx([1.0, 1 - 10 / (113.333 / 2), 1 - 30 / (113.333 / 2)], rel=1e-3)


def test_lora_affinity_scores() -> None:
    def lora(i: int, running: set[str], waiting: set[str] = frozenset(), max_lora: int = 2) -> Endpoint:
        metrics = EndpointMetrics(max_lora=max_lora, running_loras=frozenset(running), waiting_loras=frozenset(waiting))
        return Endpoint(f"10.0.0.{i}:8000", metrics, updated_at=NOW)

    eps = [lora(1, {"a"}), lora(2, {"b"}), lora(3, {"b", "c"}, {"a"}), lora(4, {"b", "c"})]
    assert LoraAffinityScorer().score(ctx(model="a"), eps) == [1.0, 0.8, 0.6, 0.0]
    for ep in eps:
        ep.metrics.models = frozenset({"base"})
    assert LoraAffinityScorer().score(ctx(model="base"), eps) == [1.0] * 4  # the base model needs no adapter slot


# ---- prefix -------------------------------------------------------------------------------


def test_block_hashes_chain_and_depend_on_the_model() -> None:
    text = "a" * 64 + "b" * 64 + "c" * 10  # two full 64-byte blocks and a partial one
    hashes = block_hashes("m", text, 64, 256)
    assert len(hashes) == 2
    assert block_hashes("m", "a" * 64 + "X" * 64, 64, 256)[0] == hashes[0]
    assert block_hashes("m", "a" * 64 + "X" * 64, 64, 256)[1] != hashes[1]
    assert block_hashes("other", text, 64, 256) != hashes
    # chained: the same second block after a different first block hashes differently
    assert block_hashes("m", "z" * 64 + "b" * 64, 64, 256)[1] != hashes[1]
    assert len(block_hashes("m", "a" * 64 * 10, 64, 3)) == 3


def test_prefix_index_counts_leading_blocks_per_endpoint() -> None:
    index = PrefixIndex(capacity_per_endpoint=100)
    index.add("a", [1, 2, 3])
    index.add("b", [1, 2])
    index.add("c", [2, 3])  # does not hold the first block: no match
    assert index.matched_blocks([1, 2, 3, 4]) == {"a": 3, "b": 2}
    assert index.matched_blocks([9, 2]) == {}


def test_prefix_index_lru_evicts_oldest_hashes() -> None:
    index = PrefixIndex(capacity_per_endpoint=3)
    index.add("a", [1, 2, 3])  # a prompt's head is used last: 3, then 2, then 1
    index.add("a", [4])  # evicts 3, the least recently used: the prompt's tail, not its head
    assert index.matched_blocks([1, 2, 3]) == {"a": 2}
    index.add("a", [2])  # refresh 2
    index.add("a", [5])  # evicts 1
    assert index.matched_blocks([1, 2]) == {}
    assert index.size() == 3
    index.forget("a")
    assert index.matched_blocks([1]) == {}
    assert index.size() == 0


def test_prefix_scorer_scores_matched_share_after_routing() -> None:
    # 16 tokens x 4 chars = 64-byte blocks; full_score_blocks 1 = the GIE reference score.
    scorer = PrefixCacheScorer(parameters=PrefixCacheParameters(full_score_blocks=1))
    eps = [endpoint(1), endpoint(2)]
    shared = "s" * 64 * 3
    first = ctx(prompt=shared + "q" * 64)
    assert scorer.score(first, eps) == [0.0, 0.0]
    scorer.on_picked(first, eps[0])

    same_prefix = ctx(prompt=shared + "r" * 64)  # 3 of 4 blocks seen before on endpoint 1
    assert scorer.score(same_prefix, eps) == [0.75, 0.0]
    assert scorer.score(ctx(prompt=shared + "q" * 64, model="other"), eps) == [0.0, 0.0]
    assert scorer.score(ctx(prompt="tiny"), eps) == [0.0, 0.0]


def test_prefix_scorer_discounts_short_prompts() -> None:
    """A short prompt's full match counts as matched / full_score_blocks: load decides for it."""
    scorer = PrefixCacheScorer()  # full_score_blocks 16 by default
    eps = [endpoint(1), endpoint(2)]
    short = ctx(prompt="s" * 64 * 4)
    scorer.on_picked(short, eps[0])
    assert scorer.score(ctx(prompt="s" * 64 * 4), eps) == [4 / 16, 0.0]
    long = ctx(prompt="l" * 64 * 32)
    scorer.on_picked(long, eps[1])
    assert scorer.score(ctx(prompt="l" * 64 * 32), eps) == [0.0, 1.0]


# ---- filters, pickers, saturation ---------------------------------------------------------


def test_low_queue_filter_keeps_short_queues_or_everyone() -> None:
    eps = [endpoint(1, waiting=1), endpoint(2, waiting=50), endpoint(3, waiting=1, age=5, failing=True)]
    low = LowQueueFilter(parameters=LowQueueFilter.Parameters(threshold=10))
    assert low.filter(ctx(), eps) == [eps[0]]
    assert low.filter(ctx(), [eps[1]]) == [eps[1]]


def test_not_saturated_filter() -> None:
    flt = NotSaturatedFilter(parameters=NotSaturatedParameters(queue_threshold=5, kv_cache_threshold=0.8))
    eps = [endpoint(1, waiting=4, kv=0.5), endpoint(2, waiting=5), endpoint(3, kv=0.85), endpoint(4, age=5, failing=True)]
    assert flt.filter(ctx(), eps) == [eps[0]]
    assert flt.filter(ctx(), eps[1:]) == eps[1:]  # all saturated: keep all


def test_max_score_picker_orders_fallbacks_by_score() -> None:
    eps = [endpoint(i) for i in range(4)]
    picked = MaxScorePicker().pick(eps, [0.1, 0.9, 0.5, 0.7], 3)
    assert picked == [eps[1], eps[3], eps[2]]


def test_max_score_picker_breaks_ties_at_random() -> None:
    random.seed(7)
    eps = [endpoint(i) for i in range(3)]
    counts = Counter(MaxScorePicker().pick(eps, [1.0, 1.0, 0.2], 1)[0].address for _ in range(200))
    assert set(counts) == {eps[0].address, eps[1].address}


def test_weighted_random_picker_follows_scores() -> None:
    random.seed(3)
    eps = [endpoint(i) for i in range(3)]
    counts = Counter(WeightedRandomPicker().pick(eps, [0.0, 1.0, 3.0], 2)[0].address for _ in range(400))
    assert eps[0].address not in counts
    assert counts[eps[2].address] > counts[eps[1].address]
    assert len(WeightedRandomPicker().pick(eps, [0.0, 0.0, 0.0], 2)) == 2


def test_random_picker_returns_distinct_endpoints() -> None:
    eps = [endpoint(i) for i in range(3)]
    picked = RandomPicker().pick(eps, [0, 0, 0], 3)
    assert sorted(ep.address for ep in picked) == sorted(ep.address for ep in eps)


def test_saturation_detector() -> None:
    detector = UtilizationDetector()
    assert detector.endpoint_saturation(endpoint(1, waiting=10), NOW, 0.2) == 2.0
    assert detector.endpoint_saturation(endpoint(1, kv=0.4), NOW, 0.2) == 0.5
    assert detector.endpoint_saturation(endpoint(1, age=1.0), NOW, 0.2) == 1.0  # stale = saturated
    calm, busy = endpoint(1, waiting=1), endpoint(2, waiting=10)
    assert detector.pool_saturation([calm, busy], NOW, 0.2) == pytest.approx(1.1)
    assert detector.is_saturated([calm, busy], NOW, 0.2)
    assert not detector.is_saturated([calm, endpoint(3, kv=0.4)], NOW, 0.2)


# ---- registry and scheduler ---------------------------------------------------------------


def test_registry_builds_by_type_name_and_names_bad_parameters() -> None:
    scorer = registry.build("scorer", "prefix-cache-scorer", "p", {"block_size_tokens": 8})
    assert scorer.name == "p" and scorer.block_bytes == 32
    assert isinstance(registry.build("scorer", "active-request-scorer"), InFlightScorer)
    with pytest.raises(ValueError, match="unknown picker type 'best'"):
        registry.build("picker", "best")
    with pytest.raises(ValueError, match="parameters.block_size_tokens"):
        registry.build("scorer", "prefix-cache-scorer", None, {"block_size_tokens": 0})
    with pytest.raises(ValueError, match="parameters.bogus"):
        registry.build("scorer", "queue-scorer", None, {"bogus": 1})


def live_datastore(*loads: tuple[float, float]) -> Datastore:
    datastore = Datastore(staleness=1e9)
    datastore.set_addresses([f"10.0.0.{i}:8000" for i in range(len(loads))])
    for ep, (waiting, kv) in zip(datastore.all(), loads):
        datastore.record_scrape(ep, EndpointMetrics(waiting=waiting, kv_cache_usage=kv), now=time.monotonic())
    return datastore


def test_scheduler_picks_least_loaded_with_fallbacks() -> None:
    datastore = live_datastore((8, 0.7), (0, 0.1), (3, 0.3))
    scheduler = build_scheduler(PickerConfig(fallback_endpoints=2), datastore)
    picked = scheduler.schedule(chat("hello"))
    assert [ep.address for ep in picked] == ["10.0.0.1:8000", "10.0.0.2:8000", "10.0.0.0:8000"]


def test_scheduler_follows_prefix_but_not_into_a_hot_spot() -> None:
    datastore = live_datastore((0, 0.1), (0, 0.1), (0, 0.1))
    scheduler = build_scheduler(PickerConfig(), datastore)
    system = "You are a helpful assistant. " * 40
    first = scheduler.schedule(chat(system + "question one"))[0]
    first.in_flight += 1
    assert scheduler.schedule(chat(system + "question two"))[0] is first  # prefix hit wins among equals

    # the prefix holder becomes clearly busier: load wins over the prefix hit
    datastore.record_scrape(first, EndpointMetrics(waiting=6, kv_cache_usage=0.6), now=time.monotonic())
    first.in_flight += 5
    assert scheduler.schedule(chat(system + "question three"))[0] is not first


def test_scheduler_spreads_a_burst_between_scrapes() -> None:
    datastore = live_datastore((0, 0.0), (0, 0.0), (0, 0.0), (0, 0.0))
    scheduler = build_scheduler(PickerConfig(), datastore)
    system = "shared system prompt " * 50
    for i in range(40):  # metrics never change: only the in-flight counts move
        scheduler.schedule(chat(system + f"user {i}"))[0].in_flight += 1
    loads = sorted(ep.in_flight for ep in datastore.all())
    # no endpoint takes the lion's share: the hot-spot filter's bound, 1.5x the mean in flight + 4
    assert loads[-1] <= 1.5 * 40 / 4 + 4, loads
    assert loads[-2] > 0, loads  # the prefix was copied to a second endpoint, not left on one


def test_scheduler_errors() -> None:
    empty = build_scheduler(PickerConfig(), Datastore())
    with pytest.raises(NoReadyEndpoint):
        empty.schedule(chat("x"))

    saturated = live_datastore((10, 0.9), (7, 0.2))
    scheduler = build_scheduler(PickerConfig(objectives={"batch": -1}), saturated)
    sheddable = from_headers({":path": "/v1/completions", "x-gateway-inference-objective": "batch"}, {"batch": -1})
    parse_body(sheddable, b'{"model": "m", "prompt": "x"}')
    with pytest.raises(Saturated):
        scheduler.schedule(sheddable)
    assert scheduler.schedule(chat("x"))  # priority 0 is never shed


def test_scheduler_respects_subset_hint() -> None:
    datastore = live_datastore((0, 0.0), (9, 0.9))
    scheduler = Scheduler(
        datastore, [], [(QueueScorer(), 1.0)], MaxScorePicker(), UtilizationDetector(), fallback_endpoints=3
    )
    assert [ep.address for ep in scheduler.schedule(chat("x"), subset={"10.0.0.1:8000"})] == ["10.0.0.1:8000"]
    with pytest.raises(NoReadyEndpoint, match="subset"):
        scheduler.schedule(chat("x"), subset={"10.9.9.9:8000"})
