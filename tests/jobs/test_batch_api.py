"""The Batch API through the official openai SDK, against a fake gateway."""

from __future__ import annotations

import io
import json
from pathlib import Path

import openai
import pytest
from jobs_support import BatchServer, FakeGateway, chat_lines, wait_for


def finished(client: openai.OpenAI, batch_id: str, status: str = "completed"):
    return wait_for(lambda: (b := client.batches.retrieve(batch_id)).status == status and b, 60)


@pytest.fixture
def gateway():
    with FakeGateway(reject_first=3) as gw:
        yield gw


@pytest.fixture
def server(tmp_path: Path, gateway: FakeGateway):
    srv = BatchServer(tmp_path, gateway.url, objective="filler", fairness_id="batch-team").start()
    yield srv
    srv.stop()


def sdk(server: BatchServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="unused", max_retries=0)


def test_batch_round_trip_with_the_openai_sdk(server: BatchServer, gateway: FakeGateway) -> None:
    client = sdk(server)
    lines = chat_lines(20) + json.dumps({"custom_id": "bad", "method": "POST", "url": "/v1/chat/completions",
                                         "body": {"model": "m", "messages": [{"role": "user", "content": "bad-request"}]}}).encode()
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(lines)), purpose="batch")
    assert uploaded.purpose == "batch" and uploaded.bytes == len(lines)
    assert client.files.retrieve(uploaded.id).filename == "in.jsonl"
    assert client.files.content(uploaded.id).content == lines

    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                  completion_window="24h", metadata={"team": "search"})
    assert batch.status == "validating" and batch.metadata == {"team": "search"}
    done = finished(client, batch.id)
    assert done.request_counts.total == 21 and done.request_counts.completed == 20 and done.request_counts.failed == 1
    assert done.in_progress_at and done.finalizing_at and done.completed_at

    output = [json.loads(line) for line in client.files.content(done.output_file_id).text.splitlines()]
    assert sorted(o["custom_id"] for o in output) == sorted(f"q-{i}" for i in range(20))
    first = next(o for o in output if o["custom_id"] == "q-3")
    assert first["response"]["status_code"] == 200 and first["error"] is None
    assert first["response"]["body"]["choices"][0]["message"]["content"] == "echo q-3"
    errors = [json.loads(line) for line in client.files.content(done.error_file_id).text.splitlines()]
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("bad", 400)]

    # sheddable objective and fairness id on every request; the 3 rejected ones were retried
    assert gateway.rejected == 3 and sum(gateway.served.values()) == 20
    assert {h["x-llm-d-inference-objective"] for h in gateway.headers} == {"filler"}
    assert {h["x-llm-d-inference-fairness-id"] for h in gateway.headers} == {"batch-team"}

    with pytest.raises(openai.ConflictError):
        client.batches.cancel(batch.id)  # already completed
    page = client.batches.list(limit=10)
    assert [b.id for b in page.data] == [batch.id]
    assert client.files.delete(uploaded.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(uploaded.id)


def test_upload_errors_name_the_line(server: BatchServer) -> None:
    client = sdk(server)
    bad = chat_lines(2) + b'{"custom_id": "x", "method": "GET", "url": "/v1/chat/completions", "body": {}}\n{oops\n'
    with pytest.raises(openai.BadRequestError) as err:
        client.files.create(file=("in.jsonl", io.BytesIO(bad)), purpose="batch")
    message = err.value.body["message"]
    assert "line 3" in message and "method" in message and "line 4" in message and "invalid JSON" in message
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(1))), purpose="fine-tune")
    with pytest.raises(openai.NotFoundError):
        client.batches.retrieve("batch_nope")


def test_batch_with_the_wrong_endpoint_fails_validation(server: BatchServer) -> None:
    client = sdk(server)
    uploaded = client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(2))), purpose="batch")
    batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/embeddings", completion_window="24h")
    failed = finished(client, batch.id, "failed")
    assert failed.errors.data[0].line == 1 and "does not match" in failed.errors.data[0].message
    with pytest.raises(openai.BadRequestError):
        client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="forever")


def test_cancel_keeps_finished_results(tmp_path: Path) -> None:
    with FakeGateway(delay_s=0.3) as gateway:
        server = BatchServer(tmp_path, gateway.url, max_concurrency=2).start()
        try:
            client = sdk(server)
            uploaded = client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(40))), purpose="batch")
            batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                          completion_window="24h")
            wait_for(lambda: client.batches.retrieve(batch.id).request_counts.completed >= 2, 30)
            assert client.batches.cancel(batch.id).status in ("cancelling", "cancelled")
            done = finished(client, batch.id, "cancelled")
            assert done.cancelled_at and 2 <= done.request_counts.completed < 40
            out = client.files.content(done.output_file_id).text.splitlines()
            assert len(out) == done.request_counts.completed
        finally:
            server.stop()


def test_completion_window_expires_unfinished_requests(tmp_path: Path) -> None:
    with FakeGateway(always_status=429) as gateway:
        server = BatchServer(tmp_path, gateway.url).start()
        try:
            client = sdk(server)
            uploaded = client.files.create(file=("in.jsonl", io.BytesIO(chat_lines(3))), purpose="batch")
            batch = client.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                          completion_window="2s")
            done = finished(client, batch.id, "expired")
            assert done.expired_at and done.request_counts.failed == 3 and done.output_file_id is None
            errors = [json.loads(x) for x in client.files.content(done.error_file_id).text.splitlines()]
            assert {e["error"]["code"] for e in errors} == {"batch_expired"}
        finally:
            server.stop()
