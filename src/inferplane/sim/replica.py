"""One simulated vLLM replica without asyncio: scheduler + KV cache + cost model + sampler.

The caller owns time. A step is ``plan = replica.begin_step()`` (None when idle), then letting
``plan.duration`` seconds of (real or virtual) time pass, then ``replica.finish_step(plan)``.
A request should be added ``cost.request_overhead_s`` after it arrives (the API server's latency).
:class:`inferplane.sim.engine.SimEngine` drives it with asyncio sleeps; a discrete-event cluster
simulator drives many of them from one event heap.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass

from inferplane.sim.config import OutputLengthConfig
from inferplane.sim.cost_model import CostModel, Preset
from inferplane.sim.kv_cache import CacheEvent, KVCache
from inferplane.sim.lora import AdapterCache
from inferplane.sim.request import SimRequest
from inferplane.sim.sampler import OutputSampler
from inferplane.sim.scheduler import (
    Scheduler,
    SchedulerLimits,
    SchedulingPolicy,
    StepPlan,
)
from inferplane.sim.tokenizer import Tokenizer


@dataclass(frozen=True, slots=True)
class ReplicaSpec:
    """Everything that fixes a replica's behaviour (resolved from a preset plus overrides)."""

    cost: CostModel
    num_blocks: int
    block_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int
    enable_prefix_caching: bool = True
    #: vLLM's ``--scheduling-policy``: ``fcfs`` or ``priority`` (requests' ``priority``, lower first).
    scheduling_policy: SchedulingPolicy = "fcfs"
    #: vLLM's ``--max-loras``: most distinct LoRA adapters in one batch; 0: LoRA off.
    max_loras: int = 0
    #: vLLM's ``--max-cpu-loras``: adapters kept loaded in host memory (0: ``max_loras``).
    max_cpu_loras: int = 0

    @classmethod
    def from_preset(cls, preset: Preset) -> ReplicaSpec:
        """The preset as it is (no user overrides)."""
        return cls(
            cost=preset.cost,
            num_blocks=preset.num_gpu_blocks,
            block_size=preset.block_size,
            max_model_len=preset.max_model_len,
            max_num_seqs=preset.max_num_seqs,
            max_num_batched_tokens=preset.max_num_batched_tokens,
        )


@dataclass(slots=True)
class TimedPlan:
    plan: StepPlan
    duration: float  # modelled seconds


class Replica:
    """A vLLM replica's engine core, stepped by its caller."""

    def __init__(
        self,
        spec: ReplicaSpec,
        tokenizer: Tokenizer,
        output_length: OutputLengthConfig | None = None,
        seed: int = 0,
        on_cache_event: Callable[[CacheEvent], None] | None = None,
    ) -> None:
        if spec.max_model_len > spec.num_blocks * spec.block_size:
            # vLLM refuses to start in this case too: a request could never fit on its own.
            raise ValueError(
                f"max_model_len ({spec.max_model_len}) is larger than the KV cache "
                f"({spec.num_blocks} blocks x {spec.block_size} = {spec.num_blocks * spec.block_size} tokens)"
            )
        self.spec = spec
        self.kv_cache = KVCache(spec.num_blocks, spec.block_size, spec.enable_prefix_caching, on_cache_event)
        self.sampler = OutputSampler(tokenizer, output_length, seed)
        limits = SchedulerLimits(spec.max_num_seqs, spec.max_num_batched_tokens, spec.max_model_len, spec.max_loras)
        self.scheduler = Scheduler(limits, self.kv_cache, self.sampler, spec.scheduling_policy)
        self.cost = spec.cost
        self.adapters: AdapterCache | None = None
        if spec.max_loras:
            if spec.max_cpu_loras and spec.max_cpu_loras < spec.max_loras:
                raise ValueError(f"max_cpu_loras ({spec.max_cpu_loras}) must be >= max_loras ({spec.max_loras})")
            self.adapters = AdapterCache(spec.max_cpu_loras or spec.max_loras)
        self.num_steps = 0
        self.busy_time = 0.0  # modelled seconds spent in steps

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        max_tokens: int,
        *,
        ignore_eos: bool = False,
        stop_token_ids: Collection[int] = (),
        lora_name: str | None = None,
        seed: int | None = None,
        temperature: float = 1.0,
        arrival_time: float = 0.0,
        priority: int = 0,
    ) -> SimRequest:
        request = SimRequest(
            request_id,
            prompt_token_ids,
            max_tokens,
            ignore_eos=ignore_eos,
            stop_token_ids=stop_token_ids,
            lora_name=lora_name,
            arrival_time=arrival_time,
            priority=priority,
        )
        self.sampler.prepare(request, seed, temperature)
        self.scheduler.add_request(request)
        return request

    def abort(self, request_id: str) -> SimRequest | None:
        return self.scheduler.abort(request_id)

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    def begin_step(self) -> TimedPlan | None:
        """Schedule the next batch; None when there is nothing to do (or nothing fits)."""
        plan = self.scheduler.schedule()
        if not plan.scheduled:
            return None
        duration = self.cost.step_time(plan.prefill_tokens, plan.num_decodes, plan.context_tokens)
        if plan.loras and self.adapters is not None:
            # Adapters not in host memory are read from disk before the forward pass can run.
            duration += self.adapters.use(plan.loras) * self.cost.lora_load_s
        return TimedPlan(plan, duration)

    def finish_step(self, timed: TimedPlan) -> list[SimRequest]:
        """Apply the step's results; returns the requests that produced a token."""
        self.num_steps += 1
        self.busy_time += timed.duration
        return self.scheduler.update(timed.plan)

    # -- LoRA adapters ----------------------------------------------------------------------------

    def add_lora(self, name: str) -> None:
        """Load an adapter into host memory now (vLLM's ``add_lora``: at start or on a runtime load)."""
        if self.adapters is None:
            raise ValueError("LoRA is off for this replica (max_loras is 0)")
        self.adapters.add(name)

    def remove_lora(self, name: str) -> None:
        """Drop an unloaded adapter from host memory; requests already admitted still finish."""
        if self.adapters is not None:
            self.adapters.remove(name)

    def lora_adapters(self) -> tuple[list[str], list[str]]:
        """Distinct adapters of the running and of the waiting requests, sorted (vLLM's
        ``running_lora_adapters`` / ``waiting_lora_adapters``)."""
        scheduler = self.scheduler
        running = {request.lora_name for request in scheduler.running if request.lora_name}
        waiting = {request.lora_name for request in scheduler.waiting if request.lora_name}
        return sorted(running), sorted(waiting)

    def fits(self, num_prompt_tokens: int, max_tokens: int) -> str | None:
        """Why a request can never be served here (None if it can)."""
        spec = self.spec
        if num_prompt_tokens + max_tokens > spec.max_model_len:
            return (
                f"This model's maximum context length is {spec.max_model_len} tokens. However, you "
                f"requested {num_prompt_tokens + max_tokens} tokens ({num_prompt_tokens} in the "
                f"messages, {max_tokens} in the completion). Please reduce the length of the messages "
                "or completion."
            )
        return None
