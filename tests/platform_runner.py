"""Starting the real platform (``inferplane up``) for end-to-end tests."""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


#: Where :func:`free_port_range` looks: below Linux's ephemeral range (32768-60999), so an outgoing
#: connection made between the check and the servers' start cannot take one of the ports.
_RANGE_PORTS = (15000, 28000)


def free_port_range(count: int) -> int:
    """The first of ``count`` consecutive free ports."""
    for _ in range(200):
        base = random.randrange(_RANGE_PORTS[0], _RANGE_PORTS[1] - count)
        try:
            sockets = []
            for port in range(base, base + count):
                s = socket.socket()
                sockets.append(s)
                s.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for s in sockets:
                s.close()
    raise RuntimeError("no range of free ports")


def process_alive(pid: int) -> bool:
    """The process exists and is not a zombie (a zombie is dead for our purposes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split()[2] != "Z"


def wait_healthy(url: str, process: subprocess.Popen, attempts: int = 300, interval: float = 0.2) -> None:
    """Poll ``url`` until it answers 200; AssertionError with the process's output if it exits first."""
    for _ in range(attempts):
        if process.poll() is not None:
            pipe = process.stdout or process.stderr
            output = pipe.read() if pipe is not None else ""
            if isinstance(output, bytes):
                output = output.decode(errors="replace")
            raise AssertionError(f"server exited: {output[-2000:]}")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(interval)
    raise AssertionError(f"server at {url} did not become healthy")


def port_is_free(port: int) -> bool:
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
            return True
        except OSError:
            return False


@dataclass
class Platform:
    """A running ``inferplane up`` process and what tests need to reach its parts."""

    process: subprocess.Popen[str]
    run_dir: Path
    base_url: str
    ports: dict[str, Any]
    lines: list[str] = field(default_factory=list)

    def pid(self, child: str) -> int:
        return int((self.run_dir / f"{child}.pid").read_text())

    def server_url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.ports['servers'][i]}"

    @property
    def all_ports(self) -> list[int]:
        p = self.ports
        return [*p["servers"], p["gateway"], p["admin"], p["grpc"], p["health"], p["metrics"], p["batch"], p["console"]]

    def stop(self, timeout_s: float = 30.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)


def start_platform(tmp: Path, replicas: int = 2, server: dict | None = None, gateway: dict | None = None,
                   picker: dict | None = None, batch: dict | None = None, console: dict | None = None,
                   timeout_s: float = 300.0, observe: dict | None = None, auth: dict | None = None) -> Platform:
    base = free_port_range(replicas)
    ports = {
        "servers": [base + i for i in range(replicas)],
        "gateway": free_port(),
        "admin": free_port(),
        "grpc": free_port(),
        "health": free_port(),
        "metrics": free_port(),
        "batch": free_port(),
        "console": free_port(),
        "auth": free_port(),
    }
    config = {
        "replicas": replicas,
        "server": {"port": base, **(server or {})},
        "picker": {"grpc_port": ports["grpc"], "health_port": ports["health"], "metrics_port": ports["metrics"], **(picker or {})},
        "gateway": {"port": ports["gateway"], "admin_port": ports["admin"], **(gateway or {})},
        "batch": {"port": ports["batch"], **(batch or {})},
        "console": {"port": ports["console"], **(console or {})},
        **({"auth": {"port": ports["auth"], **auth}} if auth is not None else {}),
    }
    if observe is not None:
        config["observe"] = observe
    return launch(tmp, config, ports, timeout_s)


def start_pools_platform(tmp: Path, pools: list[dict], timeout_s: float = 300.0, **sections: Any) -> Platform:
    """``inferplane up`` with ``pools`` (each: name, kind, replicas, server, picker) on free ports.

    ``ports["pools"][name]`` holds each pool's ``servers`` (and ``grpc``) ports and its picker's
    ``grpc``, ``health`` and ``metrics`` ports; ``sections`` are further top-level sections.
    """
    ports: dict[str, Any] = {"pools": {}, "gateway": free_port(), "admin": free_port(),
                             "router": free_port(), "router_health": free_port()}
    planned = []
    for pool in pools:
        replicas = pool.get("replicas", 1)
        models = pool.get("kind") == "models"
        base = free_port_range(2 * replicas if models else replicas)
        mine = {"servers": [base + i for i in range(replicas)], "picker_grpc": free_port(),
                "picker_health": free_port(), "metrics": free_port()}
        server = {"port": base, **pool.get("server", {})}
        if models:
            mine["grpc"] = [base + replicas + i for i in range(replicas)]
            server["grpc_port"] = base + replicas
        picker = {"grpc_port": mine["picker_grpc"], "health_port": mine["picker_health"],
                  "metrics_port": mine["metrics"], **pool.get("picker", {})}
        planned.append({**pool, "server": server, "picker": picker})
        ports["pools"][pool["name"]] = mine
    config: dict[str, Any] = {
        "pools": planned,
        "router": {"grpc_port": ports["router"], "health_port": ports["router_health"]},
        "gateway": {"port": ports["gateway"], "admin_port": ports["admin"]},
        **sections,
    }
    if sections.get("batch_api", True):
        ports["batch"] = free_port()
        config["batch"] = {**sections.get("batch", {}), "port": ports["batch"]}
    if sections.get("console", {}).get("enabled", True):
        ports["console"] = free_port()
        config["console"] = {**sections.get("console", {}), "port": ports["console"]}
    return launch(tmp, config, ports, timeout_s)


def launch(tmp: Path, config: dict[str, Any], ports: dict[str, Any], timeout_s: float = 300.0) -> Platform:
    """Write ``config`` and run ``inferplane up`` on it until it prints the OpenAI base URL."""
    config_path = tmp / "inferplane.yaml"
    config_path.write_text(yaml.safe_dump(config))
    run_dir = tmp / "run"
    process = subprocess.Popen(
        [sys.executable, "-u", "-m", "inferplane", "up", "--config", str(config_path), "--run-dir", str(run_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    platform = Platform(process=process, run_dir=run_dir, base_url="", ports=ports)
    ready = threading.Event()

    def read() -> None:
        assert process.stdout
        for line in process.stdout:
            platform.lines.append(line.rstrip())
            if "OpenAI base URL:" in line:
                text = orjson.loads(line)["message"] if line.startswith("{") else line  # --log-format json
                platform.base_url = text.rsplit("OpenAI base URL:", 1)[1].strip()
                ready.set()

    threading.Thread(target=read, daemon=True).start()
    deadline = time.monotonic() + timeout_s
    while not ready.wait(0.2):
        if process.poll() is not None or time.monotonic() > deadline:
            platform.stop()
            raise RuntimeError("inferplane up did not become ready:\n" + "\n".join(platform.lines[-60:]))
    return platform
