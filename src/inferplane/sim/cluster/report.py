"""Statistics of a run (:class:`~inferplane.sim.cluster.loop.RunData`): JSON and markdown.

Throughput is output tokens of the completed requests over the time from the first arrival to the
last completion (per stage: of the requests sent in the stage, from its first arrival to their last
completion, as inference-perf reports stages). ITL is per token: every token after a request's
first took the step that produced it. TPOT is per request: (e2e − TTFT) / (output tokens − 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from inferplane.sim.cluster.loop import RunData

_PERCENTILES = (50, 90, 99)


def _dist(values: np.ndarray) -> dict[str, float | None]:
    if values.size == 0:
        return {"mean": None, **{f"p{p}": None for p in _PERCENTILES}}
    found = np.percentile(values, _PERCENTILES)
    return {"mean": float(values.mean()), **{f"p{p}": float(v) for p, v in zip(_PERCENTILES, found, strict=True)}}


def _weighted_dist(values: np.ndarray, weights: np.ndarray) -> dict[str, float | None]:
    keep = weights > 0
    values, weights = values[keep], weights[keep]
    if values.size == 0:
        return {"mean": None, **{f"p{p}": None for p in _PERCENTILES}}
    order = np.argsort(values, kind="stable")
    values, weights = values[order], weights[order]
    cumulative = np.cumsum(weights)
    total = cumulative[-1]
    result: dict[str, float | None] = {"mean": float((values * weights).sum() / total)}
    for p in _PERCENTILES:
        result[f"p{p}"] = float(values[min(np.searchsorted(cumulative, total * p / 100), values.size - 1)])
    return result


def _latencies(arrival: np.ndarray, first: np.ndarray, finish: np.ndarray, outputs: np.ndarray) -> dict[str, Any]:
    ttft = first - arrival
    e2e = finish - arrival
    multi = outputs > 1
    tpot = (finish[multi] - first[multi]) / (outputs[multi] - 1)
    tokens = int(outputs.sum())
    span = float(finish.max() - arrival.min()) if finish.size else 0.0
    return {
        "requests": int(finish.size),
        "output_tokens": tokens,
        "output_tokens_per_s": tokens / span if span > 0 else 0.0,
        "requests_per_s": finish.size / span if span > 0 else 0.0,
        "ttft_s": _dist(ttft),
        "tpot_s": _dist(tpot),
        "e2e_s": _dist(e2e),
    }


def _generated_per_s(data: RunData, start: float, end: float) -> float:
    """Output tokens the replicas generated in [start, end) over its length (whole buckets)."""
    step = data.sample_interval
    first, last = round(start / step), round(end / step)
    if last <= first:
        return 0.0
    return sum(data.generated[first:last]) / ((last - first) * step)


def summarize(data: RunData) -> dict[str, Any]:
    """Every number of the run, JSON-ready."""
    arrival = np.frombuffer(data.arrival, dtype=np.float64)
    first = np.frombuffer(data.first_token, dtype=np.float64)
    finish = np.frombuffer(data.finish, dtype=np.float64)
    outputs = np.array(data.output_tokens, dtype=np.int64)
    replica = np.array(data.replica, dtype=np.int64)
    stage = np.array(data.stage, dtype=np.int64)
    prompts = np.array(data.prompt_tokens, dtype=np.int64)
    cached = np.array(data.cached_tokens, dtype=np.int64)
    done = ~np.isnan(finish)
    summary: dict[str, Any] = {
        "router": data.router,
        "replicas": data.replicas,
        "sent": int(arrival.size),
        "completed": int(done.sum()),
        "rejected": dict(data.rejected),
        "cancelled": data.cancelled,
        **_latencies(arrival[done], first[done], finish[done], outputs[done]),
    }
    summary["client_delay_s"] = _dist(np.frombuffer(data.client_delay, dtype=np.float64))
    summary["itl_s"] = _weighted_dist(
        np.frombuffer(data.step_duration, dtype=np.float64), np.array(data.step_tokens, dtype=np.float64)
    )
    queries, hits = sum(data.prefix_queries), sum(data.prefix_hits)
    summary["prefix_hit_rate"] = hits / queries if queries else 0.0
    summary["prompt_tokens"] = int(prompts[done].sum())
    summary["cached_prompt_tokens"] = int(cached[done].sum())
    routed = np.bincount(replica[replica >= 0], minlength=data.replicas)
    share = routed / routed.sum() if routed.sum() else routed.astype(float)
    summary["replica_share"] = [float(s) for s in share]
    summary["max_replica_share"] = float(share.max()) if share.size else 0.0
    summary["preemptions"] = int(sum(data.preemptions))
    busy = sum(data.busy_time)
    summary["replica_busy_fraction"] = busy / (data.replicas * data.virtual_time) if data.virtual_time else 0.0
    series = np.array(data.series, dtype=np.float64).reshape(-1, 6)
    summary["waiting_per_replica"] = _dist(series[:, 1])
    summary["kv_cache_usage"] = _dist(series[:, 4])
    summary["series"] = {
        name: [round(float(v), 4) for v in series[:, column]]
        for column, name in enumerate(("t", "waiting_mean", "waiting_max", "running_mean", "kv_mean", "kv_max"))
    }
    per_stage = []
    for index in range(int(stage.max()) + 1 if stage.size else 0):
        mask = (stage == index) & done
        if not mask.any():
            continue
        entry = {"stage": index, **_latencies(arrival[mask], first[mask], finish[mask], outputs[mask])}
        if index < len(data.stage_windows):
            rate, start, end = data.stage_windows[index]
            entry["rate"] = rate
            if end != float("inf"):
                entry["generated_tokens_per_s"] = _generated_per_s(data, start, end)
        per_stage.append(entry)
    summary["stages"] = per_stage
    summary["simulation"] = {
        "virtual_s": data.virtual_time,
        "wall_s": data.wall_time,
        "cpu_s": data.cpu_time,
        "steps": data.steps,
        "scrapes": data.scrapes,
        "steps_per_cpu_s": data.steps / data.cpu_time if data.cpu_time else 0.0,
    }
    return summary


def _ms(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def markdown(summaries: list[dict[str, Any]], title: str = "Simulation") -> str:
    """One table row per run (router), then per-stage tables when there are several stages."""
    lines = [
        f"## {title}",
        "",
        (
            "| router | replicas | completed | output tok/s | TTFT p50 (s) | TTFT p90 (s) | TTFT p99 (s) "
            "| ITL p50 (s) | ITL p90 (s) | e2e p90 (s) | prefix hit | max share | preemptions | sim wall (s) |"
        ),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['router']} | {s['replicas']} | {s['completed']}/{s['sent']} | {s['output_tokens_per_s']:,.0f} "
            f"| {_ms(s['ttft_s']['p50'])} | {_ms(s['ttft_s']['p90'])} | {_ms(s['ttft_s']['p99'])} "
            f"| {_ms(s['itl_s']['p50'])} | {_ms(s['itl_s']['p90'])} | {_ms(s['e2e_s']['p90'])} "
            f"| {s['prefix_hit_rate']:.1%} | {s['max_replica_share']:.1%} | {s['preemptions']} "
            f"| {s['simulation']['wall_s']:.1f} |"
        )
    if any(len(s["stages"]) > 1 for s in summaries):
        lines += [
            "",
            (
                "Per stage, over the requests sent in it (as inference-perf reports stages): "
                "output tok/s / TTFT p90 (s)"
            ),
            "",
        ]
        rates = [st.get("rate", st["stage"]) for st in max(summaries, key=lambda s: len(s["stages"]))["stages"]]
        lines.append("| router | " + " | ".join(f"{r:g} QPS" if isinstance(r, float) else f"stage {r}" for r in rates) + " |")
        lines.append("|---|" + "---:|" * len(rates))
        for s in summaries:
            cells = [
                f"{st['output_tokens_per_s']:,.0f} / {_ms(st['ttft_s']['p90'])}"
                for st in s["stages"]
            ]
            lines.append(f"| {s['router']} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
