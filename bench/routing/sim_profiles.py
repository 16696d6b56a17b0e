"""Routing profiles compared in the cluster simulator, in the routing benchmark's setting.

    python bench/routing/sim_profiles.py                 # benchmark setting, 3 seeds (~2 min)
    python bench/routing/sim_profiles.py --full-size     # also llm-d's full-size ladder (~2 min a profile)
    python bench/routing/sim_profiles.py --profiles default,gie --seeds 1

The benchmark setting is read from the files run.py uses, nothing is restated here: the replicas
of replica.yaml (qwen3-32b-tp2-h100 scaled 1/20, time_scale 20), the shared-prefix and random
workloads of workloads/*.yaml and the full rate ladder of workloads/ladder.yaml (stages drained
one after the other, `interval` s apart; like inference-perf without a stage timeout, the client never
gives up on a request).
Since the simulated replicas are the real-process benchmark's replicas with time_scale kept, rates
and latencies compare directly with bench/results/routing.md.

Each profile runs on every seed (the picker's tie-breaks and the workload's prompts and arrival
times); the tables show the mean over seeds of each stage's output tok/s and TTFT p90, as
inference-perf reports stages. `oracle` is no picker profile but a yardstick: it knows each
request's prefix group and sends every group to one replica, groups dealt out in turn as they
first appear (perfect affinity, no load awareness). `cache-aware` is no picker profile either:
it is vllm-router's and sglang-router's `--policy cache_aware` with their default thresholds
(`inferplane.sim.cluster.routing.CacheAwareRouter`), the peers of the real-process benchmark.

Writes bench/results/routing-sim.json and routing-sim.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "src"))

from inferplane.picker.config import FilterSpec, PickerConfig, ProfileConfig, ScorerSpec
from inferplane.sim.cluster.config import ClusterConfig, replica_from_server_section
from inferplane.sim.cluster.loop import run
from inferplane.sim.cluster.report import summarize
from inferplane.sim.cluster.routing import (
    PickerRouter,
    RoundRobinRouter,
    Router,
    make_router,
)
from inferplane.sim.cluster.workload import Arrival, generate
from inferplane.sim.cost_model import get_preset
from inferplane.sim.tokenizer import get_tokenizer

RESULTS = REPO / "bench" / "results"
Q, K, P, I, B = (
    "queue-scorer",
    "kv-cache-utilization-scorer",
    "prefix-cache-scorer",
    "in-flight-scorer",
    "prefill-backlog-scorer",
)


def profile(*scorers: tuple[str, float] | tuple[str, float, dict[str, Any]], hot_spot: bool = False) -> PickerConfig:
    """A picker configuration with these (type, weight[, parameters]) scorers, no filter or the hot-spot filter."""
    specs = [ScorerSpec(type=s[0], weight=s[1], parameters=s[2] if len(s) > 2 else {}) for s in scorers]
    filters = [FilterSpec(type="hot-spot-filter")] if hot_spot else []
    return PickerConfig(profile=ProfileConfig(filters=filters, scorers=specs))


#: What was compared, by name. `default` is whatever the picker's default profile is now.
PROFILES: dict[str, str | PickerConfig] = {
    "round-robin": "round-robin",
    "oracle": "oracle",
    "cache-aware": "cache-aware",
    "default": "default",
    "gie": "gie",
    "previous-default": "in-flight",
    "gie+in-flight×1": profile((Q, 2), (K, 2), (P, 3), (I, 1)),
    "gie+backlog×1": profile((Q, 2), (K, 2), (P, 3), (B, 1)),
    "gie+hot-spot-filter": profile((Q, 2), (K, 2), (P, 3), hot_spot=True),
    "gie+backlog×3": profile((Q, 2), (K, 2), (P, 3), (B, 3)),
    "queue×1 kv×2 prefix×3 backlog×3 in-flight×1": profile((Q, 1), (K, 2), (P, 3), (B, 3), (I, 1)),
}
#: What the comparison showed (November 2026), printed under the tables.
NOTES = """\
## What moved the numbers

- **Replaying inference-perf as it really runs (session 6).** The table against the real-process
  benchmark showed two differences, both in how the simulator played the client, not the replicas:
  - it cancelled requests 60 s after their stage (the ladder's `teardown_grace`), but inference-perf
    0.7 waits for every request of a stage unless the stage has a `timeout`. Round-robin had lost a
    third of its 20 QPS requests that way (216 tok/s against the real 316);
  - inference-perf starts every stage from the first prompt of its shuffled list, so a stage resends
    the previous stage's prompts, questions included. The simulator had carried on down the list.
  With both fixed, round-robin agrees with the real runs within -3 ... +8 % on output tok/s from
  12 QPS, and `default` with inferplane within +-3 % below saturation in session 6's run (+3 ... +6 %
  in session 7's). At 30 QPS the three real runs of inferplane gave 895 / 2.6 s, 818 / 6.7 s and
  789 / 7.2 s (tok/s / TTFT p90); the simulator's 779 / 6.6 s sits at the low end. At saturation the
  real TTFT p90 swings 2-4x from run to run for every router.
- **The in-flight scorer x3 (the previous default) costs affinity under load.** At 30 QPS here it
  gives 710 tok/s and TTFT p90 18.7 s, against `default`'s 779 tok/s and 6.6 s. Its tolerance, half
  the mean in-flight count, lets a busy prefix holder lose to a less busy endpoint, which then misses
  the prefix and evicts other prefixes: the KV caches thrash. With the prompt order fixed it no
  longer collapses at full size (95.5 % prefix hits, TTFT p90 <= 0.51 s; session 4's runs had ~55 s
  from 40 QPS), but it stays below `gie` there from 20 QPS.
- **`default` against `gie`.** At the benchmark's scale `default` is ahead at 30 QPS (779 / 6.6 s
  against 750 / 8.7 s). At full size they are within 4 % up to 35 QPS; from 40 QPS `gie` serves
  7-13 % more (60 QPS: 11,548 against 10,526 tok/s) at the same TTFT p90 (~0.19 s) and the same
  prefix-hit rate (97 %). With the precise prefix scorer instead of the approximate one, `default`
  serves as much as `gie` there (bench/results/routing-sim-precise.md), so the loss comes from the
  backlog scorer working from the approximate match; how exactly was not isolated.
- **The prefill-backlog scorer** counts the uncached prompt tokens routed to an endpoint whose first
  token has not come back, plus the request's own uncached tokens there. It moves on every pick and
  every first token, so it stopped `gie`'s herding at low load. That herding happened before the
  picker counted requests still in transit to a replica (session 5); in this rerun `gie`'s 6 QPS TTFT
  p90 is level with `default`'s. As a ratio `(min + 64) / (cost + 64)` at x1 it only decides among
  endpoints otherwise alike. Stronger weights collapsed at full size in session 4's exploration runs:
  x3 with GIE's weights from 40 QPS, x2 from 43 QPS, and a difference `1 - (cost - min) / 2048`
  instead of the ratio from 20 QPS. Predicted TTFT alone does not see that a miss also evicts other
  groups' prefixes, so it must not outvote the prefix scorer.
- **The hot-spot filter** (drop endpoints above 1.5x the mean in-flight count + 4) never triggers on
  the symmetric workloads; it is there for a workload with a few dominant prefixes, where prefix
  weights alone pile everything onto one replica (design.md section 4). On the few-prefix workload it
  acts on 64 of 2,433 requests (seed 0), and `gie`, which lacks it, spreads about as well there
  (max share 14.2 % against 13.3 %): the queue and KV scorers do most of the spreading.
- **Sizing the prefix LRU from the server's cache** (`lru_capacity_from_server`) changed nothing in
  session 4's runs: the simulated index never reaches its capacity on these workloads; it stays opt-in.
- **The Rust routers' policy, emulated (`cache-aware`, session 7).** Against the real vllm-router and
  sglang-router of session 7's run it agrees within -2 ... +11 % on output tok/s and -15 ... +19 % on
  TTFT p90 at every rate of the shared-prefix and few-prefix ladders but one: shared-prefix at 30 QPS,
  where the simulated policy serves 823 tok/s and the real routers 685-775 in three runs (+6 ... +20 %).
  In the simulator that policy is as good as the oracle there and ahead of `default` (823 / 5.8 s
  against 779 / 6.6 s; seed by seed +4 ... +8 % tok/s, TTFT p90 6.4 / 2.1 / 8.9 s against
  8.6 / 2.7 / 8.6 s): on the symmetric workload it is perfect affinity, and load awareness buys
  nothing once every replica is saturated. Most of that difference is in the stage's tail: tokens
  generated during the stage differ by 2 %. So the real routers' deficit against inferplane at 30 QPS
  (inferplane 1.06-1.19x the better one's tok/s in three runs) does not come from the policy as the
  simulator models it, which has no HTTP, text-tree or tokenizer cost and none of vllm-router's 8
  render calls per request. At full size `cache-aware` is level with `default` (10,459 against
  10,526 tok/s at 60 QPS, 96.7 % prefix hits, max share 13.3 %): the peers' hot spot does not arise on
  the symmetric workload at either scale. On the few-prefix workload it does, in the simulator (18.4 %
  of requests on one replica) as in the real runs (2.13x a fair share at 6 QPS), and the balance
  thresholds still save it from the oracle's collapse (pure affinity: 494 tok/s, TTFT p90 44 s at
  30 QPS).
- **The oracle bounds what routing can do on the symmetric workload.** With perfect affinity, 20 QPS gives TTFT p90 ~2.1 s.
  Every request pays the API server's 0.7 s (35 ms x time_scale 20) plus at least one engine step of
  ~0.45-0.55 s, with the ~70 running sequences per replica this rate implies (step 15 ms + 0.08 ms
  per sequence, x20). 20 QPS is therefore not where a router can halve TTFT. At 30 QPS even the oracle
  saturates (843 tok/s, TTFT p90 6.2 s).
"""
DEFAULT_SET = "round-robin,oracle,cache-aware,previous-default,gie,default"


class OracleRouter(RoundRobinRouter):
    """Perfect prefix affinity: each prefix group on one replica, groups dealt out in turn."""

    def __init__(self, replicas: int) -> None:
        super().__init__(replicas, name="oracle")
        self.owner: dict[int, int] = {}

    def route(self, index: int, arrival: Arrival, model: str) -> int:
        prefix = arrival.prompt.prefix
        if prefix is None:
            return super().route(index, arrival, model)
        return self.owner.setdefault(id(prefix), len(self.owner) % self.replicas)


def router_for(name: str, replicas: int, seed: int) -> Router:
    chosen = PROFILES[name]
    if chosen == "oracle":
        return OracleRouter(replicas)
    if isinstance(chosen, PickerConfig):
        return PickerRouter(chosen, replicas, name=name)
    return make_router(chosen, replicas, seed)


def bench_configs(seed: int) -> dict[str, ClusterConfig]:
    """The routing benchmark's three workloads over its 8 replicas, from its own files."""
    server = yaml.safe_load((HERE / "replica.yaml").read_text())["server"]
    ladder = yaml.safe_load((HERE / "workloads" / "ladder.yaml").read_text())["full"]
    control = yaml.safe_load((HERE / "workloads" / "random.yaml").read_text())["data"]

    def shared_prefix(workload: str) -> dict[str, Any]:
        shared = yaml.safe_load((HERE / "workloads" / f"{workload}.yaml").read_text())["data"]["shared_prefix"]
        return {
            "kind": "shared-prefix",
            "num_groups": shared["num_groups"],
            "prompts_per_group": shared["num_prompts_per_group"],
            "system_prompt_len": shared["system_prompt_len"],
            "question_len": shared["question_len"],
            "output_len": shared["output_len"],
        }

    shapes = {
        "shared-prefix": shared_prefix("shared-prefix"),
        "few-prefix": shared_prefix("few-prefix"),
        "random": {
            "kind": "random",
            "input_len": int(control["input_distribution"]["mean"]),
            "output_len": int(control["output_distribution"]["mean"]),
        },
    }
    configs = {}
    for workload, shape in shapes.items():
        stages = ladder[workload]
        arrivals = {
            "stages": [{"rate": r, "duration": stages["duration"]} for r in stages["rates"]],
            "drain_between_stages": True,
            "stage_interval": stages.get("interval", 0),
            # inference-perf 0.7 waits for every request of a stage (run.py sets no stage timeout), so
            # the ladder's teardown_grace never cancels anything there: not modelled
        }
        configs[workload] = ClusterConfig.model_validate(
            {
                "replicas": 8,
                "replica": replica_from_server_section(server),
                "workload": {**shape, "seed": 42 + seed, "arrivals": arrivals},
                "seed": seed,
                "model": server.get("served_model_name"),
            }
        )
    return configs


def full_size_config(seed: int) -> ClusterConfig:
    """llm-d's benchmark at full size (design.md §6): `inferplane simulate --rate llm-d`."""
    from inferplane.sim.cluster.cli import LLM_D_LADDER

    return ClusterConfig.model_validate(
        {
            "replicas": 8,
            "replica": {"preset": "qwen3-32b-tp2-h100"},
            "workload": {
                "kind": "shared-prefix",
                "seed": 42 + seed,
                "arrivals": {
                    "stages": [{"rate": r, "duration": d} for r, d in LLM_D_LADDER],
                    "drain_between_stages": True,
                    "stage_interval": 1.0,
                },
            },
            "seed": seed,
        }
    )


def simulate(config: ClusterConfig, name: str) -> dict[str, Any]:
    tokenizer = get_tokenizer(get_preset(config.replica.preset).chat_template)
    summary = summarize(run(config, router_for(name, config.replicas, config.seed), generate(config.workload, tokenizer)))
    summary.pop("series", None)
    return summary


def stage_rows(summaries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per stage: the mean over seeds of output tok/s, TTFT p50 / p90, plus the seeds' TTFT p90 range."""
    rows = []
    for index, stage in enumerate(summaries[0]["stages"]):
        same = [s["stages"][index] for s in summaries if index < len(s["stages"])]
        p90 = [st["ttft_s"]["p90"] for st in same]
        rows.append(
            {
                "rate": stage.get("rate"),
                "output_tokens_per_s": statistics.mean(st["output_tokens_per_s"] for st in same),
                "ttft_p50_s": statistics.mean(st["ttft_s"]["p50"] for st in same),
                "ttft_p90_s": statistics.mean(p90),
                "ttft_p90_range_s": [min(p90), max(p90)],
                "completed": sum(st["requests"] for st in same),
            }
        )
    return rows


def run_set(configs: dict[int, ClusterConfig], names: list[str]) -> dict[str, Any]:
    results: dict[str, Any] = {}
    for name in names:
        started = time.perf_counter()
        summaries = [simulate(config, name) for config in configs.values()]
        results[name] = {
            "stages": stage_rows(summaries),
            "prefix_hit_rate": statistics.mean(s["prefix_hit_rate"] for s in summaries),
            "max_replica_share": max(s["max_replica_share"] for s in summaries),
            "preemptions": statistics.mean(s["preemptions"] for s in summaries),
            "sent": sum(s["sent"] for s in summaries),
            "completed": sum(s["completed"] for s in summaries),
            "wall_s": time.perf_counter() - started,
        }
        print(f"  {name}: {results[name]['wall_s']:.1f} s", file=sys.stderr, flush=True)
    return results


def table(results: dict[str, Any]) -> list[str]:
    rates = [st["rate"] for st in next(iter(results.values()))["stages"]]
    head = "| profile | " + " | ".join(f"{r:g} QPS" for r in rates) + " | prefix hit | max share | preemptions | completed |"
    lines = [head, "|---|" + "---:|" * (len(rates) + 4)]
    for name, r in results.items():
        cells = [f"{st['output_tokens_per_s']:,.0f} / {st['ttft_p90_s']:.2f}" for st in r["stages"]]
        lines.append(
            f"| {name} | " + " | ".join(cells)
            + f" | {r['prefix_hit_rate']:.1%} | {r['max_replica_share']:.1%} | {r['preemptions']:.0f} | {r['completed']}/{r['sent']} |"
        )
    return lines


def checks(bench: dict[str, dict[str, Any]]) -> list[str]:
    """Issue 3's targets that the simulator can judge (against its own round-robin and oracle)."""
    sp, rnd = bench["shared-prefix"], bench["random"]
    if "round-robin" not in sp or "default" not in sp:
        return []
    top_rr, top = sp["round-robin"]["stages"][-1], sp["default"]["stages"][-1]
    ctl_rr, ctl = rnd["round-robin"]["stages"][-1], rnd["default"]["stages"][-1]
    lines = [
        "| check (simulated, top rate) | value |",
        "|---|---:|",
        f"| shared-prefix: default output tok/s / round-robin's | {top['output_tokens_per_s'] / top_rr['output_tokens_per_s']:.2f}x |",
    ]
    if "oracle" in sp:
        oracle = sp["oracle"]["stages"][-1]
        lines.append(f"| shared-prefix: default output tok/s / oracle's | {top['output_tokens_per_s'] / oracle['output_tokens_per_s']:.2f}x |")
        lines.append(f"| shared-prefix: default TTFT p90 / oracle's | {top['ttft_p90_s'] / oracle['ttft_p90_s']:.2f}x |")
        lines.append(f"| shared-prefix: oracle TTFT p90, the floor for any router (s) | {oracle['ttft_p90_s']:.2f} |")
    few = bench.get("few-prefix", {})
    if "default" in few and "oracle" in few:
        top_few, oracle_few = few["default"]["stages"][-1], few["oracle"]["stages"][-1]
        lines.append("| few-prefix: default TTFT p90 / oracle's (here the oracle is affinity without load awareness: "
                     f"4 replicas busy, 4 idle) | {top_few['ttft_p90_s'] / oracle_few['ttft_p90_s']:.2f}x |")
    lines += [
        f"| random: default TTFT p90 / round-robin's (target <= 1.1) | {ctl['ttft_p90_s'] / ctl_rr['ttft_p90_s']:.2f}x |",
        f"| random: default output tok/s / round-robin's (target >= 0.95) | {ctl['output_tokens_per_s'] / ctl_rr['output_tokens_per_s']:.2f}x |",
    ]
    return lines


#: Real-process router (bench/routing/run.py) and the simulated profile that stands for it.
REAL_PAIRS = (
    ("round-robin", "round-robin"),
    ("vllm-router", "cache-aware"),
    ("sglang-router", "cache-aware"),
    ("inferplane", "default"),
)


def real_benchmark(directory: Path) -> dict[str, Any] | None:
    """The stages of the real-process run (``routing.json`` of bench/routing/run.py), if there is one."""
    path = directory / "routing.json"
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    keys = ("router", "workload", "rate", "output_tok_s", "ttft_p90_s")
    return {"run": f"{data['meta']['started']} – {data['meta']['finished']}",
            "rows": [{k: row.get(k) for k in keys} for row in data["rows"] if row.get("report")]}


def agreement(bench: dict[str, Any], real: dict[str, Any]) -> list[str]:
    """Simulated against real-process stages, router by router and rate by rate."""
    def diff(sim: float, measured: float | None) -> str:
        return f"{sim / measured - 1:+.0%}" if measured else "–"

    lines = [
        "| workload | rate (QPS) | real router / simulated profile | output tok/s real / sim (diff) | TTFT p90 s real / sim (diff) |",
        "|---|---:|---|---|---|",
    ]
    for workload, results in bench.items():
        for real_name, sim_name in REAL_PAIRS:
            for stage in results.get(sim_name, {}).get("stages", []):
                row = next((r for r in real["rows"] if r["router"] == real_name and r["workload"] == workload
                            and r["rate"] == stage["rate"]), None)
                if row is None or row["output_tok_s"] is None or row["ttft_p90_s"] is None:
                    continue
                tok, ttft = stage["output_tokens_per_s"], stage["ttft_p90_s"]
                lines.append(
                    f"| {workload} | {stage['rate']:g} | {real_name} / {sim_name} | {row['output_tok_s']:,.0f} / {tok:,.0f} "
                    f"({diff(tok, row['output_tok_s'])}) | {row['ttft_p90_s']:.2f} / {ttft:.2f} ({diff(ttft, row['ttft_p90_s'])}) |"
                )
    return lines


def profile_text(config: PickerConfig) -> str:
    """``hot-spot-filter; queue-scorer ×2, ...``: a profile in one line."""
    filters = "".join(f"{f.type}; " for f in config.profile.filters)
    return filters + ", ".join(f"{s.type} ×{s.weight:g}" for s in config.profile.scorers)


def render(meta: dict[str, Any], bench: dict[str, Any], full: dict[str, Any] | None, real: dict[str, Any] | None) -> str:
    """The markdown report of one run (its JSON holds everything needed)."""
    md = [
        "# Routing profiles in the cluster simulator",
        "",
        (
            f"Run {meta['started']} with `python bench/routing/sim_profiles.py{' --full-size' if full else ''}`: "
            "the routing benchmark's replicas, workloads and full rate ladder (bench/routing/*.yaml), "
            f"{meta['seeds']} seeds per profile; each cell is output tok/s / TTFT p90 (s) of a stage, the mean over "
            "seeds. `oracle` sends each prefix group to one replica (perfect affinity, a yardstick, not a profile); "
            "`cache-aware` is the Rust routers' `cache_aware` policy with their default thresholds."
        ),
        "",
        f"Default profile now: {meta['default_profile']}.",
        "",
    ]
    for workload, results in bench.items():
        md += [f"## {workload}", "", *table(results), ""]
    md += ["## Checks", "", *checks(bench), ""]
    if real:
        md += [
            "## Against the real-process benchmark",
            "",
            (f"The same stages measured with real processes by `bench/routing/run.py` (bench/results/routing.json, "
             f"run {real['run']}; one run, inferplane = Envoy + picker with the default profile); diff = simulated "
             "relative to real."),
            "",
            *agreement(bench, real),
            "",
        ]
    if full:
        md += [
            "## Full size (llm-d's ladder, design.md §6; seed 0; the first 15 QPS stage is the warm-up)",
            "",
            *table(full),
            "",
        ]
    md += [NOTES]
    return "\n".join(md)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profiles", default=DEFAULT_SET, help=f"comma-separated, of: {', '.join(PROFILES)}")
    parser.add_argument("--seeds", type=int, default=3, help="seeds per profile (default 3)")
    parser.add_argument("--full-size", action="store_true", help="also llm-d's full-size ladder (seed 0)")
    parser.add_argument("--out", type=Path, default=RESULTS, help="directory for routing-sim.{json,md}")
    parser.add_argument("--render", action="store_true", help="only rewrite routing-sim.md from routing-sim.json")
    args = parser.parse_args()
    if args.render:
        saved = json.loads((args.out / "routing-sim.json").read_text())
        text = render(saved["meta"], saved["bench"], saved["full_size"], real_benchmark(args.out))
        (args.out / "routing-sim.md").write_text(text)
        print(text)
        return 0
    names = args.profiles.split(",")
    unknown = [n for n in names if n not in PROFILES]
    if unknown:
        parser.error(f"argument --profiles: unknown {', '.join(unknown)}; known: {', '.join(PROFILES)}")
    started = dt.datetime.now(dt.UTC)
    per_seed = [bench_configs(seed) for seed in range(args.seeds)]
    bench: dict[str, Any] = {}
    for workload in per_seed[0]:
        print(f"{workload}:", file=sys.stderr)
        bench[workload] = run_set({i: c[workload] for i, c in enumerate(per_seed)}, names)
    full: dict[str, Any] | None = None
    if args.full_size:
        print("full size (llm-d ladder):", file=sys.stderr)
        full = run_set({0: full_size_config(0)}, [n for n in names if n not in ("round-robin", "oracle")])
    meta = {
        "started": started.isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "seeds": args.seeds,
        "default_profile": profile_text(PickerConfig()),
        "profiles": {n: PROFILES[n] if isinstance(PROFILES[n], str) else profile_text(PROFILES[n]) for n in names},  # type: ignore[arg-type]
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "routing-sim.json").write_text(json.dumps({"meta": meta, "bench": bench, "full_size": full}, indent=1))
    text = render(meta, bench, full, real_benchmark(args.out))
    (args.out / "routing-sim.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
