"""Helpers for the jobs tests: a fake gateway, the batch server as a subprocess, real Redis and PostgreSQL."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from glob import glob
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from platform_runner import free_port
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class FakeGateway:
    """An OpenAI-ish endpoint in a thread: echoes the prompt, can answer 429 first, can be slow."""

    def __init__(self, delay_s: float = 0.0, reject_first: int = 0, always_status: int | None = None) -> None:
        self.delay_s = delay_s
        self.reject_first = reject_first
        self.always_status = always_status
        self.headers: list[dict[str, str]] = []
        self.served: Counter[str] = Counter()
        self.rejected = 0
        self._lock = threading.Lock()
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        app = Starlette(routes=[Route("/v1/chat/completions", self._chat, methods=["POST"]),
                                Route("/v1/embeddings", self._chat, methods=["POST"])])
        self._server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="error"))
        self._thread = threading.Thread(target=self._server.run, daemon=True)

    async def _chat(self, request: Request) -> JSONResponse:
        body = await request.json()
        with self._lock:
            self.headers.append(dict(request.headers))
            if self.always_status is not None:
                return JSONResponse({"error": {"message": "nope", "type": "x"}}, status_code=self.always_status)
            if self.rejected < self.reject_first:
                self.rejected += 1
                return JSONResponse({"error": {"message": "saturated", "type": "rate_limit"}}, status_code=429,
                                    headers={"x-inference-request-dropped-reason": "rejected-saturated"})
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        text = body["messages"][-1]["content"] if "messages" in body else "?"
        if text == "bad-request":
            return JSONResponse({"error": {"message": "bad prompt", "type": "invalid_request_error"}}, status_code=400)
        with self._lock:
            self.served[text] += 1
        return JSONResponse({"id": "chatcmpl-1", "object": "chat.completion", "model": body["model"],
                             "choices": [{"index": 0, "message": {"role": "assistant", "content": f"echo {text}"},
                                          "finish_reason": "stop"}],
                             "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}},
                            headers={"x-request-id": "req-fake"})

    def __enter__(self) -> FakeGateway:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline:
                raise RuntimeError("fake gateway did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(10)


def chat_lines(n: int, prefix: str = "q", model: str = "m") -> bytes:
    import orjson

    return b"\n".join(orjson.dumps({"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
                                    "body": {"model": model, "messages": [{"role": "user", "content": f"{prefix}-{i}"}]}})
                      for i in range(n)) + b"\n"


class BatchServer:
    """``python -m inferplane.jobs batch serve`` as a subprocess."""

    def __init__(self, tmp: Path, gateway_url: str, database: str | None = None, **dispatch: Any) -> None:
        self.tmp = tmp
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        config = {"batch": {"host": "127.0.0.1", "port": self.port, "poll_interval_s": 0.1,
                            "database": database or f"sqlite:///{tmp}/batch.db", "files_url": str(tmp / "files"),
                            "dispatch": {"gateway_url": gateway_url, "backoff_base_s": 0.05, "backoff_max_s": 0.2,
                                         **dispatch}}}
        import yaml

        self.config_path = tmp / "batch.yaml"
        self.config_path.write_text(yaml.safe_dump(config))
        self.process: subprocess.Popen | None = None
        self.log = tmp / "batch-server.log"

    def start(self) -> BatchServer:
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen([sys.executable, "-m", "inferplane.jobs", "batch", "serve",
                                             "--config", str(self.config_path)], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(self.url[:-3] + "/health", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("batch server did not start:\n" + self.log.read_text())
            time.sleep(0.1)

    def kill(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()


def wait_for(predicate: Any, timeout_s: float = 30.0, interval_s: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval_s)
    raise AssertionError(f"condition not met within {timeout_s} s")


class RedisServer:
    def __init__(self, tmp: Path) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process = subprocess.Popen(["redis-server", "--port", str(self.port), "--save", "", "--appendonly", "no",
                                         "--dir", str(tmp), "--bind", "127.0.0.1"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for(lambda: _tcp_open(self.port), 10)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def _tcp_open(port: int) -> bool:
    import socket

    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def postgres_bin() -> Path:
    found = sorted(glob("/usr/lib/postgresql/*/bin/postgres"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed (apt-get install postgresql)")
    return Path(found[-1]).parent


class PostgresServer:
    """initdb + postgres in a temp dir, as the 'postgres' user when running as root."""

    def __init__(self) -> None:
        import tempfile

        bindir = postgres_bin()
        tmp = self.tmp = Path(tempfile.mkdtemp(prefix="inferplane-pg-"))  # pytest's tmp is not reachable by 'postgres'
        tmp.chmod(0o755)
        self.port = free_port()
        self.data = tmp / "pgdata"
        self.sock = tmp / "pgsock"
        self.sock.mkdir()
        user = "postgres" if os.geteuid() == 0 else None
        if user:
            shutil.chown(tmp, user)
            shutil.chown(self.sock, user)
        prefix = ["runuser", "-u", user, "--"] if user else []
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(self.data), "-U", "inferplane", "--auth=trust"],
                       check=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=tmp)
        self.process = subprocess.Popen([*prefix, str(bindir / "postgres"), "-D", str(self.data), "-p", str(self.port),
                                         "-k", str(self.sock), "-h", "127.0.0.1"],
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.url = f"postgresql://inferplane@127.0.0.1:{self.port}/postgres"
        wait_for(lambda: _tcp_open(self.port), 30)
        time.sleep(0.5)

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(20)
        shutil.rmtree(self.tmp, ignore_errors=True)
