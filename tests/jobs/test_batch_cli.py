"""``inferplane batch submit|status|list|results|cancel`` against a running server."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from jobs_support import BatchServer, FakeGateway


def cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferplane.jobs", "batch", *args], capture_output=True, text=True,
                          timeout=120, check=False)


@pytest.fixture
def server(tmp_path: Path):
    with FakeGateway() as gateway:
        srv = BatchServer(tmp_path, gateway.url).start()
        yield srv
        srv.stop()


def test_submit_wait_and_fetch_results(tmp_path: Path, server: BatchServer) -> None:
    bodies = tmp_path / "prompts.jsonl"
    bodies.write_text("\n".join(json.dumps({"messages": [{"role": "user", "content": f"p{i}"}]}) for i in range(5)))
    submitted = cli("submit", str(bodies), "--model", "llama", "--wait", "--url", server.url)
    assert submitted.returncode == 0, submitted.stderr
    batch_id = submitted.stdout.split()[0]
    assert "completed" in submitted.stdout and "total 5" in submitted.stdout
    status = cli("status", batch_id, "--url", server.url)
    assert status.returncode == 0 and "completed 5" in status.stdout
    assert batch_id in cli("list", "--url", server.url).stdout
    results = cli("results", batch_id, "--url", server.url)
    lines = [json.loads(x) for x in results.stdout.splitlines()]
    assert sorted(x["custom_id"] for x in lines) == [f"request-{i}" for i in range(1, 6)]
    assert all(x["response"]["body"]["model"] == "llama" for x in lines)
    assert cli("results", batch_id, "--errors", "--url", server.url).returncode == 1
    cancelled = cli("cancel", batch_id, "--url", server.url)
    assert cancelled.returncode == 1 and "cannot cancel" in cancelled.stderr


def test_bad_input_and_unreachable_server_are_messages_not_tracebacks(tmp_path: Path) -> None:
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"messages": []}\n{oops\n')
    result = cli("submit", str(bad), "--model", "m", "--url", "http://127.0.0.1:9/v1")
    assert result.returncode == 2 and "line 2: invalid JSON" in result.stderr and "Traceback" not in result.stderr
    missing = cli("status", "batch_x", "--url", "http://127.0.0.1:9/v1")
    assert missing.returncode == 1 and "cannot reach" in missing.stderr and "Traceback" not in missing.stderr
    serve = subprocess.run([sys.executable, "-m", "inferplane.jobs", "batch", "serve", "--port", "99999"],
                           capture_output=True, text=True, timeout=60, check=False)
    assert serve.returncode == 2 and "port" in serve.stderr and "Traceback" not in serve.stderr
