"""Metric-gated rollouts end to end: real Envoy → picker → simulated model servers, one per version.

``inferplane up`` runs the stable version (served as ``llama``, the name clients send); two more
``inferplane serve --engine sim`` processes join the same pool through the picker's endpoints file:
``llama-slow`` (every request waits 1.2 s before it is scheduled: a TTFT regression) and
``llama-v3`` (like the stable one: 0.15 s, so that a busy test machine's jitter stays small next to
it). Clients keep sending requests for ``llama`` while ``inferplane rollout start --steps`` runs
(its ``main``, in this process: a second Python start-up per command costs seconds on a busy machine).
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import yaml
from platform_runner import Platform, free_port, start_platform, wait_healthy

from inferplane.cli import main

MODEL = "llama"
SIM = {"time_scale": 1.0, "output_length": {"distribution": "fixed", "mean": 4, "max": 4}}
GATE = ["--interval", "6s", "--max-error-rate", "0.05", "--max-ttft-p90-ratio", "2.5", "--min-requests", "3"]
OVERHEAD_S = 0.15


def start_server(tmp: Path, name: str, overhead_s: float) -> tuple[subprocess.Popen[str], int]:
    port = free_port()
    config = tmp / f"{name}.yaml"
    sim = {**SIM, "cost": {"request_overhead_s": overhead_s}}
    config.write_text(yaml.safe_dump({"server": {"engine": "sim", "served_model_name": name, "port": port,
                                                 "sim": sim}}))
    process = subprocess.Popen([sys.executable, "-m", "inferplane", "serve", "--config", str(config)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT, text=True)
    return process, port


@dataclass
class Traffic:
    """Client threads sending small completions for ``llama`` through the gateway."""

    base_url: str
    served_by: list[str] = field(default_factory=list)  # the answering model, "error" for failures
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, stream: bool = False) -> None:
        body = {"model": MODEL, "prompt": "hello there", "max_tokens": 4, "stream": stream}
        with httpx.Client(base_url=self.base_url, timeout=30) as client:
            while not self.stop.is_set():
                try:
                    self.served_by.append(self._send(client, body))
                except httpx.HTTPError:
                    self.served_by.append("error")

    @staticmethod
    def _send(client: httpx.Client, body: dict) -> str:
        if not body["stream"]:
            reply = client.post("/completions", json=body)
            return reply.json()["model"] if reply.status_code == 200 else "error"
        with client.stream("POST", "/completions", json=body) as reply:
            served = "error"
            for line in reply.iter_lines():
                if reply.status_code == 200 and line.startswith("data: {"):
                    served = json.loads(line[6:]).get("model", "error")
            return served

    def last(self, count: int) -> list[str]:
        return self.served_by[-count:]

    def wait_for_only(self, model: str, count: int = 15, limit_s: float = 30.0) -> None:
        """Until the last ``count`` answers all came from ``model`` (the picker re-reads the file on its own poll)."""
        deadline = time.monotonic() + limit_s
        seen = len(self.served_by)
        while time.monotonic() < deadline:
            recent = self.served_by[seen:]
            if len(recent) >= count and set(recent[-count:]) == {model}:
                return
            time.sleep(0.1)
        raise AssertionError(f"answers did not all come from {model}: {self.last(count)}")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Platform, Traffic]]:
    tmp = tmp_path_factory.mktemp("rollout")
    extra = [start_server(tmp, "llama-slow", 1.2), start_server(tmp, "llama-v3", OVERHEAD_S)]
    running: Platform | None = None
    threads: list[threading.Thread] = []
    traffic: Traffic | None = None
    try:
        endpoints = tmp / "endpoints.txt"
        endpoints.write_text("".join(f"127.0.0.1:{port}\n" for _, port in extra))
        running = start_platform(
            tmp, replicas=1,
            server={"engine": "sim", "served_model_name": MODEL,
                    "sim": {**SIM, "cost": {"request_overhead_s": OVERHEAD_S}}},
            picker={"endpoints_file": str(endpoints), "model_rewrites_file_poll_interval": 0.2},
            gateway={"endpoint_selection": "original_dst"},
            timeout_s=120,
        )
        for process, port in extra:  # started together with the platform
            wait_healthy(f"http://127.0.0.1:{port}/health", process)
        traffic = Traffic(running.base_url)
        # one client asks for whole answers, two stream (TTFT at the first generated token: samples on both sides)
        threads = [threading.Thread(target=traffic.run, args=(i < 2,), daemon=True) for i in range(3)]
        for thread in threads:
            thread.start()
        traffic.wait_for_only(MODEL)
        yield running, traffic
    finally:
        if traffic is not None:
            traffic.stop.set()
        for thread in threads:
            thread.join(timeout=30)
        if running is not None:
            assert running.stop() == 0, "\n".join(running.lines[-40:])
        for process, _ in extra:
            process.terminate()
            process.wait(timeout=15)


@dataclass
class Result:
    returncode: int
    stdout: str
    stderr: str


def rollout(platform: Platform, capsys: pytest.CaptureFixture[str], *argv: str) -> Result:
    """``inferplane rollout ARGV --run-dir RUN`` (the CLI's ``main``), its exit code and output."""
    capsys.readouterr()
    code = main(["rollout", *argv, "--run-dir", str(platform.run_dir)])
    out, err = capsys.readouterr()
    return Result(code, out, err)


def test_slow_canary_is_rolled_back_by_itself(platform: tuple[Platform, Traffic],
                                              capsys: pytest.CaptureFixture[str]) -> None:
    running, traffic = platform
    result = rollout(running, capsys, "start", MODEL, "--canary", "llama-slow", "--steps", "50,100", *GATE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rollback: canary TTFT p90" in result.stdout
    assert "llama: rolled-back: llama 100%, llama-slow 0%" in result.stdout
    traffic.wait_for_only(MODEL)


def test_failing_canary_is_rolled_back_by_itself(platform: tuple[Platform, Traffic],
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    running, traffic = platform
    # no server in the pool serves this name: every request sent to it fails (404 from the model server)
    result = rollout(running, capsys, "start", MODEL, "--canary", "llama-missing", "--steps", "50,100", *GATE)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "rollback: canary error" in result.stdout
    traffic.wait_for_only(MODEL)


def test_good_canary_is_promoted(platform: tuple[Platform, Traffic], capsys: pytest.CaptureFixture[str]) -> None:
    running, traffic = platform
    result = rollout(running, capsys, "start", MODEL, "--canary", "llama-v3", "--steps", "50,100", *GATE)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "llama at 50%: advance" in result.stdout
    assert "llama at 100%: advance" in result.stdout
    assert "llama: promoted: llama-v3 100%" in result.stdout
    traffic.wait_for_only("llama-v3")
    status = rollout(running, capsys, "status", MODEL, "--json")
    assert status.returncode == 0, status.stderr
    report = json.loads(status.stdout)["rollouts"][0]
    assert report["phase"] == "promoted"
    [stable] = report["versions"]
    assert stable["model"] == "llama-v3" and stable["weight"] == 100
    assert stable["requests"] > 0 and stable["error_rate"] == 0 and stable["ttft_p90_s"] > 0
