"""A real ``inferplane serve`` (OpenVINO engine, SmolLM2) on a free port, once per test module."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO

import httpx
import pytest


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    base_url: str
    process: subprocess.Popen[bytes]

    def metrics(self) -> dict[str, float]:
        """Every sample of ``/metrics`` as ``{'name{labels}': value}`` plus ``{'name': value}`` sums."""
        text = httpx.get(f"{self.base_url}/metrics", timeout=10).text
        samples: dict[str, float] = {}
        for line in text.splitlines():
            if not line or line.startswith("#"):
                continue
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
            name = key.split("{", 1)[0]
            if name != key:
                samples[name] = samples.get(name, 0.0) + float(value)
        return samples


@contextlib.contextmanager
def run_server(*flags: str, ready_timeout: float = 180.0) -> Iterator[RunningServer]:
    """``python -m inferplane.server`` on a free port; stopped (SIGINT, then SIGKILL) on exit."""
    port = free_port()
    base_url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "inferplane.server", "--port", str(port), *flags],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        try:
            _wait_until_ready(process, base_url, log, ready_timeout)
            yield RunningServer(base_url, process)
        finally:
            if process.poll() is None:
                process.send_signal(signal.SIGINT)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


def _wait_until_ready(process: subprocess.Popen[bytes], base_url: str, log: IO[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            log.seek(0)
            raise RuntimeError(f"server exited: {log.read().decode(errors='replace')}")
        try:
            if httpx.get(f"{base_url}/health", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            raise RuntimeError("server did not become ready")
        time.sleep(0.25)


@pytest.fixture(scope="module")
def server() -> Iterator[RunningServer]:
    with run_server("--max-num-seqs", "16", "--max-num-batched-tokens", "512") as running:
        yield running
