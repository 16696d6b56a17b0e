"""Capacity search and profile comparison on a synthetic replica (flat, made-up costs)."""

from __future__ import annotations

from inferplane.sim.cluster.capacity import Slo, compare_profiles, find_replicas
from inferplane.sim.cluster.config import ClusterConfig

# 10 ms per step plus 1 ms per prefill token: a 100-token prompt alone takes ~0.11 s to first token.
SYNTHETIC_COST = {
    "step_base_s": 0.01,
    "prefill_per_token_s": 0.001,
    "decode_per_seq_s": 0.0,
    "context_per_token_s": 0.0,
    "request_overhead_s": 0.0,
}


def synthetic(rate: float) -> ClusterConfig:
    return ClusterConfig.model_validate(
        {
            "replica": {"preset": "llama3-8b-h100", "num_blocks": 512, "max_model_len": 2048, "cost": SYNTHETIC_COST},
            "workload": {
                "kind": "random",
                "input_len": 100,
                "output_len": 10,
                "arrivals": {"rate": rate, "num_requests": 150},
            },
        }
    )


def test_more_traffic_never_needs_fewer_replicas() -> None:
    slo = Slo(ttft_p90=0.3)
    answers = []
    for rate in (10.0, 30.0, 90.0):
        result = find_replicas(synthetic(rate), "round-robin", slo, max_replicas=64)
        assert result.replicas is not None
        verdicts = {t["replicas"]: t["meets_slo"] for t in result.trials}
        assert verdicts[result.replicas] is True
        assert verdicts.get(result.replicas - 1, False) is False  # one fewer was tried and missed (or is 0)
        assert all(ok for n, ok in verdicts.items() if n >= result.replicas)
        answers.append(result.replicas)
    assert answers == sorted(answers) and answers[0] < answers[-1]


def test_an_unreachable_slo_says_so() -> None:
    result = find_replicas(synthetic(10.0), "round-robin", Slo(ttft_p90=0.001), max_replicas=4)
    assert result.replicas is None
    assert [t["replicas"] for t in result.trials] == [1, 2, 4]
    assert "ttft p90" in result.trials[-1]["missed"][0]


def test_compare_profiles_runs_the_same_workload_for_each() -> None:
    runs = compare_profiles(synthetic(30.0), ["round-robin", "random", "default"])
    assert [r["router"] for r in runs] == ["round-robin", "random", "default"]
    assert {r["sent"] for r in runs} == {150} and {r["output_tokens"] for r in runs} == {1500}
