"""The peers' ``cache_aware`` policy in the cluster simulator: affinity on text, balancing past thresholds."""

from __future__ import annotations

from inferplane.sim.cluster.capacity import simulate
from inferplane.sim.cluster.config import ClusterConfig
from inferplane.sim.cluster.routing import CacheAwareRouter, make_router
from inferplane.sim.cluster.workload import Arrival, Prompt

SYSTEM = [Prompt(tail_text=f"system prompt of application {g}: " + "lorem ipsum dolor " * 20, tail_ids=[0] * 100)
          for g in range(4)]


def request(group: int, question: int) -> Arrival:
    prompt = Prompt(tail_text=f" question {question}?", tail_ids=[1] * 5, prefix=SYSTEM[group])
    return Arrival(time=0.0, prompt=prompt, max_tokens=10)


def test_a_prefix_stays_on_the_worker_that_first_served_it() -> None:
    router = CacheAwareRouter(8, seed=1)
    first = [router.route(g, request(g, 0), "m") for g in range(4)]
    assert len(set(first)) == 4  # unseen text: the worker with the smallest record, a new one each time
    for i in range(4):
        router.finished(i)
    for i in range(4, 400):  # each finishes before the next arrives: never out of balance
        group = i % 4
        assert router.route(i, request(group, i), "m") == first[group]
        router.finished(i)
    assert router.in_flight == [0] * 8


def test_past_both_balance_thresholds_the_idlest_worker_takes_the_request() -> None:
    router = CacheAwareRouter(4, seed=0, balance_abs_threshold=3, balance_rel_threshold=1.5)
    home = router.route(0, request(0, 0), "m")
    # 4 in flight on `home`, none elsewhere: 4 - 0 > 3 and 4 > 1.5 x 0
    picks = [router.route(i, request(0, i), "m") for i in range(1, 5)]
    assert picks[:3] == [home] * 3
    assert picks[3] != home
    # once requests finish the prefix goes home again
    for i in range(5):
        router.finished(i)
    assert router.route(5, request(0, 5), "m") == home


def test_a_short_match_counts_as_a_miss() -> None:
    router = CacheAwareRouter(2, seed=0, cache_threshold=0.9)
    home = router.route(0, request(0, 0), "m")
    router.finished(0)
    # the same system prompt, but a question as long as the prompt: the match is below 0.9
    long_question = Arrival(time=0.0, max_tokens=10, prompt=Prompt(
        tail_text=" another question " * 40, tail_ids=[1] * 200, prefix=SYSTEM[0]))
    assert router.route(1, long_question, "m") != home  # the other worker has the smaller record


def test_with_two_prefixes_the_peers_load_two_replicas_and_the_picker_spreads() -> None:
    config = ClusterConfig.model_validate({
        "replicas": 8,
        "replica": {"preset": "llama3-8b-h100", "num_blocks": 400, "max_model_len": 2048},
        "workload": {"kind": "shared-prefix", "num_groups": 2, "prompts_per_group": 50, "system_prompt_len": 300,
                     "question_len": 30, "output_len": 100, "arrivals": {"rate": 80.0, "num_requests": 600}},
    })  # fmt: skip
    peers = simulate(config, "cache-aware")
    picker = simulate(config, "default")
    assert peers["completed"] == picker["completed"] == 600
    # below the balance thresholds the peers' policy keeps each prefix on one replica of the eight
    assert peers["max_replica_share"] >= 0.4
    assert picker["max_replica_share"] < 0.25
    assert make_router("cache-aware", 8).name == "cache-aware"
