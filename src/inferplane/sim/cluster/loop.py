"""The discrete-event loop: arrivals, replica steps and metric scrapes on one virtual clock.

Events (a heap, ties in insertion order):

- an arrival is routed at once (the router sees the last scrape plus its own in-flight counts)
  and reaches its replica's scheduler ``request_overhead_s`` later (the API server's share);
- an idle replica that gets a request starts a step; a step ends ``duration`` later, its tokens
  are delivered, and the next step starts at once while there is work;
- every ``scrape_interval`` the router scrapes the replicas that changed (and the queue / KV
  time series is sampled every ``sample_interval``).

The replicas are the simulator's :class:`~inferplane.sim.replica.Replica` cores, unchanged.
"""

from __future__ import annotations

import heapq
import random
import time
from array import array
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import cast

from inferplane.sim.cluster.config import ClusterConfig
from inferplane.sim.cluster.routing import Router
from inferplane.sim.cluster.workload import Arrival, kv_hashes
from inferplane.sim.cost_model import get_preset
from inferplane.sim.replica import Replica, TimedPlan
from inferplane.sim.tokenizer import get_tokenizer

_ADMIT, _STEP, _TICK, _CANCEL = 0, 1, 2, 3
_NAN = float("nan")
_STUCK_AFTER = 3600.0  # virtual seconds without a step while requests are left


@dataclass(slots=True)
class RunData:
    """Everything measured in one run (per-request columns indexed by request number)."""

    replicas: int
    router: str
    arrival: array = field(default_factory=lambda: array("d"))  # when the client sent it
    client_delay: array = field(default_factory=lambda: array("d"))  # sent - due (concurrency cap)
    stage: array = field(default_factory=lambda: array("l"))
    replica: array = field(default_factory=lambda: array("l"))  # -1: rejected
    prompt_tokens: array = field(default_factory=lambda: array("l"))
    cached_tokens: array = field(default_factory=lambda: array("l"))
    output_tokens: array = field(default_factory=lambda: array("l"))
    first_token: array = field(default_factory=lambda: array("d"))
    finish: array = field(default_factory=lambda: array("d"))
    rejected: dict[str, int] = field(default_factory=dict)
    #: Requests the client gave up on (``teardown_grace`` after their stage ended).
    cancelled: int = 0
    #: Per step: its duration and how many non-first tokens it produced (the ITL distribution).
    step_duration: array = field(default_factory=lambda: array("d"))
    step_tokens: array = field(default_factory=lambda: array("l"))
    #: Output tokens generated per ``sample_interval`` bucket of virtual time (server side).
    generated: array = field(default_factory=lambda: array("d"))
    sample_interval: float = 1.0
    #: (rate, start, end) of each stage as it ran (drained stages start late).
    stage_windows: list[tuple[float | None, float, float]] = field(default_factory=list)
    #: Time series: time, mean and max waiting, mean running, mean and max KV-cache use.
    series: list[tuple[float, float, float, float, float, float]] = field(default_factory=list)
    prefix_queries: list[int] = field(default_factory=list)
    prefix_hits: list[int] = field(default_factory=list)
    preemptions: list[int] = field(default_factory=list)
    busy_time: list[float] = field(default_factory=list)
    steps: int = 0
    scrapes: int = 0
    virtual_time: float = 0.0
    wall_time: float = 0.0
    cpu_time: float = 0.0


def build_replicas(config: ClusterConfig) -> list[Replica]:
    spec = config.replica.spec()
    tokenizer = get_tokenizer(get_preset(config.replica.preset).chat_template)
    # One sampler seed for all: a request's output (length, text) does not depend on where it was routed.
    return [Replica(spec, tokenizer, config.replica.output_length, seed=config.seed) for _ in range(config.replicas)]


#: ``progress(virtual_time, sent, finished)``, called once per ``sample_interval``.
Progress = Callable[[float, int, int], None]


def run(
    config: ClusterConfig, router: Router, arrivals: Iterable[Arrival], progress: Progress | None = None
) -> RunData:
    """Simulate until every request has finished; returns the raw measurements."""
    state = random.getstate()
    random.seed(config.seed)  # the picker's tie-breaks use the random module
    try:
        return _run(config, router, arrivals, progress)
    finally:
        random.setstate(state)


def _run(config: ClusterConfig, router: Router, arrivals: Iterable[Arrival], progress: Progress | None) -> RunData:
    wall_start, cpu_start = time.perf_counter(), time.process_time()
    replicas = build_replicas(config)
    count = len(replicas)
    spec = replicas[0].spec
    scale = config.replica.time_scale
    overhead = spec.cost.request_overhead_s * scale
    block_size = spec.block_size
    prefix_caching = spec.enable_prefix_caching
    model = config.model or get_preset(config.replica.preset).model_name
    ignore_eos = config.ignore_eos
    data = RunData(count, router.name, sample_interval=config.sample_interval)
    heap: list[tuple[float, int, int, int, object]] = []
    push, pop = heapq.heappush, heapq.heappop
    seq = 0
    stepping: list[TimedPlan | None] = [None] * count
    changed = [True] * count
    first_token, finish, output_tokens, cached = data.first_token, data.finish, data.output_tokens, data.cached_tokens
    step_duration, step_tokens = data.step_duration, data.step_tokens
    uses_metrics = router.uses_metrics
    tick = router.scrape_interval
    sample_every = config.sample_interval
    next_sample = 0.0
    unfinished = 0
    steps = 0
    last_progress = 0.0
    cap = config.max_concurrency
    backlog: deque[tuple[Arrival, float]] = deque()
    # stages: (rate, nominal start, duration); with drain, a stage starts `pause` s after the last
    # one's requests have all finished (inference-perf), shifting later arrivals by `offset`
    schedule = getattr(config.workload, "arrivals", None)
    stages: list[tuple[float | None, float, float]] = []
    elapsed = 0.0
    for stage in schedule.stage_list() if schedule is not None else ():
        stages.append((stage.rate, elapsed, stage.duration))
        elapsed += stage.duration
    if not stages:
        stages.append((None, 0.0, float("inf")))  # a trace: one open stage
    drain = schedule is not None and schedule.drain_between_stages
    pause = schedule.stage_interval if schedule is not None else 0.0
    grace = schedule.teardown_grace if schedule is not None else None
    offset = 0.0
    current_stage = -1
    in_flight: dict[int, int] = {}  # request number -> replica, until it finishes or is cancelled
    generated = data.generated

    def send(arrival: Arrival, now: float, due: float) -> None:
        """The client sends a request: it is routed now and reaches its replica after the overhead."""
        nonlocal seq, unfinished
        index = len(data.arrival)
        prompt = arrival.prompt
        data.arrival.append(now)
        data.client_delay.append(now - due)
        data.stage.append(arrival.stage)
        data.prompt_tokens.append(prompt.num_tokens)
        first_token.append(_NAN)
        finish.append(_NAN)
        output_tokens.append(0)
        cached.append(0)
        if replicas[0].fits(prompt.num_tokens, arrival.max_tokens) is not None:
            data.replica.append(-1)
            data.rejected["context length"] = data.rejected.get("context length", 0) + 1
            return
        r = router.route(index, arrival, model)
        data.replica.append(r)
        unfinished += 1
        in_flight[index] = r
        seq += 1
        push(heap, (now + overhead, seq, _ADMIT, r, (index, arrival)))

    def start_step(r: int, now: float) -> None:
        nonlocal seq
        timed = replicas[r].begin_step()
        stepping[r] = timed
        if timed is not None:
            seq += 1
            push(heap, (now + timed.duration * scale, seq, _STEP, r, timed))

    if uses_metrics:
        router.scrape(0.0, replicas, changed)
        data.scrapes += 1
    seq += 1
    push(heap, (0.0, seq, _TICK, 0, None))
    source = iter(arrivals)
    upcoming = next(source, None)
    now = 0.0
    while heap:
        if upcoming is not None and upcoming.stage != current_stage and not (drain and unfinished):
            # a new stage begins (with drain: once every request of the last one has finished)
            if drain and current_stage >= 0:
                offset = max(offset, now + pause - stages[upcoming.stage][1])
            for skipped in range(current_stage + 1, upcoming.stage + 1):  # stages without arrivals too
                rate, start, duration = stages[skipped]
                data.stage_windows.append((rate, start + offset, start + offset + duration))
                if grace is not None:
                    seq += 1
                    push(heap, (start + offset + duration + grace, seq, _CANCEL, skipped, None))
            current_stage = upcoming.stage
        if upcoming is not None and upcoming.stage == current_stage and upcoming.time + offset < heap[0][0]:
            arrival = upcoming
            upcoming = next(source, None)
            now = arrival.time + offset
            if cap is not None and unfinished >= cap:
                backlog.append((arrival, now))  # the client waits for one of its requests to finish
            else:
                send(arrival, now, now)
            continue

        now, _, kind, r, payload = pop(heap)
        if kind == _STEP:
            replica = replicas[r]
            timed = payload
            assert isinstance(timed, TimedPlan)
            produced = replica.finish_step(timed)
            steps += 1
            last_progress = now
            changed[r] = True
            later = 0
            for request in produced:
                if request.first_token_time is None:
                    request.first_token_time = now
                    i = int(request.request_id)
                    first_token[i] = now
                    cached[i] = request.num_cached_tokens
                    router.first_token(i)
                else:
                    later += 1
                if request.finish_reason is not None:
                    i = int(request.request_id)
                    finish[i] = now
                    output_tokens[i] = request.num_output_tokens
                    unfinished -= 1
                    del in_flight[i]
                    router.finished(i)
                    if backlog:
                        waiting, due = backlog.popleft()
                        send(waiting, now, due)
            step_duration.append(timed.duration * scale)
            step_tokens.append(later)
            bucket = int(now / sample_every)
            if bucket >= len(generated):
                generated.extend([0.0] * (bucket + 1 - len(generated)))
            generated[bucket] += len(produced)
            start_step(r, now) if replica.has_work else stepping.__setitem__(r, None)
        elif kind == _ADMIT:
            request_number, arrival = cast("tuple[int, Arrival]", payload)
            if request_number not in in_flight:
                continue  # cancelled before it reached the replica
            replica = replicas[r]
            prompt = arrival.prompt
            request = replica.add_request(
                str(request_number), prompt.token_ids, arrival.max_tokens, ignore_eos=ignore_eos, arrival_time=now
            )
            if prefix_caching:
                request.block_hashes = kv_hashes(prompt, block_size)[:]
            changed[r] = True
            if stepping[r] is None:
                start_step(r, now)
        elif kind == _CANCEL:  # the client gives up on what is left of stage r
            for backlogged in [entry for entry in backlog if entry[0].stage == r]:
                backlog.remove(backlogged)
                data.cancelled += 1
            for i in [i for i, _ in in_flight.items() if data.stage[i] == r]:
                replica_index = in_flight.pop(i)
                if replicas[replica_index].abort(str(i)) is not None:
                    changed[replica_index] = True
                unfinished -= 1
                router.finished(i)
                data.cancelled += 1
                while backlog and (cap is None or unfinished < cap):
                    waiting, due = backlog.popleft()
                    send(waiting, now, due)
        else:  # _TICK: scrape, sample, and keep ticking while anything is left to happen
            if uses_metrics:
                router.scrape(now, replicas, changed)
                data.scrapes += 1
            if now >= next_sample:
                _sample(data, now, replicas)
                next_sample = now + sample_every
                if progress is not None:
                    progress(now, len(data.arrival), len(data.arrival) - unfinished - len(backlog))
            if upcoming is not None or unfinished:
                seq += 1
                push(heap, (now + tick, seq, _TICK, 0, None))
            # a replica left idle with waiting work it could not fit retries on every tick
            for i in range(count) if unfinished else ():
                if stepping[i] is None and replicas[i].has_work:
                    start_step(i, now)
            if upcoming is None and now - last_progress > _STUCK_AFTER:
                raise RuntimeError(f"{unfinished} requests can never be scheduled (no step for {_STUCK_AFTER:.0f} s)")

    data.steps = steps
    data.virtual_time = now
    for replica in replicas:
        kv = replica.kv_cache
        data.prefix_queries.append(kv.prefix_queries)
        data.prefix_hits.append(kv.prefix_hits)
        data.preemptions.append(replica.scheduler.num_preemptions)
        data.busy_time.append(replica.busy_time * scale)
    data.wall_time = time.perf_counter() - wall_start
    data.cpu_time = time.process_time() - cpu_start
    return data


def _sample(data: RunData, now: float, replicas: list[Replica]) -> None:
    waiting = [len(r.scheduler.waiting) for r in replicas]
    usage = [r.kv_cache.usage for r in replicas]
    running = sum(len(r.scheduler.running) for r in replicas)
    n = len(replicas)
    data.series.append((now, sum(waiting) / n, max(waiting), running / n, sum(usage) / n, max(usage)))
