"""Picker cost benchmark (issue 3): requests/s through one picker process and its CPU per request.

Setup: N stand-in model servers (``backends.py``: one Envoy serving the vLLM ``/metrics`` page and
a one-token completion per listener), one picker (``python -m inferplane picker``) scraping them
every 50 ms, and the real gateway Envoy (``inferplane.gateway`` bootstrap) in front.

Phases, one after the other, with CPU time of every process read from ``/proc/PID/stat``:

1. idle: the picker only scrapes — its fixed cost per second (and per scrape);
2. capture: one request through a recording proxy, to learn the exact ext_proc message sequence;
3. direct: that sequence replayed over one HTTP/2 connection, many streams at once, by ``h2driver.py``
   (raw frames prepared in advance: cheap enough that the picker sets the rate), then by ``driver.py``
   (grpcio's client): the picker alone;
4. gateway: wrk sends tiny chat completions through Envoy + picker, paced at rising rates (each
   connection waits between its requests), then unpaced: req/s sustained and CPU ms per request of
   the picker, the gateway Envoy, the stand-in servers and wrk;
5. scheduling: ``scheduling.py``, the default profile over N endpoints in-process.

Run: ``python bench/picker/run.py [--label after] [--src path/to/src]`` (about 90 s); merges its run
into bench/results/picker.json and rewrites bench/results/picker.md. ``--src`` runs the picker
from another source tree (e.g. an older commit checked out elsewhere) for before/after in one session.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(HERE))

from backends import backends_bootstrap
from capture import RecordingProxy, describe, load, save
from procs import (
    cpu_seconds,
    free_ports,
    machine_busy,
    start,
    stop,
    wait_grpc_ready,
    wait_http,
)
from report import write_markdown

from inferplane.gateway.config import GatewayConfig
from inferplane.gateway.envoy import envoy_binary, envoy_command, write_bootstrap

CHAT = {"model": "m", "messages": [{"role": "user", "content": "request 000000"}], "max_tokens": 1}


class Bench:
    """The processes of one run and the measurements taken from them."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = ROOT / "bench" / ".work" / "picker" / args.label
        self.work.mkdir(parents=True, exist_ok=True)
        self.env = {**os.environ, "PYTHONPATH": str(Path(args.src).resolve())}
        self.procs: dict[str, subprocess.Popen] = {}
        self.endpoints: list[str] = []
        self.picker_address = ""

    # ---- processes -----------------------------------------------------------------------

    def start_backends(self) -> None:
        *ports, admin = free_ports(self.args.endpoints + 1)
        self.endpoints = [f"127.0.0.1:{p}" for p in ports]
        self.backends_admin = f"http://127.0.0.1:{admin}"
        path = self.work / "backends.json"
        path.write_text(json.dumps(backends_bootstrap(ports, admin)))
        command = [envoy_binary(), "-c", str(path), "--concurrency", "1", "--disable-hot-restart",
                   "--log-level", "warning"]
        self.procs["backends"] = start(command, self.work / "backends.log")
        for address in (self.endpoints[0], self.endpoints[-1]):
            wait_http(f"http://{address}/metrics", self.procs["backends"])

    def start_picker(self) -> None:
        grpc_port, health_port, metrics_port = free_ports(3)
        config = {"picker": {"grpc_port": grpc_port, "health_port": health_port, "metrics_port": metrics_port,
                             "endpoints": self.endpoints,
                             "response_processing": not self.args.no_response_processing}}
        path = self.work / "picker.yaml"
        path.write_text(yaml.safe_dump(config))
        command = [sys.executable, "-m", "inferplane", "picker", "--config", str(path)]
        self.procs["picker"] = start(command, self.work / "picker.log", self.env)
        self.picker_address = f"127.0.0.1:{grpc_port}"
        # readiness needs fresh metrics from an endpoint: a picker drowning in scrapes may take long
        wait_grpc_ready(f"127.0.0.1:{health_port}", self.procs["picker"], limit=self.args.ready_timeout)

    def start_gateway(self, name: str, picker_address: str) -> str:
        port, admin = free_ports(2)
        config = GatewayConfig(port=port, admin_port=admin, picker_address=picker_address,
                               pool_endpoints=self.endpoints)
        command = envoy_command(config, write_bootstrap(config, self.work / name))
        self.procs[name] = start(command, self.work / f"{name}.log")
        wait_http(f"http://127.0.0.1:{admin}/ready", self.procs[name])
        return f"http://127.0.0.1:{port}"

    def stop_all(self) -> None:
        for process in reversed(self.procs.values()):
            stop(process)

    def backend_requests(self) -> int:
        """Requests the stand-in servers answered so far (all listeners)."""
        text = httpx.get(f"{self.backends_admin}/stats", params={"filter": r"^http\.ep\d+\.downstream_rq_total$"},
                         timeout=5).text
        return sum(int(v) for v in re.findall(r": (\d+)", text))

    def cpu(self, names: tuple[str, ...] = ("picker", "gateway", "backends")) -> dict[str, float]:
        return {name: cpu_seconds(self.procs[name].pid) for name in names if name in self.procs}

    # ---- phases ------------------------------------------------------------------------------

    def idle(self) -> dict:
        """The picker's fixed cost: scraping N endpoints, no requests."""
        time.sleep(1.0)
        cpu0, scrapes0, t0 = self.cpu(("picker",))["picker"], self.backend_requests(), time.monotonic()
        time.sleep(self.args.idle_s)
        cpu1, scrapes1, t1 = self.cpu(("picker",))["picker"], self.backend_requests(), time.monotonic()
        seconds, scrapes = t1 - t0, scrapes1 - scrapes0
        return {"seconds": round(seconds, 2), "picker_cpu_ms_per_s": round(1e3 * (cpu1 - cpu0) / seconds, 1),
                "scrapes_per_s": round(scrapes / seconds, 1),
                "picker_cpu_ms_per_scrape": round(1e3 * (cpu1 - cpu0) / max(scrapes, 1), 4),
                # the scrapes one picker owes N endpoints at the configured interval (50 ms)
                "scrapes_per_s_configured": round(self.args.endpoints / 0.05, 1)}

    def capture(self) -> Path:
        """One request through a recording proxy in front of the picker; the conversation saved."""
        path = self.work / "conversation.json"

        async def record() -> None:
            import grpc
            from envoy.service.ext_proc.v3 import external_processor_pb2_grpc as pb_grpc

            proxy = RecordingProxy(self.picker_address)
            server = grpc.aio.server()
            pb_grpc.add_ExternalProcessorServicer_to_server(proxy, server)
            port = server.add_insecure_port("127.0.0.1:0")
            await server.start()
            try:
                url = await asyncio.to_thread(self.start_gateway, "capture-envoy", f"127.0.0.1:{port}")
                async with httpx.AsyncClient(timeout=10) as client:
                    for _ in range(3):
                        reply = await client.post(f"{url}/v1/chat/completions", json=CHAT)
                        if reply.status_code != 200:
                            raise RuntimeError(f"capture request failed: {reply.status_code} {reply.text}")
                for _ in range(100):  # the stream ends just after the response
                    if len(proxy.conversations) >= 3:
                        break
                    await asyncio.sleep(0.05)
            finally:
                stop(self.procs.pop("capture-envoy", None))
                await server.stop(0)
                await proxy.close()
            save(proxy.conversations[-1], path)

        asyncio.run(record())
        return path

    def direct(self, conversation: Path, driver_script: str, concurrency: int, profile: bool = False) -> dict:
        """The picker alone: the recorded sequence replayed by ``h2driver.py`` (raw HTTP/2 frames, cheap)
        or ``driver.py`` (grpcio's client)."""
        command = [sys.executable, str(HERE / driver_script), "--target", self.picker_address, "--conversation",
                   str(conversation), "--concurrency", str(concurrency), "--seconds", str(self.args.direct_s)]
        spy = None
        if self.args.py_spy and profile:  # sampling profile of the picker while the driver runs (costs CPU itself)
            native = ["--native"] if os.environ.get("PY_SPY_NATIVE") else ["--nonblocking"]
            spy = subprocess.Popen(["py-spy", "record", *native, "--format", "raw", "-r", "200",
                                    "-d", str(int(self.args.direct_s)), "-o", str(self.args.py_spy),
                                    "-p", str(self.procs["picker"].pid)],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        cpu0, busy0, scrapes0 = self.cpu(("picker",))["picker"], machine_busy(), self.backend_requests()
        # the drivers are this tree's tools, whatever tree the picker runs from
        driver = subprocess.Popen(command, stdout=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(ROOT / "src")})
        assert driver.stdout is not None
        out = driver.stdout.read()
        _, status, usage = os.wait4(driver.pid, 0)
        driver.returncode = os.waitstatus_to_exitcode(status)
        cpu1, busy1, scrapes1 = self.cpu(("picker",))["picker"], machine_busy(), self.backend_requests()
        if spy is not None:
            spy.wait(30)
        result = json.loads(out.decode().strip().splitlines()[-1])
        result["picker_cpu_ms_per_req"] = round(1e3 * (cpu1 - cpu0) / max(result["requests"], 1), 3)
        result["scrapes"] = scrapes1 - scrapes0  # no completions reach the servers in this phase
        result["picker_cpu_ms_per_req_net"] = self.net_ms(cpu1 - cpu0, result["scrapes"], result["requests"])
        result["picker_cores"] = round((cpu1 - cpu0) / result["seconds"], 2)
        result["driver_cpu_ms_per_req"] = round(1e3 * (usage.ru_utime + usage.ru_stime) / max(result["requests"], 1), 3)
        result["machine_busy_pct"] = round(100 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1), 1)
        return result

    def net_ms(self, cpu_s: float, scrapes: int, requests: int) -> float:
        """Picker CPU ms per request less what its scrapes in the same window cost (at the idle phase's
        CPU per scrape): counting scrapes, not seconds, stays right when a busy machine slows scraping."""
        return round((1e3 * cpu_s - scrapes * self.idle_ms_per_scrape) / max(requests, 1), 3)

    def wrk(self, url: str, seconds: float, think_ms: float) -> dict:
        """One wrk step; CPU time of every process over it."""
        command = ["wrk", "-t1", f"-c{self.args.connections}", f"-d{seconds:g}s", "--timeout", "10s",
                   "-s", str(HERE / "wrk_chat.lua"), url]
        env = {**os.environ, "THINK_MS": f"{think_ms:.3f}"}
        cpu0, busy0, t0, served0 = self.cpu(), machine_busy(), time.monotonic(), self.backend_requests()
        process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        assert process.stdout is not None
        out = process.stdout.read().decode()
        _, status, usage = os.wait4(process.pid, 0)
        process.returncode = os.waitstatus_to_exitcode(status)
        cpu1, busy1, t1, served1 = self.cpu(), machine_busy(), time.monotonic(), self.backend_requests()
        line = next((ln for ln in out.splitlines() if ln.startswith("{")), None)
        if line is None:
            raise RuntimeError(f"wrk failed: {out}")
        w = json.loads(line)
        duration = w["duration_us"] / 1e6
        n = max(w["requests"], 1)

        def per_req(name: str) -> float:
            return round(1e3 * (cpu1[name] - cpu0[name]) / n, 3)

        errors = sum(v for k, v in w.items() if k.startswith("errors_"))
        return {
            "think_ms": round(think_ms, 2), "requests": w["requests"], "errors": errors,
            "non_2xx": w["errors_status"], "rps": round(w["requests"] / duration, 1),
            "latency_ms_p50": w["latency_ms_p50"], "latency_ms_p90": w["latency_ms_p90"],
            "latency_ms_p99": w["latency_ms_p99"],
            "picker_cpu_ms_per_req": per_req("picker"),
            # the servers answered every scrape and every request that got through (2xx)
            "scrapes": max(0, served1 - served0 - (w["requests"] - w["errors_status"])),
            "picker_cpu_ms_per_req_net": self.net_ms(cpu1["picker"] - cpu0["picker"],
                                                     max(0, served1 - served0 - (w["requests"] - w["errors_status"])), n),
            "picker_cores": round((cpu1["picker"] - cpu0["picker"]) / (t1 - t0), 2),
            "envoy_cpu_ms_per_req": per_req("gateway"),
            "backends_cpu_ms_per_req": per_req("backends"),
            "wrk_cpu_ms_per_req": round(1e3 * (usage.ru_utime + usage.ru_stime) / n, 3),
            "machine_busy_pct": round(100 * (busy1[0] - busy0[0]) / max(busy1[1] - busy0[1], 1), 1),
        }

    def gateway(self) -> list[dict]:
        url = self.start_gateway("gateway", self.picker_address)
        connections = self.args.connections
        self.wrk(url, 2, 1000 * connections / 200)  # warm-up
        steps = []
        latency = 2.0
        for rate in self.args.rates:
            period = 1000 * connections / rate  # ms between one connection's requests at this rate
            think = max(0.5, period - min(latency, period / 2))
            step = {"offered_rps": rate, **self.wrk(url, self.args.step_s, think)}
            latency = step["latency_ms_p50"]
            steps.append(step)
            print(json.dumps(step), flush=True)
        step = {"offered_rps": "max", **self.wrk(url, self.args.step_s, 0)}
        print(json.dumps(step), flush=True)
        steps.append(step)
        return steps

    def handler(self, conversation: Path) -> dict:
        """The ext_proc handler in-process, no transport (``handler.py``)."""
        command = [sys.executable, str(HERE / "handler.py"), "--conversation", str(conversation),
                   "--endpoints", str(self.args.endpoints)]
        out = subprocess.run(command, env=self.env, check=True, capture_output=True, text=True).stdout
        return json.loads(out.strip().splitlines()[-1])

    def scheduling(self) -> list[dict]:
        command = [sys.executable, str(HERE / "scheduling.py"), "--endpoints", str(self.args.endpoints)]
        out = subprocess.run(command, env=self.env, check=True, capture_output=True, text=True).stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]


def git_commit(src: Path) -> str:
    """The commit of the tree at ``src``: a ``COMMIT`` file beside it (a ``git archive`` copy), else git's HEAD."""
    marker = src.resolve().parent / "COMMIT"
    if marker.is_file():
        return marker.read_text().strip()
    try:
        return subprocess.run(["git", "-C", str(src), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
    except (subprocess.CalledProcessError, FileNotFoundError):
        return "unknown"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", default="after", help="name of this run in picker.json: before-N / after-N "
                        "(N endpoints) are compared side by side in picker.md")
    parser.add_argument("--src", default=str(ROOT / "src"), help="source tree the picker runs from")
    parser.add_argument("--endpoints", type=int, default=100)
    parser.add_argument("--idle-s", type=float, default=5.0)
    parser.add_argument("--direct-s", type=float, default=10.0)
    parser.add_argument("--direct-concurrency", type=int, default=32, help="streams at once, raw HTTP/2 driver")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--rates", type=float, nargs="*", default=[250, 500, 750, 1000],
                        help="paced wrk steps (requests/s offered), then one unpaced step")
    parser.add_argument("--step-s", type=float, default=8.0)
    parser.add_argument("--skip-gateway", action="store_true")
    parser.add_argument("--ready-timeout", type=float, default=120.0, help="seconds the picker may take to be ready")
    parser.add_argument("--no-response-processing", action="store_true",
                        help="picker.response_processing: false (the picker leaves the response path to Envoy)")
    parser.add_argument("--py-spy", type=Path, help="record a py-spy profile (collapsed stacks) of the picker "
                        "during the direct phase into this file; its numbers then include py-spy's cost")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    bench = Bench(args)
    result: dict = {
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": f"{os.cpu_count()} cores, {platform.processor() or platform.machine()}",
        "src": args.src, "commit": git_commit(Path(args.src)),
        "endpoints": args.endpoints, "response_processing": not args.no_response_processing,
        "load_before": [round(x, 2) for x in os.getloadavg()],
        "uptime_before": subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip(),
    }
    try:
        bench.start_backends()
        started = time.monotonic()
        bench.start_picker()
        result["picker_ready_s"] = round(time.monotonic() - started, 1)
        result["idle"] = bench.idle()
        bench.idle_ms_per_scrape = result["idle"]["picker_cpu_ms_per_scrape"]
        print(json.dumps({"idle": result["idle"]}), flush=True)
        conversation = bench.capture()
        result["conversation"] = describe(load(conversation))
        result["direct"] = bench.direct(conversation, "h2driver.py", args.direct_concurrency, profile=True)
        print(json.dumps({"direct": result["direct"]}), flush=True)
        result["direct_grpcio"] = bench.direct(conversation, "driver.py", 16)
        print(json.dumps({"direct_grpcio": result["direct_grpcio"]}), flush=True)
        if not args.skip_gateway:
            result["gateway"] = bench.gateway()
    finally:
        bench.stop_all()
    result["handler"] = bench.handler(bench.work / "conversation.json")
    result["scheduling"] = bench.scheduling()
    result["load_after"] = [round(x, 2) for x in os.getloadavg()]
    result["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "picker.json"
    runs = json.loads(path.read_text()) if path.exists() else {}
    runs.setdefault("runs", {})[args.label] = result
    path.write_text(json.dumps(runs, indent=1) + "\n")
    write_markdown(runs, args.out / "picker.md")
    print(json.dumps(result["scheduling"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
