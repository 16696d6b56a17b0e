"""The console in headless Chromium (Debian's package, driven by Playwright) over a real platform.

``inferplane up`` with two simulator replicas, flow control, an objective, a model rewrite and
the Batch API; the page is opened through the gateway at /console/. Load goes through the
gateway while the test watches the page's numbers change; small servers and a low saturation threshold make flow control
hold requests, so the queue panel has something to show. A screenshot is kept in
``tests/artifacts/console.png``.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest
from console_support import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS
from platform_runner import Platform, start_platform

pytestmark = pytest.mark.integration

MODEL = "sim-llm"
ALIAS = "sim-llm-latest"
TENANTS = ("tenant-a", "tenant-b")


@pytest.fixture(scope="module")
def platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    running = start_platform(
        tmp_path_factory.mktemp("console"), replicas=2,
        # two sequences per server and a low queue threshold: under load, flow control holds requests
        server={"engine": "sim", "served_model_name": MODEL, "num_blocks": 64, "max_num_seqs": 2,
                "sim": {"time_scale": 1.0}},
        picker={"objectives": {"interactive": 10}, "flow_control": {"enabled": True},
                "saturation": {"type": "utilization-detector", "parameters": {"queue_threshold": 1}},
                "model_rewrites": [{"name": "rollout", "rules": [{
                    "matches": [{"model": {"value": ALIAS}}],
                    "targets": [{"modelRewrite": MODEL, "weight": 100}]}]}]},
        console={"poll_interval_s": 0.5},
    )
    yield running
    assert running.stop() == 0, "\n".join(running.lines[-40:])


class Load:
    """Closed-loop chat requests through the gateway from a few threads, until stopped."""

    def __init__(self, base_url: str, workers: int = 8) -> None:
        self.base_url = base_url
        self.stop = threading.Event()
        self.statuses: list[int] = []
        self.threads = [threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(workers)]

    def _run(self, worker: int) -> None:
        with httpx.Client(timeout=120) as client:
            while not self.stop.is_set():
                response = client.post(
                    f"{self.base_url}/chat/completions",
                    json={"model": ALIAS if worker % 2 else MODEL, "max_tokens": 96,
                          "messages": [{"role": "user", "content": f"worker {worker}: tell me a story"}]},
                    headers={"x-llm-d-inference-objective": "interactive",
                             "x-llm-d-inference-fairness-id": TENANTS[worker % 2]},
                )
                self.statuses.append(response.status_code)

    def __enter__(self) -> Load:
        for thread in self.threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(150)


def _submit_batch(platform: Platform, requests: int = 6) -> str:
    client = openai.OpenAI(base_url=platform.base_url, api_key="unused", max_retries=0, timeout=60)
    lines = "\n".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": MODEL, "max_tokens": 8,
                                           "messages": [{"role": "user", "content": f"hello {i}"}]}})
                      for i in range(requests))
    upload = client.files.create(file=("in.jsonl", io.BytesIO(lines.encode())), purpose="batch")
    return client.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                 completion_window="24h").id


def test_the_console_shows_the_live_platform(platform: Platform) -> None:
    from playwright.sync_api import sync_playwright

    console_line = next(line for line in platform.lines if "console: " in line)
    assert f":{platform.ports['console']}/console/" in console_line  # `up` prints the console's URL
    url = platform.base_url.removesuffix("/v1") + "/console/"  # through Envoy
    servers = [f"127.0.0.1:{port}" for port in platform.ports["servers"]]
    errors: list[str] = []

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.on("console", lambda m: errors.append(f"console.{m.type}: {m.text}") if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(f"page error: {e}"))
            page.goto(url)
            assert page.title() == "inferplane console"

            # the pool's endpoints, ready, with the picker's scoring profile
            for address in servers:
                row = page.locator(f'#endpoints tr[data-address="{address}"]')
                row.wait_for(timeout=30_000)
            page.wait_for_function(
                "() => [...document.querySelectorAll('#endpoints .badge')].filter(b => b.textContent === 'ready')"
                ".length === 2", timeout=30_000)
            assert "queue-scorer" in page.locator("#profile").inner_text()
            assert "interactive · priority 10" in page.locator("#objectives").inner_text()
            assert ALIAS in page.locator("#rewrites").inner_text() and "100%" in page.locator("#rewrites").inner_text()
            routed_before = page.locator("#stat-decisions").inner_text()

            batch_id = _submit_batch(platform)
            with Load(platform.base_url) as load:
                # live numbers change while load is sent
                page.wait_for_function(
                    "before => document.querySelector('#stat-decisions').textContent !== before",
                    arg=routed_before, timeout=60_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#endpoints td[data-field=running]')]"
                    ".some(td => Number(td.textContent) > 0)", timeout=60_000)
                page.wait_for_function(
                    "() => [...document.querySelectorAll('#endpoints td[data-field=kv] .text')]"
                    ".some(s => parseInt(s.textContent) > 0)", timeout=60_000)
                page.wait_for_function(
                    "() => document.querySelectorAll('#decisions tbody tr[data-request]').length >= 5", timeout=60_000)
                page.wait_for_function(
                    "() => document.querySelectorAll('#chart-load path.series').length === 2 &&"
                    " document.querySelectorAll('#chart-traffic path.series').length >= 1", timeout=60_000)
                page.wait_for_selector(f'#batches tr[data-batch="{batch_id}"]', timeout=60_000)
                page.wait_for_function(  # Envoy's counters: requests sent to the pool per second
                    "() => Number(document.querySelector('#stat-rps').textContent) > 0", timeout=60_000)
                page.wait_for_function(  # requests held by flow control, per band and tenant
                    "() => [...document.querySelectorAll('#queues .band[data-priority=\"10\"] .flow')]"
                    ".some(f => f.textContent.startsWith('tenant-') && Number(f.querySelector('.text').textContent) > 0)",
                    timeout=60_000)
                decisions = page.locator("#decisions tbody").inner_text()
                running = [int(t) for t in page.locator("#endpoints td[data-field=running]").all_inner_texts()]
                page.screenshot(path=str(_artifact("console.png")), full_page=True)
            assert load.statuses and set(load.statuses) == {200}

            page.wait_for_function(  # the batch finishes and shows it
                f"() => (document.querySelector('#batches tr[data-batch=\"{batch_id}\"]') || {{}}).textContent"
                "?.includes('completed')", timeout=120_000)
            sources = page.locator("#sources .pill")
            assert sources.count() == 3 and page.locator("#sources .pill.down").count() == 0
            page.screenshot(path=str(_artifact("console-after.png")), full_page=True)
        finally:
            browser.close()

    assert any(t in decisions for t in TENANTS) and "interactive (10)" in decisions
    assert f"{ALIAS} → {MODEL}" in decisions and any(s in decisions for s in servers)
    assert len(running) == 2
    assert errors == [], errors


def _artifact(name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    print(f"screenshot: {path}")
    return path
