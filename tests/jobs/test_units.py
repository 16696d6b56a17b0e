"""Input validation, backoff, completion windows, the saturation gate's parsing, message shapes."""

from __future__ import annotations

import random

import pytest
from jobs_support import chat_lines

from inferplane.jobs.backoff import backoff_delay
from inferplane.jobs.batches import parse_window
from inferplane.jobs.gate import saturation_from_metrics
from inferplane.jobs.jsonl import parse_batch_file
from inferplane.jobs.message import Message


def test_valid_file_parses_every_request() -> None:
    requests, errors = parse_batch_file(chat_lines(3) + b"\n\n")
    assert not errors and [r.custom_id for r in requests] == ["q-0", "q-1", "q-2"]


@pytest.mark.parametrize(("line", "words"), [
    (b"{nope", "invalid JSON"),
    (b"[1]", "JSON object"),
    (b'{"method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}', "custom_id"),
    (b'{"custom_id": "q-0", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m"}}', "duplicate"),
    (b'{"custom_id": "z", "method": "POST", "url": "/v1/images", "body": {"model": "m"}}', "'url'"),
    (b'{"custom_id": "z", "method": "POST", "url": "/v1/chat/completions", "body": {}}', "body.model"),
    (b'{"custom_id": "z", "method": "POST", "url": "/v1/chat/completions", "body": {"model": "m", "stream": true}}', "stream"),
])
def test_bad_lines_are_reported_with_their_number(line: bytes, words: str) -> None:
    _, errors = parse_batch_file(chat_lines(2) + line + b"\n")
    assert len(errors) == 1 and errors[0].line == 3 and words in errors[0].message
    assert errors[0].message.startswith("line 3:")


def test_empty_and_oversized_files() -> None:
    assert parse_batch_file(b"\n")[1][0].code == "empty_file"
    assert parse_batch_file(chat_lines(5), max_requests=4)[1][-1].code == "too_many_requests"


def test_backoff_grows_exponentially_with_jitter_and_a_cap() -> None:
    rng = random.Random(0)
    first = [backoff_delay(1, rng=rng) for _ in range(200)]
    assert 1.0 <= min(first) and max(first) <= 2.0
    assert all(30.0 <= backoff_delay(10, rng=rng) <= 60.0 for _ in range(200))
    assert backoff_delay(1, retry_after=10) == 10 and backoff_delay(1, retry_after=500) == 60


def test_completion_windows() -> None:
    assert parse_window("24h") == 86400 and parse_window("90m") == 5400 and parse_window("30s") == 30
    assert parse_window("forever") is None and parse_window("0h") is None and parse_window("200h") is None


def test_saturation_from_picker_metrics() -> None:
    text = ('inference_extension_flow_control_pool_saturation{inference_pool="p"} 0.42\n'
            'inference_pool_average_queue_size{name="p"} 10\n')
    assert saturation_from_metrics(text) == 0.42
    averages = 'inference_pool_average_queue_size{name="p"} 2\ninference_pool_average_kv_cache_utilization{name="p"} 0.4\n'
    assert saturation_from_metrics(averages) == pytest.approx(0.5)
    assert saturation_from_metrics("other_metric 1\n") is None


def test_message_times_accept_seconds_and_rfc3339() -> None:
    m = Message.model_validate({"id": "a", "created": "2026-01-01T00:00:00Z", "deadline": 1767225660,
                                "payload": {"model": "m"}, "metadata": {"url": "v1/completions"}})
    assert m.created == 1767225600 and m.deadline == 1767225660 and m.url == "/v1/completions"
