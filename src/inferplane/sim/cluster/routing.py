"""Routers the simulation sends requests through: the picker's real scheduler, or a baseline.

:class:`PickerRouter` builds the picker's :class:`~inferplane.picker.scheduling.profile.Scheduler`
from a :class:`~inferplane.picker.config.PickerConfig` over a real
:class:`~inferplane.picker.endpoints.Datastore`, which the loop fills with scraped replica metrics
every ``scrape_interval`` of virtual time, and keeps the in-flight counts as the ext_proc service
does (incremented when routed, :meth:`Endpoint.request_finished` when the response ends), and
tells the scheduler when a response starts (the first token), as the ext_proc service does on the
first response body chunk.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from inferplane.configfile import ConfigError, read_yaml, validate_model
from inferplane.picker.config import PickerConfig, ProfileConfig, ScorerSpec
from inferplane.picker.endpoints import Datastore, Endpoint, EndpointMetrics
from inferplane.picker.request import InferenceRequest
from inferplane.picker.scheduling.profile import build_scheduler
from inferplane.sim.cluster.workload import Arrival, Prompt
from inferplane.sim.replica import Replica

#: Keys of ``InferenceRequest.state`` that plugins derive from the prompt text alone (the prefix
#: scorer's block hashes): reused for later requests with the same prompt instead of rehashing.
TEXT_DERIVED_STATE = frozenset({"prefix-cache-scorer.hashes"})


class Router(Protocol):
    name: str
    #: Whether the loop must scrape the replicas for it (every ``scrape_interval``).
    uses_metrics: bool
    scrape_interval: float

    def route(self, index: int, arrival: Arrival, model: str) -> int:
        """The replica for request ``index``."""
        ...

    def first_token(self, index: int) -> None:
        """Request ``index`` produced its first token (its response started)."""
        ...

    def finished(self, index: int) -> None:
        """Request ``index`` finished (its response ended)."""
        ...

    def scrape(self, now: float, replicas: Sequence[Replica], changed: list[bool]) -> None:
        """Read the replicas' metrics (only called when ``uses_metrics``)."""
        ...


class RoundRobinRouter:
    """What a Kubernetes Service / Envoy ``ROUND_ROBIN`` does."""

    uses_metrics = False
    scrape_interval = 0.05

    def __init__(self, replicas: int, name: str = "round-robin") -> None:
        self.name = name
        self.replicas = replicas
        self.next = 0

    def route(self, index: int, arrival: Arrival, model: str) -> int:
        picked = self.next
        self.next = (picked + 1) % self.replicas
        return picked

    def first_token(self, index: int) -> None:
        pass

    def finished(self, index: int) -> None:
        pass

    def scrape(self, now: float, replicas: Sequence[Replica], changed: list[bool]) -> None:
        pass


class RandomRouter(RoundRobinRouter):
    """Uniformly at random (seeded)."""

    def __init__(self, replicas: int, seed: int = 0, name: str = "random") -> None:
        super().__init__(replicas, name)
        self.rng = random.Random(seed)

    def route(self, index: int, arrival: Arrival, model: str) -> int:
        return self.rng.randrange(self.replicas)


class CacheAwareRouter(RoundRobinRouter):
    """vllm-router's and sglang-router's ``--policy cache_aware`` (HTTP workers), the peers of the
    routing benchmark: prefix affinity on text, with load balancing only past a threshold.

    Per worker, a record of the text routed there (their radix tree; here chained ``chunk``-character
    blocks, so a match is exact to within one block). For each request:

    - if the busiest worker has more than ``balance_abs_threshold`` requests in flight over the idlest
      *and* more than ``balance_rel_threshold`` times as many, the idlest worker;
    - else, if the longest match covers more than ``cache_threshold`` of the text, that worker;
    - else, the worker with the smallest record (the most cache to spare).

    The routed text is added to the chosen worker's record. Ties go to a seeded random choice. The
    records are never trimmed (the peers' default ``max_tree_size`` is far above these workloads).
    """

    def __init__(
        self,
        replicas: int,
        seed: int = 0,
        cache_threshold: float = 0.3,
        balance_abs_threshold: int = 64,
        balance_rel_threshold: float = 1.5,
        chunk: int = 16,
        name: str = "cache-aware",
    ) -> None:
        super().__init__(replicas, name)
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self.chunk = chunk
        self.rng = random.Random(seed)
        self.everyone = (1 << replicas) - 1  # the bit mask of all workers
        self.in_flight = [0] * replicas
        self.record_chars = [0] * replicas
        #: chained block hash -> bit mask of the workers whose record holds it
        self.holders: dict[int, int] = {}
        self.routed: dict[int, int] = {}

    def _blocks(self, prompt: Prompt) -> list[int]:
        """The chained hashes of the prompt's text blocks, kept on the prompt for its next request."""
        key = f"{self.name}.blocks.{self.chunk}"
        blocks = prompt.picker_state.get(key)
        if blocks is None:
            text, h, blocks = prompt.text, 0, []
            for start in range(0, len(text), self.chunk):
                h = hash((h, text[start : start + self.chunk]))
                blocks.append(h)
            prompt.picker_state[key] = blocks
        return blocks  # type: ignore[return-value]

    def _least(self, values: Sequence[int]) -> int:
        low = min(values)
        return self.rng.choice([i for i, v in enumerate(values) if v == low])

    def route(self, index: int, arrival: Arrival, model: str) -> int:
        blocks = self._blocks(arrival.prompt)
        length = arrival.prompt.text_length
        loads = self.in_flight
        busiest, idlest = max(loads), min(loads)
        if busiest - idlest > self.balance_abs_threshold and busiest > self.balance_rel_threshold * idlest:
            picked = self._least(loads)
        else:
            # walk the chain: a worker's match ends at the first block its record lacks
            alive, matched = self.everyone, 0
            for h in blocks:
                still = alive & self.holders.get(h, 0)
                if not still:
                    break
                alive, matched = still, matched + 1
            best = [i for i in range(self.replicas) if alive >> i & 1] if matched else []
            if best and min(matched * self.chunk, length) / max(length, 1) > self.cache_threshold:
                picked = self.rng.choice(best)
            else:
                picked = self._least(self.record_chars)
        bit = 1 << picked
        for start, h in enumerate(blocks):
            mask = self.holders.get(h, 0)
            if not mask & bit:
                self.holders[h] = mask | bit
                self.record_chars[picked] += min(self.chunk, length - start * self.chunk)
        loads[picked] += 1
        self.routed[index] = picked
        return picked

    def finished(self, index: int) -> None:
        self.in_flight[self.routed.pop(index)] -= 1


class PickerRouter:
    """The endpoint picker's scheduling profile, fed scraped (50 ms old at most) metrics."""

    uses_metrics = True

    def __init__(self, config: PickerConfig, replicas: int, name: str = "picker") -> None:
        self.name = name
        self.config = config
        self.scrape_interval = config.scrape_interval
        # Scrapes never fail or lag here, so metrics are at most one interval old: never stale.
        # The scheduler judges staleness by time.monotonic(), not virtual time, hence no bound.
        self.datastore = Datastore(staleness=math.inf, failure_grace=config.failure_grace)
        self.addresses = [f"10.0.{i // 250}.{i % 250 + 1}:8000" for i in range(replicas)]
        self.datastore.set_addresses(self.addresses)
        self.endpoints: list[Endpoint] = [self.datastore.get(a) for a in self.addresses]  # type: ignore[misc]
        self.index_of = {id(ep): i for i, ep in enumerate(self.endpoints)}
        self.scheduler = build_scheduler(config, self.datastore)
        self.routed: dict[int, tuple[Endpoint, int, InferenceRequest]] = {}

    def route(self, index: int, arrival: Arrival, model: str) -> int:
        prompt = arrival.prompt
        request = InferenceRequest(
            request_id=str(index),
            path="/v1/completions",
            kind="completions",
            model=model,
            requested_model=model,
            prompt=prompt.text,
            stream=True,
            max_tokens=arrival.max_tokens,
            state=dict(prompt.picker_state),
        )
        endpoint = self.scheduler.schedule(request)[0]
        if not prompt.picker_state:
            # memoise what is a pure function of the text, for the prompt's next request
            prompt.picker_state = {k: v for k, v in request.state.items() if k in TEXT_DERIVED_STATE}
        endpoint.in_flight += 1
        self.routed[index] = (endpoint, endpoint.scrape_generation, request)
        return self.index_of[id(endpoint)]

    def first_token(self, index: int) -> None:
        endpoint, _, request = self.routed[index]
        self.scheduler.response_started(request, endpoint)

    def finished(self, index: int) -> None:
        endpoint, generation, request = self.routed.pop(index)
        self.scheduler.response_started(request, endpoint)  # a no-op unless it ended before its first token
        endpoint.request_finished(generation)

    def scrape(self, now: float, replicas: Sequence[Replica], changed: list[bool]) -> None:
        record = self.datastore.record_scrape
        for i, replica in enumerate(replicas):
            endpoint = self.endpoints[i]
            # An unchanged replica with nothing routed or finished since: a scrape would change nothing.
            if (
                not changed[i]
                and not endpoint.routed_since_scrape
                and not endpoint.finished_since_scrape
                and endpoint.metrics is not None
            ):
                continue
            scheduler = replica.scheduler
            kv = replica.kv_cache
            metrics = EndpointMetrics(
                waiting=float(scheduler.num_waiting_reported),
                running=float(len(scheduler.running)),
                kv_cache_usage=kv.usage,
                block_size=kv.block_size,
                num_gpu_blocks=kv.num_blocks,
            )
            record(endpoint, metrics, now)
            changed[i] = False


#: Profiles known by name (``--profile NAME``); anything else is a YAML file.
BASELINES = ("round-robin", "random", "cache-aware")


def named_profiles() -> dict[str, PickerConfig]:
    """Picker configurations known by name."""

    def scorers(*pairs: tuple[str, float]) -> ProfileConfig:
        return ProfileConfig(filters=[], scorers=[ScorerSpec(type=t, weight=w) for t, w in pairs])

    return {
        # The picker's default: hot-spot filter; queue x2, kv x2, prefix x3, prefill backlog x1.
        "default": PickerConfig(),
        # GIE v1.5's default (llm-d's "estimated" prefix scheduling): queue x2, kv x2, prefix x3.
        "gie": PickerConfig(
            profile=scorers(("queue-scorer", 2), ("kv-cache-utilization-scorer", 2), ("prefix-cache-scorer", 3))
        ),
        # llm-d's "load-scheduling": queue x1, kv x1.
        "load-only": PickerConfig(profile=scorers(("queue-scorer", 1), ("kv-cache-utilization-scorer", 1))),
        # The picker's default before the prefill backlog (bench/results/routing-sim.md): queue x2,
        # kv x2, prefix x3, in-flight x3.
        "in-flight": PickerConfig(
            profile=scorers(
                ("queue-scorer", 2), ("kv-cache-utilization-scorer", 2), ("prefix-cache-scorer", 3), ("in-flight-scorer", 3)
            )
        ),
    }


def load_picker_config(path: str | Path) -> PickerConfig:
    """A picker YAML: its ``picker`` section (as ``inferplane picker --config`` reads), a whole
    :class:`PickerConfig`, or just a profile (``filters`` / ``scorers`` / ``picker``)."""
    raw: dict[str, Any] = read_yaml(path)
    section = raw.get("picker")
    if isinstance(section, dict) and "type" not in section:
        return validate_model(PickerConfig, section, f"{path} (section 'picker')")
    if raw and set(raw) <= {"filters", "scorers", "picker"}:
        profile = validate_model(ProfileConfig, raw, f"{path} (a profile)")
        return PickerConfig(profile=profile)
    return validate_model(PickerConfig, raw, str(path))


def make_router(profile: str, replicas: int, seed: int = 0) -> Router:
    """``round-robin``, ``random``, ``cache-aware`` (the peers' policy), a named picker profile, or a picker YAML file."""
    if profile == "round-robin":
        return RoundRobinRouter(replicas)
    if profile == "random":
        return RandomRouter(replicas, seed)
    if profile == "cache-aware":
        return CacheAwareRouter(replicas, seed)
    named = named_profiles()
    if profile in named:
        return PickerRouter(named[profile], replicas, name=profile)
    path = Path(profile)
    if not path.suffix and not path.exists():
        raise ConfigError(
            f"unknown profile {profile!r}: use {', '.join([*BASELINES, *named])} or a picker YAML file"
        )
    return PickerRouter(load_picker_config(path), replicas, name=path.stem)
