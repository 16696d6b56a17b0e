"""The simulated picker learns when each response starts, as the ext_proc service does."""

from __future__ import annotations

from typing import Any

from inferplane.picker.config import PickerConfig
from inferplane.picker.scheduling.prefill import PrefillBacklogScorer
from inferplane.sim.cluster.config import ClusterConfig
from inferplane.sim.cluster.loop import run
from inferplane.sim.cluster.routing import PickerRouter
from inferplane.sim.cluster.workload import generate
from inferplane.sim.tokenizer import get_tokenizer


def cluster(**arrivals: Any) -> ClusterConfig:
    return ClusterConfig.model_validate(
        {
            "replicas": 4,
            "replica": {"preset": "llama3-8b-h100", "num_blocks": 160, "max_model_len": 2048},
            "workload": {
                "kind": "shared-prefix",
                "num_groups": 8,
                "prompts_per_group": 4,
                "system_prompt_len": 400,
                "question_len": 40,
                "output_len": 20,
                "arrivals": arrivals or {"rate": 40.0, "num_requests": 120},
            },
        }
    )


class Recorder(PickerRouter):
    """Records the order of the loop's calls per request, and the backlog the picker saw."""

    def __init__(self, config: PickerConfig, replicas: int) -> None:
        super().__init__(config, replicas)
        self.calls: dict[int, list[str]] = {}
        self.peak_backlog = 0.0

    def route(self, index: int, arrival: Any, model: str) -> int:
        self.calls[index] = ["route"]
        picked = super().route(index, arrival, model)
        self.peak_backlog = max(self.peak_backlog, max(self.backlog_scorer().backlog.values(), default=0.0))
        return picked

    def first_token(self, index: int) -> None:
        self.calls[index].append("first")
        super().first_token(index)

    def finished(self, index: int) -> None:
        self.calls[index].append("finished")
        super().finished(index)

    def backlog_scorer(self) -> PrefillBacklogScorer:
        return next(s for s, _ in self.scheduler.scorers if isinstance(s, PrefillBacklogScorer))


def profile() -> PickerConfig:
    return PickerConfig.model_validate(
        {"profile": {"scorers": [{"type": "prefix-cache-scorer", "weight": 3}, {"type": "prefill-backlog-scorer", "weight": 3}]}}
    )


def test_every_response_starts_once_before_it_ends_and_the_backlog_drains() -> None:
    config = cluster()
    router = Recorder(profile(), config.replicas)
    run(config, router, generate(config.workload, get_tokenizer("llama3")))
    assert len(router.calls) == 120
    assert all(calls == ["route", "first", "finished"] for calls in router.calls.values())
    assert router.peak_backlog > 0  # requests did queue for their prefill
    assert router.backlog_scorer().backlog == {}


def test_requests_the_client_cancels_leave_no_backlog() -> None:
    # far more than 4 replicas can serve in a 1 s stage; the client gives up right after it
    config = cluster(stages=[{"rate": 400.0, "duration": 1.0}], teardown_grace=0.0)
    router = Recorder(profile(), config.replicas)
    data = run(config, router, generate(config.workload, get_tokenizer("llama3")))
    assert data.cancelled > 0
    assert any(calls == ["route", "finished"] for calls in router.calls.values())
    assert router.backlog_scorer().backlog == {}
