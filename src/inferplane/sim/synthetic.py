"""Drive one :class:`Replica` in virtual time with a synthetic workload (profiling, sanity checks).

``python -m inferplane.sim.synthetic --requests 10000`` runs Poisson arrivals of shared-prefix
prompts through one replica as fast as the CPU allows and prints steps/s of wall time and the
latencies the replica would have shown.
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass

from inferplane.sim.config import OutputLengthConfig
from inferplane.sim.cost_model import get_preset
from inferplane.sim.replica import Replica, ReplicaSpec
from inferplane.sim.tokenizer import get_tokenizer


@dataclass(slots=True)
class SyntheticResult:
    requests: int
    steps: int
    virtual_seconds: float
    wall_seconds: float
    cpu_seconds: float
    output_tokens: int
    mean_ttft: float
    mean_itl: float
    prefix_hit_rate: float
    preemptions: int

    @property
    def steps_per_second(self) -> float:
        """Steps per second of CPU time (wall time is noisy on a shared machine)."""
        return self.steps / self.cpu_seconds if self.cpu_seconds else 0.0


def run_synthetic(
    replica: Replica,
    num_requests: int,
    rate: float,
    *,
    num_groups: int = 50,
    prefix_tokens: int = 1000,
    suffix_tokens: int = 200,
    max_tokens: int = 200,
    seed: int = 0,
) -> SyntheticResult:
    """Poisson(``rate``) arrivals; each prompt is one of ``num_groups`` shared prefixes plus a
    unique suffix. Time is virtual: a step ends ``duration`` after it starts."""
    rng = random.Random(seed)
    prefixes = [[rng.randrange(300, 70000) for _ in range(prefix_tokens)] for _ in range(num_groups)]
    arrivals: list[float] = []
    now = 0.0
    for _ in range(num_requests):
        now += rng.expovariate(rate)
        arrivals.append(now)
    overhead = replica.cost.request_overhead_s
    clock = 0.0
    next_arrival = 0
    steps = output_tokens = 0
    ttft_sum = itl_sum = 0.0
    itl_count = 0
    started = time.perf_counter()
    cpu_started = time.process_time()
    finished = 0
    while finished < num_requests:
        # A request reaches the scheduler request_overhead_s after it arrives.
        while next_arrival < num_requests and arrivals[next_arrival] + overhead <= clock:
            first = 300 + (next_arrival * suffix_tokens) % 60000  # a suffix no other request has
            prompt = prefixes[rng.randrange(num_groups)] + list(range(first, first + suffix_tokens))
            replica.add_request(
                f"req-{next_arrival}", prompt, max_tokens, ignore_eos=True, arrival_time=arrivals[next_arrival]
            )
            next_arrival += 1
        timed = replica.begin_step()
        if timed is None:
            clock = arrivals[next_arrival] + overhead
            continue
        clock += timed.duration
        for request in replica.finish_step(timed):
            output_tokens += 1
            if request.first_token_time is None:
                request.first_token_time = clock
                ttft_sum += clock - request.arrival_time
            if request.finish_reason is not None:
                finished += 1
                if request.num_output_tokens > 1:
                    itl_sum += (clock - request.first_token_time) / (request.num_output_tokens - 1)
                    itl_count += 1
        steps += 1
    wall = time.perf_counter() - started
    cpu = time.process_time() - cpu_started
    kv = replica.kv_cache
    return SyntheticResult(
        requests=num_requests,
        steps=steps,
        virtual_seconds=clock,
        wall_seconds=wall,
        cpu_seconds=cpu,
        output_tokens=output_tokens,
        mean_ttft=ttft_sum / num_requests,
        mean_itl=itl_sum / itl_count if itl_count else 0.0,
        prefix_hit_rate=kv.prefix_hits / kv.prefix_queries if kv.prefix_queries else 0.0,
        preemptions=replica.scheduler.num_preemptions,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="llama3-8b-h100")
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--rate", type=float, default=20.0, help="arrivals per virtual second")
    parser.add_argument("--max-tokens", type=int, default=200)
    parser.add_argument("--profile", action="store_true", help="print a cProfile of the run")
    args = parser.parse_args(argv)
    preset = get_preset(args.preset)
    spec = ReplicaSpec.from_preset(preset)
    replica = Replica(spec, get_tokenizer(preset.chat_template), OutputLengthConfig())

    def run() -> SyntheticResult:
        return run_synthetic(replica, args.requests, args.rate, max_tokens=args.max_tokens)

    if args.profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile()
        result = profiler.runcall(run)
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(15)
    else:
        result = run()
    print(
        f"{result.requests} requests, {result.steps} steps in {result.cpu_seconds:.2f} s CPU "
        f"({result.wall_seconds:.2f} s wall; {result.steps_per_second:,.0f} steps/s, "
        f"{result.output_tokens / result.cpu_seconds:,.0f} tokens/s); virtual {result.virtual_seconds:.1f} s, mean TTFT {result.mean_ttft * 1000:.0f} ms, "
        f"mean ITL {result.mean_itl * 1000:.1f} ms, prefix hit rate {result.prefix_hit_rate:.2f}, "
        f"preemptions {result.preemptions}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
