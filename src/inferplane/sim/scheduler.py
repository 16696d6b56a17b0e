"""Continuous batching like vLLM v1's ``Scheduler`` (chunked prefill always on).

Each step has a token budget (``max_num_batched_tokens``) shared by every scheduled request:
running requests first (1 token per decode, a chunk of the rest of the prompt for a prefill),
then waiting requests in queue order while the budget, ``max_num_seqs`` and free KV blocks
allow. When a running request needs a block and none is free, a running request is preempted
(its blocks freed, its progress recomputed later) and put back in the queue.

Two policies, as vLLM's ``--scheduling-policy``: ``fcfs`` (the queue in arrival order, the newest
running request is the preemption victim, preempted requests go back to the head of the queue)
and ``priority`` (the queue ordered by ``(priority, arrival_time)``, lower first; the victim is the
running request with the largest such key; a preempted request takes its place in that order
again). Under ``priority``, a waiting request that does not fit (no batch slot, or too few free
blocks for its first chunk) also preempts running requests of strictly lower priority before the
step is scheduled, as vLLM V0's priority scheduler did (``_schedule_priority_preemption``): filler
work gives way to urgent work at once instead of when a slot frees up.

LoRA (``max_loras`` set): at most ``max_loras`` distinct adapters in one step's batch, as vLLM
v1's scheduler enforces. A waiting request whose adapter would be one too many is skipped for this
step (it keeps its place in the queue) and the requests behind it are still considered, so base
model requests and requests for adapters already in the batch are never blocked by it.

A step is split in two calls so a caller can let time pass in between: :meth:`Scheduler.schedule`
decides the batch and :meth:`Scheduler.update` applies its results.

No asyncio and no clock: the engine and the cluster simulator drive it.
"""

from __future__ import annotations

import bisect
import itertools
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from inferplane.sim.kv_cache import KVCache
from inferplane.sim.request import RequestStatus, SimRequest
from inferplane.sim.sampler import OutputSampler

_RUNNING = RequestStatus.RUNNING
_FINISHED = RequestStatus.FINISHED

SchedulingPolicy = Literal["fcfs", "priority"]


class PriorityQueue:
    """Waiting requests ordered by ``(priority, arrival_time)``, ties in insertion order.

    Offers the few deque operations the scheduler uses; ``appendleft`` (a preempted request going
    back) inserts by key like ``append``, as vLLM's priority queue does.
    """

    def __init__(self) -> None:
        self._keys: list[tuple[int, float, int]] = []
        self._requests: list[SimRequest] = []
        self._order = itertools.count()

    def append(self, request: SimRequest) -> None:
        key = (request.priority, request.arrival_time, next(self._order))
        position = bisect.bisect(self._keys, key)
        self._keys.insert(position, key)
        self._requests.insert(position, request)

    appendleft = append

    def popleft(self) -> SimRequest:
        del self._keys[0]
        return self._requests.pop(0)

    def remove(self, request: SimRequest) -> None:
        position = self._requests.index(request)
        del self._keys[position]
        del self._requests[position]

    def __getitem__(self, index: int) -> SimRequest:
        return self._requests[index]

    def __len__(self) -> int:
        return len(self._requests)

    def __iter__(self) -> Iterator[SimRequest]:
        return iter(self._requests)


@dataclass(frozen=True, slots=True)
class SchedulerLimits:
    max_num_seqs: int
    max_num_batched_tokens: int
    max_model_len: int
    #: Most distinct LoRA adapters in one step's batch (vLLM ``--max-loras``); 0: LoRA off, no limit.
    max_loras: int = 0


@dataclass(slots=True)
class StepPlan:
    """One step's batch: requests with their number of new tokens, and its cost inputs."""

    scheduled: list[tuple[SimRequest, int]] = field(default_factory=list)
    preempted: list[SimRequest] = field(default_factory=list)
    prefill_tokens: int = 0
    num_decodes: int = 0
    context_tokens: int = 0
    #: Distinct LoRA adapters in the batch (filled only when ``max_loras`` is set).
    loras: set[str] = field(default_factory=set)

    @property
    def num_scheduled_tokens(self) -> int:
        return self.prefill_tokens + self.num_decodes


class Scheduler:
    """The waiting queue, the running batch, and the step logic over a :class:`KVCache`."""

    def __init__(
        self, limits: SchedulerLimits, kv_cache: KVCache, sampler: OutputSampler, policy: SchedulingPolicy = "fcfs"
    ) -> None:
        self.limits = limits
        self.kv_cache = kv_cache
        self.sampler = sampler
        self.policy: SchedulingPolicy = policy
        self.waiting: deque[SimRequest] | PriorityQueue = deque() if policy == "fcfs" else PriorityQueue()
        self.running: list[SimRequest] = []
        self.requests: dict[str, SimRequest] = {}
        self.num_preemptions = 0
        #: Requests left waiting by the last :meth:`schedule` (see :attr:`num_waiting_reported`).
        self._waiting_after_schedule = 0

    # -- requests ---------------------------------------------------------------------------------

    def add_request(self, request: SimRequest) -> None:
        if request.request_id in self.requests:
            raise ValueError(f"request id {request.request_id!r} is already in the scheduler")
        self.requests[request.request_id] = request
        self.waiting.append(request)

    def abort(self, request_id: str) -> SimRequest | None:
        """Finish a request now, freeing its batch slot and blocks; None if unknown/finished."""
        request = self.requests.pop(request_id, None)
        if request is None:
            return None
        if request.status == _RUNNING:
            self.running.remove(request)
        else:
            self.waiting.remove(request)
        self.kv_cache.free(request)
        request.status = _FINISHED
        request.finish_reason = "abort"
        return request

    @property
    def has_work(self) -> bool:
        return bool(self.running or self.waiting)

    @property
    def num_running(self) -> int:
        return len(self.running)

    @property
    def num_waiting(self) -> int:
        return len(self.waiting)

    @property
    def num_waiting_reported(self) -> int:
        """The waiting count vLLM's ``num_requests_waiting`` gauge shows: the requests the last step could
        not schedule. vLLM's engine core takes new requests in between steps and records its stats after
        each one, so a request that arrives during a step is not counted as waiting: the next step runs it.
        """
        return min(self._waiting_after_schedule, len(self.waiting))

    # -- one step ---------------------------------------------------------------------------------

    def schedule(self) -> StepPlan:
        """Choose this step's batch and reserve its KV blocks."""
        plan = StepPlan()
        scheduled = plan.scheduled
        kv_cache = self.kv_cache
        running = self.running
        budget = self.limits.max_num_batched_tokens
        prefill_tokens = num_decodes = context_tokens = 0

        block_size = kv_cache.block_size
        by_priority = self.policy == "priority"
        if by_priority and self.waiting and running:
            self._preempt_for_waiting(plan)
        preempted_up_front = len(plan.preempted)
        decodes: list[bool] = []  # per scheduled running request: counted as a decode
        index = 0
        while index < len(running) and budget > 0:
            request = running[index]
            computed = request.num_computed_tokens
            num_new = len(request.all_token_ids) - computed
            if num_new == 1 and (computed + 1) % block_size and computed < len(request.block_ids) * block_size:
                # Fast path for most decodes: the token fits in the last block, which stays partial.
                scheduled.append((request, 1))
                decodes.append(True)
                budget -= 1
                context_tokens += computed + 1
                num_decodes += 1
                index += 1
                continue
            num_new = min(num_new, budget)
            while not kv_cache.allocate(request, computed, num_new):
                if by_priority:
                    victim = max(running, key=_priority_key)
                    position = running.index(victim)
                    del running[position]
                    if position < index:  # already scheduled in this step: take it out again
                        index -= 1
                        undone, undone_new = scheduled.pop(position)
                        budget += undone_new
                        context_tokens -= undone.num_computed_tokens + undone_new
                        if decodes.pop(position):
                            num_decodes -= 1
                        else:
                            prefill_tokens -= undone_new
                else:
                    victim = running.pop()
                self._preempt(victim)
                plan.preempted.append(victim)
                if victim is request:
                    break
            else:
                scheduled.append((request, num_new))
                budget -= num_new
                context_tokens += computed + num_new
                is_decode = num_new == 1 and computed > request.num_prompt_tokens - 1
                decodes.append(is_decode)
                if is_decode:
                    num_decodes += 1
                else:
                    prefill_tokens += num_new
                index += 1
                continue
            break  # the request itself was preempted: nothing else fits

        max_loras = self.limits.max_loras
        loras = plan.loras
        if max_loras:
            loras.update(request.lora_name for request, _ in scheduled if request.lora_name)
        if len(plan.preempted) == preempted_up_front:  # blocks ran out for running requests: admit none
            waiting = self.waiting
            max_num_seqs = self.limits.max_num_seqs
            skipped: list[SimRequest] = []
            while waiting and budget > 0 and len(running) < max_num_seqs:
                request = waiting[0]
                lora = request.lora_name
                if max_loras and lora and lora not in loras and len(loras) >= max_loras:
                    skipped.append(waiting.popleft())  # its adapter would exceed max_loras this step
                    continue
                num_tokens = len(request.all_token_ids)
                hits = kv_cache.find_cached_prefix(request, num_tokens)
                computed = len(hits) * block_size
                num_new = min(num_tokens - computed, budget)
                if not kv_cache.allocate(request, computed, num_new, hits):
                    break
                waiting.popleft()
                if request.num_cached_tokens < 0:  # first admission: count the lookup
                    request.num_cached_tokens = computed
                    kv_cache.record_prefix_lookup(num_tokens, computed)
                request.num_computed_tokens = computed
                request.status = _RUNNING
                running.append(request)
                scheduled.append((request, num_new))
                budget -= num_new
                prefill_tokens += num_new
                context_tokens += computed + num_new
                if max_loras and lora:
                    loras.add(lora)
            for request in reversed(skipped):  # back at the head, in their order
                waiting.appendleft(request)

        plan.prefill_tokens = prefill_tokens
        plan.num_decodes = num_decodes
        plan.context_tokens = context_tokens
        self._waiting_after_schedule = len(self.waiting)
        return plan

    def _preempt_for_waiting(self, plan: StepPlan) -> None:
        """Preempt lower-priority running requests until the most urgent waiting one fits."""
        head = self.waiting[0]
        head_key = _priority_key(head)
        kv_cache, running = self.kv_cache, self.running
        num_tokens = len(head.all_token_ids)
        hits = kv_cache.find_cached_prefix(head, num_tokens)
        first_chunk = min(num_tokens, len(hits) * kv_cache.block_size + self.limits.max_num_batched_tokens)
        blocks_needed = -(-first_chunk // kv_cache.block_size) - len(hits)
        while running and (
            len(running) >= self.limits.max_num_seqs or kv_cache.num_free_blocks < blocks_needed
        ):
            victim = max(running, key=_priority_key)
            if _priority_key(victim) <= head_key:
                return  # nothing less urgent left to make room with
            running.remove(victim)
            self._preempt(victim)
            plan.preempted.append(victim)

    def _preempt(self, request: SimRequest) -> None:
        """Free the request's blocks and queue it again (its progress is recomputed later)."""
        self.kv_cache.free(request)
        request.status = RequestStatus.PREEMPTED
        request.num_computed_tokens = 0
        request.num_preemptions += 1
        self.num_preemptions += 1
        self.waiting.appendleft(request)

    def update(self, plan: StepPlan) -> list[SimRequest]:
        """Apply a finished step: advance progress, sample one token for every request whose
        known tokens are all computed, finish those that stop. Returns the requests that got a
        token (finished ones have ``finish_reason`` set and are out of the scheduler)."""
        produced: list[SimRequest] = []
        any_finished = False
        next_token = self.sampler.next_token
        max_model_len = self.limits.max_model_len
        for request, num_new in plan.scheduled:
            if request.status is not _RUNNING:  # aborted while the step ran
                continue
            computed = request.num_computed_tokens + num_new
            request.num_computed_tokens = computed
            tokens = request.all_token_ids
            num_tokens = len(tokens)
            if computed < num_tokens:
                continue  # a prefill chunk that did not reach the end of the prompt
            output_index = num_tokens - request.num_prompt_tokens
            token = next_token(request)
            tokens.append(token)
            produced.append(request)
            if num_tokens + 1 >= max_model_len or output_index + 1 >= request.max_tokens:
                request.finish_reason = "length"
            elif output_index == request.eos_at or token in request.stop_token_ids:
                request.finish_reason = "stop"
            else:
                continue
            request.status = _FINISHED
            any_finished = True
            self.kv_cache.free(request)
            del self.requests[request.request_id]
        if any_finished:
            self.running = [request for request in self.running if request.status is _RUNNING]
        return produced


def _priority_key(request: SimRequest) -> tuple[int, float]:
    return (request.priority, request.arrival_time)
