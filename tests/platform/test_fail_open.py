"""FailOpen: with the picker gone, Envoy still serves from the pool (round-robin)."""

from __future__ import annotations

import os
import signal
import time

import httpx

from platform_runner import start_platform

MODEL = "SmolLM2-135M-Instruct"


def test_picker_down_with_fail_open_still_serves(tmp_path) -> None:
    platform = start_platform(tmp_path, replicas=1, gateway={"failure_mode": "FailOpen"})
    try:
        os.kill(platform.pid("picker"), signal.SIGKILL)
        time.sleep(0.5)
        for _ in range(3):
            response = httpx.post(
                f"{platform.base_url}/chat/completions",
                json={"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4},
                timeout=60,
            )
            assert response.status_code == 200, response.text
            assert response.json()["choices"][0]["message"]["content"] is not None
    finally:
        assert platform.stop() == 0
