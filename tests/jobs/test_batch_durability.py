"""A batch worker killed with SIGKILL mid-batch resumes: no request lost, no result written twice."""

from __future__ import annotations

import io
import json
from pathlib import Path

import openai
from jobs_support import BatchServer, FakeGateway, chat_lines, wait_for


def run_with_kills(tmp_path: Path, database: str | None, n: int = 300, kills: int = 2) -> None:
    with FakeGateway(delay_s=0.05) as gateway:
        server = BatchServer(tmp_path, gateway.url, database=database, max_concurrency=16).start()
        try:
            client = openai.OpenAI(base_url=server.url, api_key="unused", max_retries=3)
            uploaded = client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(n))), purpose="batch")
            batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                          completion_window="24h")
            for k in range(kills):
                target = (k + 1) * n // (kills + 2)
                wait_for(lambda target=target: client.batches.retrieve(batch.id).request_counts.completed >= target,
                         60, 0.02)
                server.kill()
                server.start()
            done = wait_for(lambda: (b := client.batches.retrieve(batch.id)).status == "completed" and b, 120)
        finally:
            server.stop()
    assert done.request_counts.total == n and done.request_counts.completed == n and done.request_counts.failed == 0
    output = (tmp_path / "files" / done.output_file_id).read_text().splitlines()
    ids = [json.loads(x)["custom_id"] for x in output]
    assert len(ids) == n and set(ids) == {f"q-{i}" for i in range(n)}  # none lost, none twice
    assert set(gateway.served) == {f"q-{i}" for i in range(n)}


def test_sigkill_mid_batch_sqlite(tmp_path: Path) -> None:
    run_with_kills(tmp_path, None)


def test_sigkill_mid_batch_postgres(tmp_path: Path, postgres_server) -> None:
    run_with_kills(tmp_path, postgres_server.url, n=200, kills=1)
