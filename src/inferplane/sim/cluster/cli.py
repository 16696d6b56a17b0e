"""The ``inferplane simulate`` subcommand: a cluster of simulated replicas behind the picker, in virtual time."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

#: The rate ladder of llm-d's benchmark (GIE ``benchmarking/prefix-cache-aware``, design.md §6):
#: a 15 QPS warm-up for 50 s, then 3 -> 60 QPS.
LLM_D_LADDER: tuple[tuple[float, float], ...] = (
    (15, 50), (3, 20), (10, 20), (15, 20), (20, 38), (22, 34), (25, 30), (30, 25), (35, 21),
    (40, 38), (43, 36), (46, 33), (49, 30), (52, 29), (55, 27), (57, 26), (60, 25),
)  # fmt: skip


def _positive(kind: type[int | float]) -> Any:
    def parse(text: str) -> int | float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value <= 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value

    parse.__name__ = kind.__name__
    return parse


def _rates(text: str) -> list[float] | str:
    if text == "llm-d":
        return text
    try:
        rates = [float(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate, a comma-separated list of rates or 'llm-d'") from None
    if any(rate <= 0 for rate in rates):
        raise argparse.ArgumentTypeError(f"rates must be positive, got {text}")
    return rates


def add_parser(subparsers: argparse._SubParsersAction) -> None:
    """Register ``simulate``."""
    parser = subparsers.add_parser(
        "simulate",
        help="simulate a cluster of replicas behind the picker in virtual time (capacity planning)",
        description="Discrete-event simulation of N simulated vLLM replicas and the endpoint picker's real "
        "scheduling code in one process: replay a workload, compare routing profiles, or find how many "
        "replicas meet an SLO.",
    )
    replica = parser.add_argument_group("replicas")
    replica.add_argument("--preset", help="simulator preset (default llama3-8b-h100)")
    replica.add_argument("--replicas", type=_positive(int), default=8, help="number of replicas (default 8)")
    replica.add_argument(
        "--replica-config",
        metavar="FILE",
        help="YAML: an `inferplane serve` config (its `server` section, e.g. bench/routing/replica.yaml) "
        "or a `replica` section (block_size, num_blocks, max_num_seqs, time_scale, cost, ...)",
    )
    work = parser.add_argument_group("workload")
    work.add_argument(
        "--workload",
        default="shared-prefix",
        metavar="KIND",
        help="shared-prefix (design.md §6), random, or trace:FILE (JSONL); default shared-prefix",
    )
    work.add_argument(
        "--rate",
        type=_rates,
        default=None,
        help="Poisson QPS; a comma-separated list runs stages of --stage-duration each; "
        "'llm-d' = llm-d's 15 (warm-up), 3 -> 60 QPS ladder",
    )
    work.add_argument("--requests", type=_positive(int), help="stop after this many requests")
    work.add_argument("--duration", type=_positive(float), help="seconds of arrivals at a single --rate")
    work.add_argument("--stage-duration", type=_positive(float), default=30.0, help="seconds per stage (default 30)")
    work.add_argument("--groups", type=_positive(int), help="shared-prefix: groups (150)")
    work.add_argument("--prompts-per-group", type=_positive(int), help="shared-prefix: prompts per group (5)")
    work.add_argument("--system-len", type=_positive(int), help="shared-prefix: system prompt tokens (6000)")
    work.add_argument("--question-len", type=_positive(int), help="shared-prefix: question tokens (1200)")
    work.add_argument("--input-len", type=_positive(int), help="random: prompt tokens (7200)")
    work.add_argument("--output-len", type=_positive(int), help="output tokens per request (1000)")
    work.add_argument(
        "--drain-stages",
        action="store_true",
        help="start each stage once the previous stage's requests have all finished (inference-perf); "
        "implied by --rate llm-d",
    )
    work.add_argument(
        "--stage-interval", type=float, default=None, help="seconds between drained stages (llm-d: 1)"
    )
    work.add_argument(
        "--teardown-grace",
        type=float,
        default=None,
        help="cancel a stage's requests still unfinished this long after it ends (they count as failures)",
    )
    work.add_argument(
        "--max-concurrency",
        type=_positive(int),
        help="the client keeps at most this many requests in flight (later arrivals wait); default: open loop",
    )
    work.add_argument("--speedup", type=_positive(float), help="trace: divide timestamps by this")
    routing = parser.add_argument_group("routing")
    routing.add_argument(
        "--profile",
        default="default",
        help="round-robin, random, cache-aware (vllm-router's and sglang-router's policy), default (the picker's), "
        "gie (queue 2, kv 2, prefix 3), load-only, or a picker YAML file (default: default)",
    )
    routing.add_argument("--compare-profiles", metavar="P1,P2,...", help="run each profile on the same workload")
    search = parser.add_argument_group("capacity search")
    search.add_argument("--find-replicas", action="store_true", help="smallest --replicas meeting the SLO")
    search.add_argument("--slo-ttft-p90", type=_positive(float), metavar="S", help="TTFT p90 bound (seconds)")
    search.add_argument("--slo-itl-p90", type=_positive(float), metavar="S", help="ITL p90 bound (seconds)")
    search.add_argument("--slo-e2e-p90", type=_positive(float), metavar="S", help="e2e latency p90 bound (seconds)")
    search.add_argument("--max-replicas", type=_positive(int), default=1024, help="search limit (default 1024)")
    out = parser.add_argument_group("output")
    out.add_argument("--seed", type=int, default=0, help="seed of the picker's tie-breaks and the replicas")
    out.add_argument("--out", metavar="DIR", help="write simulate.json and simulate.md there")
    out.add_argument("--json", action="store_true", help="print the JSON instead of the markdown summary")
    out.add_argument("--progress", action="store_true", help="report progress on stderr every 10 s of wall time")
    parser.set_defaults(func=run, parser=parser)


def build_config(args: argparse.Namespace, error: Any) -> Any:
    """The :class:`ClusterConfig` the flags describe; ``error(message)`` exits naming the flag."""
    from pydantic import ValidationError

    from inferplane.configfile import ConfigError, format_validation_error, read_yaml
    from inferplane.sim.cluster.config import (
        ClusterConfig,
        ReplicaConfig,
        replica_from_server_section,
    )
    from inferplane.sim.cost_model import PRESETS

    replica: dict[str, Any] = {}
    if args.replica_config:
        raw = read_yaml(args.replica_config)
        section = raw.get("server") if "server" in raw else raw.get("replica", raw)
        if not isinstance(section, dict):
            error(f"argument --replica-config: {args.replica_config} has no `server` or `replica` mapping")
            return None
        try:
            replica = replica_from_server_section(section) if "server" in raw else dict(section)
            ReplicaConfig.model_validate(replica)
        except (ValueError, ValidationError) as exc:
            if isinstance(exc, ValidationError):
                raise ConfigError(format_validation_error(exc, f"{args.replica_config} (--replica-config)")) from None
            error(f"argument --replica-config: {exc}")
    if args.preset is not None:
        if args.preset not in PRESETS:
            error(f"argument --preset: unknown preset {args.preset!r}; choose one of {', '.join(PRESETS)}")
        replica["preset"] = args.preset

    kind, _, trace_path = args.workload.partition(":")
    shape: dict[str, Any] = {}
    if kind in ("shared-prefix", "random"):
        if trace_path:
            error(f"argument --workload: {kind} takes no file")
        if args.rate is None:
            error(f"argument --rate: required for the {kind} workload")
        if args.rate == "llm-d":
            stages = [{"rate": r, "duration": d} for r, d in LLM_D_LADDER]
            arrivals: dict[str, Any] = {
                "stages": stages,
                "num_requests": args.requests,
                "drain_between_stages": True,
                "stage_interval": 1.0,
            }
        elif len(args.rate) > 1:
            if args.duration is not None:
                error("argument --duration: use --stage-duration with several rates")
            stages = [{"rate": r, "duration": args.stage_duration} for r in args.rate]
            arrivals = {"stages": stages, "num_requests": args.requests}
        else:
            arrivals = {"rate": args.rate[0], "num_requests": args.requests, "duration": args.duration}
            if args.requests is None and args.duration is None:
                arrivals["duration"] = 60.0
        if args.drain_stages:
            arrivals["drain_between_stages"] = True
        if args.stage_interval is not None:
            arrivals["stage_interval"] = args.stage_interval
        if args.teardown_grace is not None:
            arrivals["teardown_grace"] = args.teardown_grace
        names = {
            "groups": "num_groups",
            "prompts_per_group": "prompts_per_group",
            "system_len": "system_prompt_len",
            "question_len": "question_len",
            "output_len": "output_len",
        }
        if kind == "random":
            names = {"input_len": "input_len", "output_len": "output_len"}
        for flag in ("groups", "prompts_per_group", "system_len", "question_len", "input_len"):
            if getattr(args, flag) is not None and flag not in names:
                error(f"argument --{flag.replace('_', '-')}: not used by the {kind} workload")
        shape = {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag) is not None}
        workload: dict[str, Any] = {"kind": kind, "arrivals": arrivals, **shape}
    elif kind == "trace":
        if not trace_path:
            error("argument --workload: trace needs a file, as trace:FILE")
        if not Path(trace_path).is_file():
            error(f"argument --workload: trace file {trace_path} not found")
        workload = {"kind": "trace", "path": trace_path, "num_requests": args.requests}
        if args.speedup is not None:
            workload["speedup"] = args.speedup
    else:
        error(f"argument --workload: unknown workload {args.workload!r}; use shared-prefix, random or trace:FILE")
    try:
        return ClusterConfig.model_validate(
            {
                "replicas": args.replicas,
                "replica": replica,
                "workload": workload,
                "seed": args.seed,
                "max_concurrency": args.max_concurrency,
            }
        )
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, "the command line")) from None


def _progress_printer() -> Any:
    import time

    started = last = time.monotonic()

    def show(virtual: float, sent: int, finished: int) -> None:
        nonlocal last
        now = time.monotonic()
        if now - last >= 10:
            last = now
            print(f"  t={virtual:,.0f} s virtual: {sent:,} sent, {finished:,} done ({now - started:,.0f} s wall)", file=sys.stderr)

    return show


def run(args: argparse.Namespace) -> int:
    """Run the simulation(s) the flags ask for; print or write the results."""
    from inferplane.configfile import ConfigError
    from inferplane.sim.cluster import capacity, report
    from inferplane.sim.cluster.routing import make_router
    from inferplane.sim.cluster.workload import TraceError

    parser: argparse.ArgumentParser = args.parser
    if args.find_replicas and not (args.slo_ttft_p90 or args.slo_itl_p90 or args.slo_e2e_p90):
        parser.error("argument --find-replicas: needs an SLO (--slo-ttft-p90, --slo-itl-p90 or --slo-e2e-p90)")
    if args.find_replicas and args.compare_profiles:
        parser.error("argument --compare-profiles: not allowed with --find-replicas")
    config = build_config(args, parser.error)
    profiles = args.compare_profiles.split(",") if args.compare_profiles else [args.profile]
    for profile in profiles:
        try:
            make_router(profile, 1)  # fail fast on a bad profile
        except ConfigError as exc:
            flag = "--compare-profiles" if args.compare_profiles else "--profile"
            parser.error(f"argument {flag}: {exc}")
    result: dict[str, Any]
    try:
        if args.find_replicas:
            slo = capacity.Slo(args.slo_ttft_p90, args.slo_itl_p90, args.slo_e2e_p90)

            def progress(n: int, summary: dict[str, Any], missed: list[str]) -> None:
                verdict = "meets the SLO" if not missed else "misses: " + "; ".join(missed)
                print(f"  {n} replicas: TTFT p90 {summary['ttft_s']['p90']:.3f} s — {verdict}", file=sys.stderr)

            found = capacity.find_replicas(config, profiles[0], slo, args.max_replicas, progress)
            summaries = [t["summary"] for t in found.trials if t["replicas"] == found.replicas]
            result = {"replicas_needed": found.replicas, "slo": asdict(slo), "trials": found.trials}
            head = (
                f"{found.replicas} replicas meet the SLO with profile {profiles[0]}"
                if found.replicas is not None
                else f"no replica count up to {args.max_replicas} meets the SLO with profile {profiles[0]}"
            )
            text = head + "\n\n" + report.markdown(summaries or [found.trials[-1]["summary"]], "Smallest passing run")
        else:
            summaries = capacity.compare_profiles(config, profiles, _progress_printer() if args.progress else None)
            result = {"config": config.model_dump(mode="json"), "runs": summaries}
            text = report.markdown(summaries)
    except TraceError as exc:
        parser.error(f"argument --workload: {exc}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "simulate.json").write_text(json.dumps(result, indent=1))
        (out / "simulate.md").write_text(text)
    print(json.dumps(result, indent=1) if args.json else text, end="")
    return 0
