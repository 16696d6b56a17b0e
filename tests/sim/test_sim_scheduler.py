from inferplane.sim.config import OutputLengthConfig
from inferplane.sim.kv_cache import KVCache
from inferplane.sim.request import RequestStatus, SimRequest
from inferplane.sim.sampler import OutputSampler
from inferplane.sim.scheduler import Scheduler, SchedulerLimits, SchedulingPolicy
from inferplane.sim.tokenizer import get_tokenizer

BLOCK = 4


def make_scheduler(
    num_blocks: int = 64,
    max_num_seqs: int = 8,
    budget: int = 32,
    max_model_len: int = 4096,
    prefix: bool = True,
    policy: SchedulingPolicy = "fcfs",
) -> Scheduler:
    cache = KVCache(num_blocks, BLOCK, enable_prefix_caching=prefix)
    sampler = OutputSampler(get_tokenizer(), OutputLengthConfig(distribution="fixed", mean=1000, max=1000))
    return Scheduler(SchedulerLimits(max_num_seqs, budget, max_model_len), cache, sampler, policy)


def add(
    scheduler: Scheduler,
    request_id: str,
    prompt_len: int,
    max_tokens: int = 100,
    first: int = 0,
    priority: int = 0,
    arrival: float = 0.0,
) -> SimRequest:
    request = SimRequest(
        request_id,
        list(range(first, first + prompt_len)),
        max_tokens,
        ignore_eos=True,
        priority=priority,
        arrival_time=arrival,
    )
    scheduler.sampler.prepare(request)
    scheduler.add_request(request)
    return request


def step(scheduler: Scheduler) -> dict[str, int]:
    plan = scheduler.schedule()
    scheduler.update(plan)
    return {request.request_id: num for request, num in plan.scheduled}


def drain(scheduler: Scheduler, max_steps: int = 1000) -> list[dict[str, int]]:
    """Step until idle (bounded); returns each step's batch."""
    steps = []
    for _ in range(max_steps):
        if not scheduler.has_work:
            return steps
        steps.append(step(scheduler))
    raise AssertionError(f"scheduler still busy after {max_steps} steps")


def test_token_budget_is_shared_and_long_prompts_are_chunked() -> None:
    scheduler = make_scheduler(budget=32)
    long = add(scheduler, "long", 70)
    short = add(scheduler, "short", 10, first=1000)
    assert step(scheduler) == {"long": 32}
    assert long.num_output_tokens == 0  # a partial prefill produces no token
    assert step(scheduler) == {"long": 32}
    # Last chunk of the long prompt (6 tokens), and the short prompt gets the rest of the budget.
    assert step(scheduler) == {"long": 6, "short": 10}
    assert long.num_output_tokens == 1 and short.num_output_tokens == 1
    assert step(scheduler) == {"long": 1, "short": 1}  # decodes


def test_every_step_respects_the_budget_and_max_num_seqs() -> None:
    scheduler = make_scheduler(num_blocks=512, max_num_seqs=3, budget=20)
    requests = [add(scheduler, f"r{i}", 15, max_tokens=5, first=100 * i) for i in range(7)]
    for _ in range(200):
        if not scheduler.has_work:
            break
        plan = scheduler.schedule()
        assert plan.num_scheduled_tokens == sum(num for _, num in plan.scheduled) <= 20
        assert scheduler.num_running <= 3
        scheduler.update(plan)
    assert all(r.finish_reason == "length" and r.num_output_tokens == 5 for r in requests)


def test_waiting_requests_start_in_arrival_order() -> None:
    scheduler = make_scheduler(max_num_seqs=1, budget=64)
    first = add(scheduler, "first", 8, max_tokens=2)
    add(scheduler, "second", 8, max_tokens=2, first=100)
    add(scheduler, "third", 8, max_tokens=2, first=200)
    order: list[str] = []
    for batch in drain(scheduler):
        order.extend(request_id for request_id in batch if request_id not in order)
    assert order == ["first", "second", "third"]
    assert first.finish_reason == "length"


def test_newest_request_is_preempted_when_blocks_run_out() -> None:
    # 6 blocks of 4 tokens; two 8-token prompts take 2 blocks each, then decoding needs more
    # (each request alone fits: 8 + 12 tokens = 5 blocks).
    scheduler = make_scheduler(num_blocks=6, budget=64, max_model_len=24)
    old = add(scheduler, "old", 8, max_tokens=12)
    new = add(scheduler, "new", 8, max_tokens=12, first=100)
    preempted_at = None
    for number in range(20):
        plan = scheduler.schedule()
        if plan.preempted:
            preempted_at = number
            assert plan.preempted == [new]
            assert new.status is RequestStatus.PREEMPTED and new.num_computed_tokens == 0
            assert scheduler.waiting[0] is new and new.block_ids == []
            assert [r.request_id for r, _ in plan.scheduled] == ["old"]
            break
        scheduler.update(plan)
    assert preempted_at is not None
    assert scheduler.num_preemptions == 1 and old.status is RequestStatus.RUNNING
    drain(scheduler)
    # Both finish; the preempted one recomputed its prompt and output so far.
    assert old.num_output_tokens == 12 and new.num_output_tokens == 12


def test_priority_policy_admits_by_priority_then_arrival() -> None:
    scheduler = make_scheduler(max_num_seqs=1, budget=64, policy="priority")
    add(scheduler, "batch-early", 8, max_tokens=2, priority=5, arrival=1.0)
    add(scheduler, "critical-late", 8, max_tokens=2, first=100, priority=-1, arrival=3.0)
    add(scheduler, "normal", 8, max_tokens=2, first=200, priority=0, arrival=2.0)
    order = [next(iter(batch)) for batch in drain(scheduler) if len(batch) == 1 and 8 in batch.values()]
    assert order == ["critical-late", "normal", "batch-early"]


def test_priority_policy_preempts_the_lowest_priority_even_if_already_scheduled() -> None:
    # Same geometry as the FCFS case above, but the *older* request is the low-priority one: under
    # FCFS the newest would be the victim; under priority the old low-priority request gives way,
    # even though it comes first in the running list (already scheduled in that step).
    scheduler = make_scheduler(num_blocks=6, budget=64, max_model_len=24, policy="priority")
    low = add(scheduler, "low", 8, max_tokens=12, priority=10, arrival=1.0)
    high = add(scheduler, "high", 8, max_tokens=12, first=100, priority=0, arrival=2.0)
    for _ in range(20):
        plan = scheduler.schedule()
        if plan.preempted:
            assert plan.preempted == [low]
            assert [r.request_id for r, _ in plan.scheduled] == ["high"]
            assert plan.num_scheduled_tokens == sum(n for _, n in plan.scheduled)
            assert low.status is RequestStatus.PREEMPTED and low.block_ids == []
            break
        scheduler.update(plan)
    else:
        raise AssertionError("no preemption happened")
    scheduler.update(plan)
    drain(scheduler)
    assert high.num_output_tokens == 12 and low.num_output_tokens == 12
    assert high.num_preemptions == 0 and low.num_preemptions >= 1


def test_priority_policy_makes_room_for_a_more_urgent_waiting_request() -> None:
    scheduler = make_scheduler(max_num_seqs=2, budget=64, policy="priority")
    filler = [add(scheduler, f"filler-{i}", 8, max_tokens=50, first=100 * i, priority=5, arrival=i) for i in range(2)]
    step(scheduler)
    assert scheduler.num_running == 2
    urgent = add(scheduler, "urgent", 8, max_tokens=3, first=900, priority=-1, arrival=9.0)
    plan = scheduler.schedule()
    assert plan.preempted == [filler[1]]  # the newest of the least urgent gives way, not both
    assert {r.request_id for r, _ in plan.scheduled} == {"filler-0", "urgent"}
    scheduler.update(plan)
    same = add(scheduler, "same-priority", 8, max_tokens=3, first=950, priority=5, arrival=10.0)
    plan = scheduler.schedule()  # equal priority never preempts
    assert plan.preempted == [] and same.status is RequestStatus.WAITING
    scheduler.update(plan)
    drain(scheduler)
    assert urgent.num_output_tokens == 3 and all(f.num_output_tokens == 50 for f in filler)


def test_prefix_hits_skip_prefill_and_set_cached_tokens() -> None:
    scheduler = make_scheduler(budget=64)
    first = add(scheduler, "a", 20, max_tokens=1)
    step(scheduler)
    assert first.finish_reason == "length" and first.num_cached_tokens == 0
    second = add(scheduler, "b", 22, max_tokens=1)  # same first 20 tokens
    assert step(scheduler) == {"b": 2}
    assert second.num_cached_tokens == 20
    assert scheduler.kv_cache.prefix_queries == 42 and scheduler.kv_cache.prefix_hits == 20


def test_abort_frees_slot_and_blocks_at_once() -> None:
    scheduler = make_scheduler(num_blocks=16, budget=64)
    running = add(scheduler, "running", 12)
    step(scheduler)
    waiting = add(scheduler, "waiting", 12, first=500)
    assert scheduler.abort("waiting") is waiting and waiting.finish_reason == "abort"
    plan = scheduler.schedule()
    assert scheduler.abort("running") is running
    assert scheduler.kv_cache.usage == 0.0 and not scheduler.has_work
    assert scheduler.update(plan) == []  # the in-flight step no longer touches it
    assert scheduler.abort("running") is None


def test_eos_stop_tokens_and_max_model_len() -> None:
    scheduler = make_scheduler(budget=64, max_model_len=14)
    tokenizer = get_tokenizer()
    eos = SimRequest("eos", list(range(5)), 50)
    scheduler.sampler.prepare(eos)
    eos.eos_at = 2  # the model emits EOS as its third token
    scheduler.add_request(eos)
    capped = add(scheduler, "capped", 10, max_tokens=50, first=100)
    drain(scheduler)
    assert eos.finish_reason == "stop" and eos.output_token_ids[-1] == tokenizer.eos_token_id
    assert eos.num_output_tokens == 3
    assert capped.finish_reason == "length" and capped.num_tokens == 14

    scheduler = make_scheduler(budget=64)
    probe = add(scheduler, "probe", 5, max_tokens=3)
    drain(scheduler)
    stopper = SimRequest("stopper", list(range(5)), 50, ignore_eos=True, stop_token_ids=[probe.output_token_ids[1]])
    stopper.text_offset = probe.text_offset
    scheduler.add_request(stopper)
    drain(scheduler)
    assert stopper.finish_reason == "stop" and stopper.num_output_tokens == 2


def test_greedy_requests_with_the_same_prompt_generate_the_same_text() -> None:
    scheduler = make_scheduler(budget=64)
    outputs = []
    for request_id in ("x", "y"):
        request = SimRequest(request_id, list(range(9)), 6)
        scheduler.sampler.prepare(request, temperature=0.0)
        scheduler.add_request(request)
        drain(scheduler)
        outputs.append(request.output_token_ids)
    assert outputs[0] == outputs[1]


def test_reported_waiting_counts_only_what_the_last_step_left_waiting() -> None:
    # vLLM's engine core takes requests in between steps and records num_requests_waiting after a
    # step: a request that arrives during a step is not reported as waiting, one that did not fit is.
    scheduler = make_scheduler(max_num_seqs=2)
    add(scheduler, "a", 4)
    add(scheduler, "b", 4)
    plan = scheduler.schedule()
    add(scheduler, "c", 4)  # arrives while the step runs
    assert scheduler.num_waiting == 1
    assert scheduler.num_waiting_reported == 0
    scheduler.update(plan)
    step(scheduler)  # no free slot: c stays waiting
    assert scheduler.num_waiting_reported == 1
    scheduler.abort("c")
    assert scheduler.num_waiting_reported == 0
