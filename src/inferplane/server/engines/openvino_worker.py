"""The OpenVINO engine process: one thread driving ``ContinuousBatchingPipeline.step()``.

It runs in its own process because ``step()`` holds the Python GIL for the whole step (tens of
milliseconds): in the server process it would stall the event loop. The server talks to it over
two pipes (``multiprocessing.connection`` framing, pickled tuples):

server → engine: ``("add", id, token_ids, SamplingParams)``, ``("abort", id)``, ``("stop",)``
engine → server: ``("ready", info)`` or ``("error", message)`` once; then per step
``("step", [(id, new_token_ids, finished, finish_reason, cached_tokens), ...], EngineStats)`` and
``("failed", id, message)`` for a request the pipeline refused.

Start: ``python -m inferplane.server.engines.openvino_worker CMD_FD OUT_FD CONFIG_JSON``.
The process exits when the server's end of the command pipe closes.
"""

from __future__ import annotations

import json
import os
import random
import sys
from collections import OrderedDict
from collections.abc import Sequence
from multiprocessing.connection import Connection
from typing import Any

from inferplane.server.engine import EngineStats, SamplingParams

FINISHED = "finished"


class PrefixCacheEstimate:
    """Mirrors which full prompt blocks the engine's prefix cache likely holds (LRU of chained
    block hashes), so ``vllm:prefix_cache_*`` and ``cached_tokens`` can be reported: OpenVINO does
    not expose per-request cache hits."""

    def __init__(self, block_size: int, capacity_blocks: int) -> None:
        self.block_size = block_size
        self.capacity = max(capacity_blocks, 1)
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self.queries = 0
        self.hits = 0

    def lookup_and_insert(self, token_ids: Sequence[int]) -> int:
        """Prompt tokens found in the cache; records the prompt's full blocks."""
        size = self.block_size
        matched = 0
        prefix_hash = 0
        still_matching = True
        for start in range(0, len(token_ids) - size + 1, size):
            prefix_hash = hash((prefix_hash, tuple(token_ids[start : start + size])))
            if still_matching and prefix_hash in self._blocks:
                matched += size
            else:
                still_matching = False
            self._blocks[prefix_hash] = None
            self._blocks.move_to_end(prefix_hash)
        while len(self._blocks) > self.capacity:
            self._blocks.popitem(last=False)
        # The last prompt token is always computed (its logits are needed).
        cached = min(matched, max(len(token_ids) - 1, 0))
        self.queries += len(token_ids)
        self.hits += cached
        return cached


def build_pipeline(config: dict[str, Any]) -> Any:
    import openvino_genai as ov_genai

    scheduler = ov_genai.SchedulerConfig()
    scheduler.enable_prefix_caching = bool(config["enable_prefix_caching"])
    scheduler.max_num_seqs = int(config["max_num_seqs"])
    scheduler.max_num_batched_tokens = int(config["max_num_batched_tokens"])
    scheduler.dynamic_split_fuse = True
    if config.get("num_blocks"):
        scheduler.cache_size = 0
        scheduler.num_kv_blocks = int(config["num_blocks"])
    elif config.get("kv_cache_size_gb"):
        scheduler.cache_size = max(round(float(config["kv_cache_size_gb"])), 1)
    properties: dict[str, Any] = {}
    if config.get("num_threads"):
        properties["INFERENCE_NUM_THREADS"] = int(config["num_threads"])
    return ov_genai.ContinuousBatchingPipeline(config["model"], scheduler, config["device"], properties)


#: Prompt lengths of the warm-up generations: OpenVINO prepares its kernels per range of shapes, on
#: first use (~1 s each on 2 cores); these cover short chat turns up to a full prefill chunk.
WARMUP_PROMPT_LENGTHS = (1, 16, 64, 256)
#: Concurrent decodes of the warm-up's last round (the batched decode shapes).
WARMUP_BATCH = 8


def warm_up(pipe: Any, eos_token_id: int, max_num_batched_tokens: int) -> None:
    """Run short generations (each prompt length alone, then a small batch) before serving.

    Prompts are distinct token ids, so the prefix cache holds nothing a real request would hit.
    """
    import numpy as np
    import openvino as ov

    config = generation_config(SamplingParams(max_tokens=2, temperature=0.0, ignore_eos=True), eos_token_id)
    rounds = [[n] for n in WARMUP_PROMPT_LENGTHS if n <= max_num_batched_tokens] + [[8] * WARMUP_BATCH]
    request_id = 1 << 62  # far from the server's ids, which count up from 1
    for lengths in rounds:
        for length in lengths:
            first = 1000 + (request_id % 1000) * 13
            tokens = np.arange(first, first + length, dtype=np.int64) % 30000
            pipe.add_request(request_id, ov.Tensor(tokens.reshape(1, -1)), config)
            request_id += 1
        while pipe.has_non_finished_requests():
            pipe.step()


def generation_config(params: SamplingParams, eos_token_id: int) -> Any:
    import openvino_genai as ov_genai

    gc = ov_genai.GenerationConfig()
    gc.max_new_tokens = params.max_tokens
    gc.eos_token_id = eos_token_id
    gc.ignore_eos = params.ignore_eos
    # OpenVINO requires the EOS id among the stop ids; ``ignore_eos`` makes it ignore them.
    gc.stop_token_ids = set(params.stop_token_ids) | {eos_token_id}
    if params.temperature > 0:
        gc.do_sample = True
        gc.temperature = params.temperature
        gc.top_p = params.top_p
        if params.top_k > 0:
            gc.top_k = params.top_k
        gc.rng_seed = params.seed if params.seed is not None else random.getrandbits(31)
    else:
        gc.do_sample = False
    if params.presence_penalty:
        gc.presence_penalty = params.presence_penalty
    if params.frequency_penalty:
        gc.frequency_penalty = params.frequency_penalty
    if params.repetition_penalty != 1.0:
        gc.repetition_penalty = params.repetition_penalty
    gc.validate()
    return gc


def serve(commands: Connection, outputs: Connection, config: dict[str, Any]) -> None:
    """Load the pipeline, then add / abort / step until told to stop or the server goes away."""
    import numpy as np
    import openvino as ov
    import openvino_genai as ov_genai

    try:
        pipe = build_pipeline(config)
        eos_token_id = int(pipe.get_tokenizer().get_eos_token_id())
        if config.get("warmup"):
            warm_up(pipe, eos_token_id, int(config["max_num_batched_tokens"]))
    except Exception as exc:  # noqa: BLE001 - reported to the server, which exits with it
        outputs.send(("error", f"{type(exc).__name__}: {exc}"))
        return
    block_size = int(config["block_size"])
    num_blocks = int(config.get("num_blocks") or 0)
    outputs.send(("ready", {"eos_token_id": eos_token_id, "num_blocks": num_blocks, "block_size": block_size}))

    running_status = ov_genai.GenerationStatus.RUNNING
    reasons = {ov_genai.GenerationFinishReason.STOP: "stop", ov_genai.GenerationFinishReason.LENGTH: "length"}
    prefix = PrefixCacheEstimate(block_size, num_blocks or 4096)
    handles: dict[int, Any] = {}
    cached: dict[int, int] = {}
    max_running = 0
    max_scheduled = 0
    steps = 0
    max_num_seqs = int(config["max_num_seqs"])

    while True:
        busy = bool(handles) or pipe.has_non_finished_requests()
        timeout: float | None = 0 if busy else None
        try:
            while commands.poll(timeout):
                timeout = 0
                message = commands.recv()
                kind = message[0]
                if kind == "add":
                    _, rid, token_ids, params = message
                    try:
                        tensor = ov.Tensor(np.asarray([token_ids], dtype=np.int64))
                        handles[rid] = pipe.add_request(rid, tensor, generation_config(params, eos_token_id))
                        cached[rid] = prefix.lookup_and_insert(token_ids) if config["enable_prefix_caching"] else 0
                    except Exception as exc:  # noqa: BLE001 - one bad request must not stop the engine
                        outputs.send(("failed", rid, str(exc)))
                elif kind == "abort":
                    handle = handles.pop(message[1], None)
                    cached.pop(message[1], None)
                    if handle is not None:
                        handle.cancel()
                elif kind == "stop":
                    return
        except (EOFError, OSError):
            return  # the server is gone
        if not (handles or pipe.has_non_finished_requests()):
            continue

        pipe.step()
        steps += 1
        results = []
        for rid, handle in list(handles.items()):
            new_ids: list[int] = []
            reason = None
            if handle.can_read():
                for output in handle.read().values():
                    new_ids.extend(output.generated_ids)
                    reason = reasons.get(output.finish_reason)
            finished = handle.get_status() != running_status
            if new_ids or finished:
                first_cached = cached.pop(rid, 0) if rid in cached else 0
                results.append((rid, new_ids, finished, (reason or "abort") if finished else None, first_cached))
            if finished:
                del handles[rid]
                cached.pop(rid, None)
        metrics = pipe.get_metrics()
        # With dynamic split-fuse every admitted request is scheduled in every step, up to
        # max_num_seqs (OpenVINO's own per-step ``scheduled_requests`` proved unreliable to sample).
        max_running = max(max_running, min(len(handles) + sum(1 for r in results if r[2]), max_num_seqs))
        running = min(len(handles), max_num_seqs)
        max_scheduled = max(max_scheduled, int(metrics.scheduled_requests))
        stats = EngineStats(
            num_requests_running=running,
            num_requests_waiting=len(handles) - running,
            kv_cache_usage=min(float(metrics.cache_usage) / 100.0, 1.0),
            block_size=block_size,
            num_gpu_blocks=num_blocks,
            prefix_cache_queries=prefix.queries,
            prefix_cache_hits=prefix.hits,
            extra={
                "max_num_running_observed": float(max_running),
                "max_num_scheduled_observed": float(max_scheduled),
                "engine_steps": float(steps),
            },
        )
        try:
            outputs.send(("step", results, stats))
        except (BrokenPipeError, OSError):
            return


def main(argv: list[str]) -> int:
    command_fd, output_fd, config_json = int(argv[0]), int(argv[1]), argv[2]
    commands = Connection(command_fd, writable=False)
    outputs = Connection(output_fd, readable=False)
    serve(commands, outputs, json.loads(config_json))
    outputs.close()
    os._exit(0)  # skip OpenVINO's slow teardown


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
