"""LoRA in the simulator: vLLM's ``max_loras`` batch constraint, the ``max_cpu_loras`` cache and its load cost."""

from __future__ import annotations

import pytest

from inferplane.sim.config import OutputLengthConfig
from inferplane.sim.cost_model import CostModel
from inferplane.sim.kv_cache import KVCache
from inferplane.sim.lora import AdapterCache
from inferplane.sim.replica import Replica, ReplicaSpec
from inferplane.sim.request import SimRequest
from inferplane.sim.sampler import OutputSampler
from inferplane.sim.scheduler import Scheduler, SchedulerLimits, SchedulingPolicy
from inferplane.sim.tokenizer import get_tokenizer

BLOCK = 4


def make_scheduler(max_loras: int, max_num_seqs: int = 8, budget: int = 64, policy: SchedulingPolicy = "fcfs") -> Scheduler:
    cache = KVCache(256, BLOCK)
    sampler = OutputSampler(get_tokenizer(), OutputLengthConfig(distribution="fixed", mean=1000, max=1000))
    return Scheduler(SchedulerLimits(max_num_seqs, budget, 4096, max_loras), cache, sampler, policy)


def add(scheduler: Scheduler, request_id: str, lora: str | None, max_tokens: int = 4, prompt_len: int = 6) -> SimRequest:
    first = 1000 * len(scheduler.requests)  # distinct prompts: no prefix sharing between requests
    request = SimRequest(request_id, list(range(first, first + prompt_len)), max_tokens, ignore_eos=True, lora_name=lora)
    scheduler.sampler.prepare(request)
    scheduler.add_request(request)
    return request


def step(scheduler: Scheduler) -> list[tuple[str, str | None]]:
    plan = scheduler.schedule()
    scheduler.update(plan)
    return [(request.request_id, request.lora_name) for request, _ in plan.scheduled]


def test_a_batch_never_holds_more_than_max_loras_adapters() -> None:
    scheduler = make_scheduler(max_loras=2)
    adapters = ["a", "b", "c", None, "a", "d", "c", None, "b", "e"]
    for i, lora in enumerate(adapters):
        add(scheduler, f"r{i}", lora, max_tokens=3 + i % 4)
    served: set[str] = set()
    for _ in range(200):
        if not scheduler.has_work:
            break
        batch = step(scheduler)
        assert len({lora for _, lora in batch if lora}) <= 2, batch
        served.update(request_id for request_id, _ in batch)
    assert not scheduler.has_work
    assert served == {f"r{i}" for i in range(len(adapters))}  # everyone got served in the end


def test_a_request_over_the_limit_waits_without_blocking_those_that_fit() -> None:
    scheduler = make_scheduler(max_loras=1)
    add(scheduler, "a1", "a", max_tokens=20)
    assert step(scheduler) == [("a1", "a")]
    add(scheduler, "b1", "b")  # would be a second adapter in the batch: skipped
    add(scheduler, "a2", "a")  # same adapter as the batch: fits
    add(scheduler, "base", None)  # the base model never counts against max_loras
    batch = dict(step(scheduler))
    assert set(batch) == {"a1", "a2", "base"}
    assert [request.request_id for request in scheduler.waiting] == ["b1"]  # kept its place at the head
    assert scheduler.num_waiting == 1 and scheduler.num_running == 3


def test_the_skipped_request_runs_once_its_adapter_fits_and_keeps_its_queue_position() -> None:
    scheduler = make_scheduler(max_loras=1, max_num_seqs=2)
    add(scheduler, "a1", "a", max_tokens=3)
    step(scheduler)
    add(scheduler, "b1", "b", max_tokens=3)
    add(scheduler, "b2", "b", max_tokens=3)
    step(scheduler)
    assert [request.request_id for request in scheduler.waiting] == ["b1", "b2"]
    order: list[str] = []
    for _ in range(50):
        if not scheduler.has_work:
            break
        for request_id, _ in step(scheduler):
            if request_id not in order:
                order.append(request_id)
    assert order[:3] == ["a1", "b1", "b2"]


def test_priority_policy_skips_over_the_limit_requests_too() -> None:
    scheduler = make_scheduler(max_loras=1, policy="priority")
    add(scheduler, "a1", "a", max_tokens=10)
    step(scheduler)
    add(scheduler, "b1", "b")
    add(scheduler, "a2", "a")
    assert {request_id for request_id, _ in step(scheduler)} == {"a1", "a2"}
    assert [request.request_id for request in scheduler.waiting] == ["b1"]


def test_without_max_loras_adapters_are_not_limited() -> None:
    scheduler = make_scheduler(max_loras=0)
    for i, lora in enumerate("abcd"):
        add(scheduler, f"r{i}", lora)
    assert len(step(scheduler)) == 4


def test_adapter_cache_is_lru_and_counts_loads() -> None:
    cache = AdapterCache(2)
    assert cache.add("a") and cache.add("b")
    assert not cache.add("a")  # cached: no load, and now most recently used
    assert cache.use({"c"}) == 1  # evicts b, the least recently used
    assert cache.names() == ["a", "c"]
    assert cache.use({"b", "c"}) == 1  # evicts a, never an adapter of the same step
    assert set(cache.names()) == {"b", "c"}
    cache.remove("b")
    assert "b" not in cache and cache.num_loads == 4


def replica(max_loras: int, max_cpu_loras: int, lora_load_s: float = 1.0) -> Replica:
    # Only the LoRA load costs time, so a step's duration counts the adapters it loaded.
    cost = CostModel(step_base_s=0.0, prefill_per_token_s=0.0, decode_per_seq_s=0.0, context_per_token_s=0.0,
                     lora_load_s=lora_load_s)
    spec = ReplicaSpec(cost=cost, num_blocks=256, block_size=BLOCK, max_model_len=512, max_num_seqs=8,
                       max_num_batched_tokens=64, max_loras=max_loras, max_cpu_loras=max_cpu_loras)
    return Replica(spec, get_tokenizer(), OutputLengthConfig(distribution="fixed", mean=1000, max=1000))


def run_one(rep: Replica, request_id: str, lora: str | None) -> float:
    """Serve one short request alone; returns the modelled time its steps took."""
    rep.add_request(request_id, list(range(5)), 2, ignore_eos=True, lora_name=lora)
    total = 0.0
    while rep.has_work:
        timed = rep.begin_step()
        assert timed is not None
        total += timed.duration
        rep.finish_step(timed)
    return total


def test_an_adapter_not_in_host_memory_costs_its_load_time_once() -> None:
    rep = replica(max_loras=1, max_cpu_loras=2)
    rep.add_lora("a")  # loaded at start, like vLLM's --lora-modules: no step pays for it
    assert run_one(rep, "r1", "a") == 0.0
    assert run_one(rep, "r2", "b") == 1.0  # first use of b: read from disk in that step
    assert run_one(rep, "r3", "b") == 0.0
    assert run_one(rep, "r4", "c") == 1.0  # evicts a (least recently used)
    assert run_one(rep, "r5", "a") == 1.0  # a was evicted: loaded again
    assert run_one(rep, "r6", None) == 0.0
    rep.remove_lora("a")  # unloaded: its next use is a load
    assert run_one(rep, "r7", "a") == 1.0


def test_lora_adapters_reports_running_and_waiting_sets() -> None:
    rep = replica(max_loras=1, max_cpu_loras=1, lora_load_s=0.0)
    rep.add_request("a1", list(range(5)), 10, ignore_eos=True, lora_name="a")
    rep.finish_step(rep.begin_step())  # type: ignore[arg-type]
    rep.add_request("b1", list(range(100, 105)), 10, ignore_eos=True, lora_name="b")
    rep.add_request("c1", list(range(200, 205)), 10, ignore_eos=True, lora_name="c")
    rep.add_request("base", list(range(300, 305)), 10, ignore_eos=True)
    rep.finish_step(rep.begin_step())  # type: ignore[arg-type]
    assert rep.lora_adapters() == (["a"], ["b", "c"])


def test_max_cpu_loras_below_max_loras_is_refused() -> None:
    with pytest.raises(ValueError, match=r"max_cpu_loras \(1\) must be >= max_loras \(2\)"):
        replica(max_loras=2, max_cpu_loras=1)
