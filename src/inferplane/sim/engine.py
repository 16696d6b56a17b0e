"""``SimEngine``: the simulated vLLM replica behind the :class:`Engine` interface.

An asyncio task runs the engine loop: schedule a batch, sleep the modelled step time multiplied by
``time_scale`` (1.0 = the modelled hardware's real time), apply the step, hand each request its
new tokens; and wait without spinning while there is no work.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from inferplane.server.engine import (
    Engine,
    EngineError,
    EngineOutput,
    EngineRequest,
    EngineStats,
)
from inferplane.sim.config import SimConfig
from inferplane.sim.cost_model import Preset, get_preset
from inferplane.sim.kv_cache import CacheEvent
from inferplane.sim.replica import Replica, ReplicaSpec
from inferplane.sim.request import FinishReason, SimRequest
from inferplane.sim.tokenizer import ChatTemplateName, get_tokenizer

if TYPE_CHECKING:
    from inferplane.server.config import ServerConfig

logger = logging.getLogger(__name__)


class _OutputStream:
    """Tokens waiting for one request's consumer; outputs not yet read are merged into one."""

    __slots__ = ("pending", "ready")

    def __init__(self) -> None:
        self.pending: EngineOutput | None = None
        self.ready = asyncio.Event()

    def put(self, token_id: int, finish_reason: FinishReason | None, num_cached_tokens: int) -> None:
        pending = self.pending
        if pending is None:
            self.pending = EngineOutput([token_id], finish_reason is not None, finish_reason, num_cached_tokens)
            self.ready.set()
        else:
            pending.new_token_ids.append(token_id)
            if finish_reason is not None:
                pending.finished = True
                pending.finish_reason = finish_reason

    def finish(self, finish_reason: FinishReason) -> None:
        if self.pending is None:
            self.pending = EngineOutput([], True, finish_reason)
            self.ready.set()
        else:
            self.pending.finished = True
            self.pending.finish_reason = finish_reason

    async def get(self) -> EngineOutput:
        await self.ready.wait()
        output = self.pending
        assert output is not None
        self.pending = None
        self.ready.clear()
        return output


class SimEngine(Engine):
    """A simulated vLLM replica: real scheduling and KV-cache behaviour, modelled step times."""

    def __init__(
        self,
        sim: SimConfig,
        spec: ReplicaSpec,
        model_name: str,
        chat_template: ChatTemplateName = "llama3",
    ) -> None:
        self.sim = sim
        self.model_name = model_name
        self.max_model_len = spec.max_model_len
        self.tokenizer = get_tokenizer(chat_template)
        self.cache_events: list[CacheEvent] | None = [] if sim.kv_events.enabled else None
        on_event = self.cache_events.append if self.cache_events is not None else None
        self.replica = Replica(spec, self.tokenizer, sim.output_length, sim.seed, on_event)
        self._streams: dict[str, _OutputStream] = {}
        self._wakeup = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None
        self._publisher: Any = None

    # -- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> None:
        if self._loop_task is not None:
            return
        if self.cache_events is not None:
            from inferplane.sim.kv_events import KVEventPublisher

            self._publisher = KVEventPublisher(
                self.sim.kv_events.endpoint, self.sim.kv_events.topic, self.replica.kv_cache.block_size
            )
        self._wakeup = asyncio.Event()
        self._loop_task = asyncio.create_task(self._run(), name="sim-engine-loop")

    async def stop(self) -> None:
        task, self._loop_task = self._loop_task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass
        for request_id in list(self._streams):
            self.replica.abort(request_id)
            self._streams.pop(request_id).finish("abort")
        if self._publisher is not None:
            self._publisher.close()
            self._publisher = None

    # -- tokenizer ------------------------------------------------------------------------------

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens)

    def detokenize(self, token_ids: Sequence[int]) -> str:
        """Text of ``token_ids`` without special tokens (vLLM's ``skip_special_tokens`` default)."""
        return self.tokenizer.decode(token_ids, skip_special_tokens=True)

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self.tokenizer.eos_token_ids

    def token_bytes(self) -> Sequence[bytes] | None:
        return self.tokenizer.byte_table

    # -- requests -------------------------------------------------------------------------------

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if self._loop_task is None or self._loop_task.done():
            raise EngineError("the simulator engine is not running", status=503)
        params = request.params
        prompt = list(request.prompt_token_ids)
        if not prompt:
            raise EngineError("the prompt is empty", param="prompt")
        if params.max_tokens < 1:
            raise EngineError("max_tokens must be at least 1", param="max_tokens")
        problem = self.replica.fits(len(prompt), params.max_tokens)
        if problem is not None:
            raise EngineError(problem, param="max_tokens" if "context length" in problem else "messages")
        if request.request_id in self._streams:
            raise EngineError(f"request id {request.request_id!r} is already running", status=409)
        stream = _OutputStream()
        self._streams[request.request_id] = stream
        arrival_time = time.monotonic()
        finished = False
        try:
            # Latency outside the engine core (the API server's share of TTFT); costs no engine time.
            overhead = self.replica.cost.request_overhead_s * self.sim.time_scale
            if overhead > 0:
                try:  # stop() ends the wait early by finishing the stream
                    await asyncio.wait_for(stream.ready.wait(), overhead)
                except TimeoutError:
                    pass
            if self._streams.get(request.request_id) is stream:  # not aborted by stop() meanwhile
                self.replica.add_request(
                    request.request_id,
                    prompt,
                    params.max_tokens,
                    ignore_eos=params.ignore_eos,
                    stop_token_ids=params.stop_token_ids,
                    lora_name=request.lora_name,
                    seed=params.seed,
                    temperature=params.temperature,
                    arrival_time=arrival_time,
                    priority=request.priority,
                )
                self._wakeup.set()
            while not finished:
                output = await stream.get()
                finished = output.finished
                yield output
        finally:
            if self._streams.pop(request.request_id, None) is not None and not finished:
                self.replica.abort(request.request_id)

    def add_lora(self, name: str, path: str) -> None:
        """Load the adapter into the replica's host-memory cache (the simulator reads no weights)."""
        try:
            self.replica.add_lora(name)
        except ValueError as exc:
            raise EngineError(str(exc), param="lora_modules") from None

    def remove_lora(self, name: str) -> None:
        self.replica.remove_lora(name)

    def stats(self) -> EngineStats:
        replica = self.replica
        kv_cache = replica.kv_cache
        running_loras: list[str] = []
        waiting_loras: list[str] = []
        extra = {"engine_steps": float(replica.num_steps), "engine_busy_seconds": replica.busy_time}
        if replica.adapters is not None:
            running_loras, waiting_loras = replica.lora_adapters()
            extra["lora_loads"] = float(replica.adapters.num_loads)
        return EngineStats(
            num_requests_running=replica.scheduler.num_running,
            num_requests_waiting=replica.scheduler.num_waiting_reported,
            kv_cache_usage=kv_cache.usage,
            block_size=kv_cache.block_size,
            num_gpu_blocks=kv_cache.num_blocks,
            prefix_cache_queries=kv_cache.prefix_queries,
            prefix_cache_hits=kv_cache.prefix_hits,
            num_preemptions=replica.scheduler.num_preemptions,
            max_lora=replica.spec.max_loras if replica.adapters is not None else None,
            running_lora_adapters=running_loras,
            waiting_lora_adapters=waiting_loras,
            extra=extra,
        )

    # -- the engine loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        try:
            await self._step_forever()
        except asyncio.CancelledError:
            raise
        except Exception:
            logger.exception("simulator engine loop failed; aborting every request")
            for request_id in list(self._streams):
                self.replica.abort(request_id)
                self._streams.pop(request_id).finish("abort")
            raise

    async def _step_forever(self) -> None:
        replica = self.replica
        time_scale = self.sim.time_scale
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            timed = replica.begin_step() if replica.has_work else None
            if timed is None:
                self._publish_events()
                self._wakeup.clear()
                await self._wakeup.wait()
                deadline = loop.time()
                continue
            # Sleep to an absolute deadline so that timer jitter does not accumulate; a loop
            # that fell behind (busy CPU) catches up by at most one step.
            deadline = max(deadline, loop.time() - timed.duration * time_scale) + timed.duration * time_scale
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                await asyncio.sleep(0)
            self._deliver(replica.finish_step(timed))
            self._publish_events()

    def _deliver(self, produced: list[SimRequest]) -> None:
        now = time.monotonic()
        streams = self._streams
        for request in produced:
            if request.first_token_time is None:
                request.first_token_time = now
            stream = streams.get(request.request_id)
            if stream is not None:
                stream.put(request.all_token_ids[-1], request.finish_reason, max(request.num_cached_tokens, 0))

    def _publish_events(self) -> None:
        events = self.cache_events
        if events:
            if self._publisher is not None:
                self._publisher.publish(events)
            events.clear()


def resolve_spec(config: ServerConfig, preset: Preset) -> ReplicaSpec:
    """The replica's geometry and limits: fields the user set in ``config``, else the preset's."""
    user_set = config.model_fields_set

    def pick(name: str, preset_value: int) -> int:
        return int(getattr(config, name)) if name in user_set else preset_value

    block_size = pick("block_size", preset.block_size)
    if "num_blocks" in user_set and config.num_blocks is not None:
        num_blocks = config.num_blocks
    elif "kv_cache_size_gb" in user_set and config.kv_cache_size_gb is not None:
        num_blocks = max(1, int(config.kv_cache_size_gb * 1e9) // (preset.kv_bytes_per_token * block_size))
    else:
        num_blocks = preset.num_gpu_blocks * preset.block_size // block_size
    return ReplicaSpec(
        cost=preset.cost.with_overrides(config.sim.cost),
        num_blocks=num_blocks,
        block_size=block_size,
        max_model_len=pick("max_model_len", preset.max_model_len),
        max_num_seqs=pick("max_num_seqs", preset.max_num_seqs),
        max_num_batched_tokens=pick("max_num_batched_tokens", preset.max_num_batched_tokens),
        enable_prefix_caching=config.enable_prefix_caching,
        scheduling_policy=config.scheduling_policy,
        max_loras=config.max_loras if config.lora_enabled else 0,
        max_cpu_loras=(config.max_cpu_loras or config.max_loras) if config.lora_enabled else 0,
    )


def create_engine(config: ServerConfig) -> SimEngine:
    """The engine registry's entry point for ``engine: sim``."""
    preset = get_preset(config.sim.preset)
    spec = resolve_spec(config, preset)
    if spec.max_num_batched_tokens < spec.max_num_seqs:
        raise ValueError(
            f"max_num_batched_tokens ({spec.max_num_batched_tokens}) must be at least max_num_seqs ({spec.max_num_seqs})"
        )
    return SimEngine(config.sim, spec, config.served_model_name, preset.chat_template)
