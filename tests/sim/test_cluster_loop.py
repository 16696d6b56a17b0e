"""The cluster simulator's event loop: determinism, conservation, and the picker's real profile at work."""

from __future__ import annotations

import math
from typing import Any

from inferplane.sim.cluster.capacity import simulate
from inferplane.sim.cluster.config import ClusterConfig
from inferplane.sim.cluster.loop import build_replicas, run
from inferplane.sim.cluster.routing import RoundRobinRouter, make_router
from inferplane.sim.cluster.workload import generate
from inferplane.sim.tokenizer import get_tokenizer


def small_cluster(**workload: Any) -> ClusterConfig:
    """4 small llama3-8b replicas (2,560 KV tokens each), 16 shared 400-token prefixes: together
    they fit in the cluster's cache but not in one replica's."""
    shape = {
        "kind": "shared-prefix",
        "num_groups": 16,
        "prompts_per_group": 4,
        "system_prompt_len": 400,
        "question_len": 40,
        "output_len": 20,
        "arrivals": {"rate": 40.0, "num_requests": 200},
    }
    shape.update(workload)
    return ClusterConfig.model_validate(
        {"replicas": 4, "replica": {"preset": "llama3-8b-h100", "num_blocks": 160, "max_model_len": 2048}, "workload": shape}
    )


def without_timing(summary: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in summary.items() if k != "simulation"}


def test_same_seed_same_results_for_every_router() -> None:
    config = small_cluster()
    for profile in ("default", "round-robin", "random"):
        first, second = simulate(config, profile), simulate(config, profile)
        assert without_timing(first) == without_timing(second), profile


def test_every_request_finishes_once_and_tokens_add_up() -> None:
    config = small_cluster()
    router = make_router("default", config.replicas)
    data = run(config, router, generate(config.workload, get_tokenizer("llama3")))
    assert len(data.arrival) == 200 and list(data.rejected.values()) == []
    assert not any(math.isnan(f) for f in data.finish)  # every request finished
    assert list(data.output_tokens) == [20] * 200
    # every token is a first token or one the ITL histogram counted
    assert sum(data.step_tokens) + 200 == sum(data.output_tokens)
    assert all(a <= t <= f for a, t, f in zip(data.arrival, data.first_token, data.finish, strict=True))
    assert sum(1 for r in data.replica if r >= 0) == 200
    # the picker's bookkeeping is back to zero: nothing in flight anywhere
    assert router.routed == {} and all(ep.in_flight == 0 for ep in router.endpoints)  # type: ignore[attr-defined]


def test_replicas_are_empty_after_a_run() -> None:
    config = small_cluster()
    replicas = build_replicas(config)
    assert len(replicas) == 4
    data = run(config, RoundRobinRouter(4), generate(config.workload, get_tokenizer("llama3")))
    assert data.steps > 0 and data.virtual_time > max(data.arrival)


def test_prefix_aware_routing_beats_round_robin_on_prefix_hits() -> None:
    config = small_cluster()
    round_robin = simulate(config, "round-robin")
    picker = simulate(config, "default")
    assert picker["prefix_hit_rate"] > round_robin["prefix_hit_rate"] + 0.1
    # and without piling everything on one replica
    assert picker["max_replica_share"] < 0.5
    assert picker["completed"] == round_robin["completed"] == 200


def test_summary_reports_latencies_shares_and_time_series() -> None:
    summary = simulate(small_cluster(), "default")
    assert summary["output_tokens"] == 200 * 20
    assert summary["output_tokens_per_s"] > 0
    assert 0 < summary["ttft_s"]["p50"] <= summary["ttft_s"]["p90"] <= summary["ttft_s"]["p99"]
    assert 0 < summary["itl_s"]["p50"] <= summary["itl_s"]["p99"]
    assert abs(sum(summary["replica_share"]) - 1.0) < 1e-9
    assert len(summary["series"]["t"]) >= 2 and max(summary["series"]["kv_max"]) > 0


def test_stages_are_reported_separately() -> None:
    config = small_cluster(arrivals={"stages": [{"rate": 10, "duration": 3}, {"rate": 40, "duration": 3}]})
    summary = simulate(config, "default")
    assert [stage["rate"] for stage in summary["stages"]] == [10, 40]
    assert summary["stages"][1]["requests"] > summary["stages"][0]["requests"]


def test_requests_longer_than_the_context_are_rejected_not_routed() -> None:
    config = small_cluster(system_prompt_len=2100, arrivals={"rate": 10.0, "num_requests": 5})
    summary = simulate(config, "round-robin")
    assert summary["rejected"] == {"context length": 5} and summary["completed"] == 0


def test_reusing_the_prefix_scorer_hashes_changes_no_decision(monkeypatch: Any) -> None:
    from inferplane.sim.cluster import routing

    memoised = simulate(small_cluster(), "default")
    monkeypatch.setattr(routing, "TEXT_DERIVED_STATE", frozenset())
    assert without_timing(simulate(small_cluster(), "default")) == without_timing(memoised)


def test_a_client_concurrency_cap_holds_arrivals_back() -> None:
    open_loop = simulate(small_cluster(), "round-robin")
    config = small_cluster().model_copy(update={"max_concurrency": 3})
    capped = simulate(config, "round-robin")
    assert capped["completed"] == 200 and capped["output_tokens"] == open_loop["output_tokens"]
    assert capped["client_delay_s"]["p90"] > 0 and open_loop["client_delay_s"]["p90"] == 0
    # at most 3 in flight: the run takes longer than the open-loop one
    assert capped["simulation"]["virtual_s"] > open_loop["simulation"]["virtual_s"]


def test_stage_throughput_counts_tokens_generated_during_the_stage() -> None:
    config = small_cluster(arrivals={"stages": [{"rate": 10, "duration": 4}, {"rate": 40, "duration": 4}]})
    summary = simulate(config, "default")
    low, high = summary["stages"]
    # 20 output tokens per request, replicas keep up: generated tok/s ~ rate x 20
    assert 100 < low["generated_tokens_per_s"] < 300 and 500 < high["generated_tokens_per_s"] < 1100


def test_drained_stages_start_after_the_last_request_of_the_previous_one() -> None:
    stages = [{"rate": 40, "duration": 2}, {"rate": 40, "duration": 2}]
    config = small_cluster(arrivals={"stages": stages, "drain_between_stages": True, "stage_interval": 1.0})
    router = make_router("round-robin", config.replicas)
    data = run(config, router, generate(config.workload, get_tokenizer("llama3")))
    first_stage_done = max(f for f, s in zip(data.finish, data.stage, strict=True) if s == 0)
    second_stage_start = data.stage_windows[1][1]
    assert second_stage_start == first_stage_done + 1.0
    assert min(a for a, s in zip(data.arrival, data.stage, strict=True) if s == 1) >= second_stage_start


def test_the_client_cancels_what_outlives_the_teardown_grace() -> None:
    # far more than 4 small replicas can serve in 2 s, and the client gives up 0.5 s after the stage
    config = small_cluster(
        output_len=200,
        arrivals={"stages": [{"rate": 200, "duration": 2}], "teardown_grace": 0.5},
    )
    router = make_router("default", config.replicas)
    data = run(config, router, generate(config.workload, get_tokenizer("llama3")))
    completed = sum(1 for f in data.finish if not math.isnan(f))
    assert data.cancelled > 0 and completed + data.cancelled == len(data.arrival)
    assert max(f for f in data.finish if not math.isnan(f)) <= 2.5
    assert router.routed == {} and all(ep.in_flight == 0 for ep in router.endpoints)  # type: ignore[attr-defined]
    assert simulate(config, "default")["cancelled"] == data.cancelled
