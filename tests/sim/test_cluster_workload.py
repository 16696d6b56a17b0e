"""Cluster-simulator workloads: the shared-prefix shape, the control, arrivals, trace replay."""

from __future__ import annotations

import itertools
import json
import random
from pathlib import Path

import pytest
from pydantic import ValidationError

from inferplane.sim.cluster.config import (
    Arrivals,
    RandomWorkload,
    SharedPrefixWorkload,
    TraceWorkload,
)
from inferplane.sim.cluster.workload import TraceError, arrival_times, generate
from inferplane.sim.tokenizer import get_tokenizer

TOKENIZER = get_tokenizer("chatml")


def test_shared_prefix_prompts_share_their_group_system_prompt() -> None:
    workload = SharedPrefixWorkload(
        num_groups=3, prompts_per_group=2, system_prompt_len=50, question_len=10, output_len=7,
        arrivals=Arrivals(rate=100, num_requests=12),
    )  # fmt: skip
    arrivals = list(generate(workload, TOKENIZER))
    assert len(arrivals) == 12 and all(a.max_tokens == 7 for a in arrivals)
    distinct = {id(a.prompt): a.prompt for a in arrivals}
    assert len(distinct) == 6  # 3 groups x 2 prompts, cycled twice
    by_prefix: dict[tuple[int, ...], int] = {}
    for prompt in distinct.values():
        assert len(prompt.token_ids) == 50 + 1 + 10
        by_prefix[tuple(prompt.token_ids[:50])] = by_prefix.get(tuple(prompt.token_ids[:50]), 0) + 1
    assert sorted(by_prefix.values()) == [2, 2, 2]
    # the picker's text shares the prefix too
    texts = sorted(p.text for p in distinct.values())
    assert any(a[:100] == b[:100] for a, b in itertools.pairwise(texts))


def test_every_stage_starts_again_from_the_first_prompt_as_inference_perf() -> None:
    workload = SharedPrefixWorkload(
        num_groups=20, prompts_per_group=5, system_prompt_len=20, question_len=5, output_len=3,
        arrivals=Arrivals(stages=[{"rate": 10, "duration": 3}, {"rate": 20, "duration": 3}]),
    )  # fmt: skip
    arrivals = list(generate(workload, TOKENIZER))
    first = [a.prompt.token_ids for a in arrivals if a.stage == 0]
    second = [a.prompt.token_ids for a in arrivals if a.stage == 1]
    assert 10 <= len(first) < len(second) <= 100  # fewer requests per stage than prompts: no wrap-around
    assert second[: len(first)] == first  # the same prompts, questions included, in the same order
    assert len({tuple(ids) for ids in second}) == len(second)


def test_random_prompts_are_distinct_and_of_the_asked_length() -> None:
    workload = RandomWorkload(input_len=30, output_len=5, arrivals=Arrivals(rate=10, num_requests=5))
    prompts = [a.prompt for a in generate(workload, TOKENIZER)]
    assert [len(p.token_ids) for p in prompts] == [30] * 5
    assert len({tuple(p.token_ids[:4]) for p in prompts}) == 5


def test_arrivals_follow_the_rate_and_the_stages() -> None:
    times = list(arrival_times(Arrivals(stages=[{"rate": 5, "duration": 100}, {"rate": 50, "duration": 100}]), random.Random(1)))
    first = [t for t, stage in times if stage == 0]
    second = [t for t, stage in times if stage == 1]
    assert 400 <= len(first) <= 600 and 4500 <= len(second) <= 5500
    assert all(0 <= t < 100 for t in first) and all(100 <= t < 200 for t in second)
    assert [t for t, _ in times] == sorted(t for t, _ in times)


def test_arrival_schedule_must_be_complete() -> None:
    with pytest.raises(ValidationError, match="num_requests or duration"):
        Arrivals(rate=5)
    with pytest.raises(ValidationError, match="give a rate .* or stages"):
        Arrivals()


def test_trace_replay_reads_text_token_ids_counts_and_hash_ids(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    lines = [
        {"timestamp": 100.0, "prompt": "Hello there, how are you?", "max_tokens": 3},
        {"timestamp": 100.5, "prompt_tokens": [400, 401, 402], "max_tokens": 2},
        {"timestamp": 101.0, "prompt_tokens": 20, "output_tokens": 4},
        {"timestamp": 102.0, "input_length": 1000, "hash_ids": [7, 8], "output_tokens": 1},
        {"timestamp": 103.0, "input_length": 600, "hash_ids": [7], "output_tokens": 1},
    ]
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n")
    arrivals = list(generate(TraceWorkload(path=path, speedup=2.0), TOKENIZER))
    assert [a.time for a in arrivals] == [0.0, 0.25, 0.5, 1.0, 1.5]
    assert [a.max_tokens for a in arrivals] == [3, 2, 4, 1, 1]
    assert arrivals[0].prompt.token_ids == TOKENIZER.encode("Hello there, how are you?")
    assert arrivals[1].prompt.token_ids == [400, 401, 402]
    assert len(arrivals[2].prompt.token_ids) == 20
    # Mooncake-style hash ids: the same block id gives the same 512 tokens
    assert len(arrivals[3].prompt.token_ids) == 1000 and len(arrivals[4].prompt.token_ids) == 600
    assert arrivals[3].prompt.token_ids[:512] == arrivals[4].prompt.token_ids[:512]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"prompt": "x"}', "trace.jsonl:1: 'timestamp'"),
        ('{"timestamp": 1, "max_tokens": 3}', "trace.jsonl:1: needs 'prompt'"),
        ('{"timestamp": 1, "prompt": "x", "max_tokens": 0}', "trace.jsonl:1: 'max_tokens'"),
        ("not json", "trace.jsonl:1: not JSON"),
    ],
)
def test_trace_errors_name_the_line_and_field(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "trace.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(TraceError, match=message):
        list(generate(TraceWorkload(path=path), TOKENIZER))


def test_memoised_kv_hashes_are_the_replicas_own() -> None:
    from inferplane.sim.cluster.workload import kv_hashes
    from inferplane.sim.kv_cache import hash_prompt_blocks

    workload = SharedPrefixWorkload(
        num_groups=2, prompts_per_group=3, system_prompt_len=70, question_len=45, output_len=1,
        arrivals=Arrivals(rate=10, num_requests=6),
    )  # fmt: skip
    for arrival in generate(workload, TOKENIZER):
        prompt = arrival.prompt
        assert prompt.prefix is not None  # the group's system prompt, hashed once
        assert kv_hashes(prompt, 16) == hash_prompt_blocks(prompt.token_ids, 16)
        assert kv_hashes(prompt, 32) == hash_prompt_blocks(prompt.token_ids, 32)
