"""Validating batch input files: JSONL of ``{custom_id, method, url, body}``, errors by line number."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

ENDPOINTS = ("/v1/chat/completions", "/v1/completions", "/v1/embeddings")
MAX_ERRORS = 20


@dataclass
class LineError:
    line: int
    message: str
    code: str = "invalid_request"
    param: str | None = None

    def as_openai(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message, "param": self.param, "line": self.line}


@dataclass
class BatchRequest:
    line: int
    custom_id: str
    url: str
    body: dict[str, Any]


def parse_batch_file(data: bytes, endpoint: str | None = None, max_requests: int | None = None
                     ) -> tuple[list[BatchRequest], list[LineError]]:
    """Every request of the file, and up to 20 problems (line numbers count from 1)."""
    requests: list[BatchRequest] = []
    errors: list[LineError] = []
    seen: set[str] = set()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        return [], [LineError(data[: exc.start].count(b"\n") + 1, "the file is not UTF-8 text", "invalid_file_format")]
    for number, raw in enumerate(text.splitlines(), start=1):
        if len(errors) >= MAX_ERRORS:
            break
        if not raw.strip():
            continue
        problem = _check_line(number, raw, endpoint, seen)
        if isinstance(problem, LineError):
            errors.append(problem)
        else:
            seen.add(problem.custom_id)
            requests.append(problem)
    if not requests and not errors:
        errors.append(LineError(1, "the file holds no requests", "empty_file"))
    if max_requests is not None and len(requests) > max_requests:
        errors.append(LineError(requests[max_requests].line,
                                f"too many requests: {len(requests)} (at most {max_requests} per batch)",
                                "too_many_requests"))
    return requests, errors


def _check_line(number: int, raw: str, endpoint: str | None, seen: set[str]) -> BatchRequest | LineError:
    try:
        item = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        return LineError(number, f"line {number}: invalid JSON: {exc}", "invalid_json")
    if not isinstance(item, dict):
        return LineError(number, f"line {number}: expected a JSON object", "invalid_request")
    custom_id = item.get("custom_id")
    if not isinstance(custom_id, str) or not custom_id:
        return LineError(number, f"line {number}: 'custom_id' must be a non-empty string", "missing_required_parameter", "custom_id")
    if custom_id in seen:
        return LineError(number, f"line {number}: duplicate custom_id {custom_id!r}", "duplicate_custom_id", "custom_id")
    if item.get("method") != "POST":
        return LineError(number, f"line {number}: 'method' must be \"POST\"", "invalid_method", "method")
    url = item.get("url")
    if url not in ENDPOINTS:
        return LineError(number, f"line {number}: 'url' must be one of {', '.join(ENDPOINTS)}", "invalid_url", "url")
    if endpoint is not None and url != endpoint:
        return LineError(number, f"line {number}: 'url' {url} does not match the batch endpoint {endpoint}",
                         "mismatched_url", "url")
    body = item.get("body")
    if not isinstance(body, dict):
        return LineError(number, f"line {number}: 'body' must be a JSON object", "invalid_body", "body")
    if not isinstance(body.get("model"), str) or not body["model"]:
        return LineError(number, f"line {number}: 'body.model' must be a non-empty string", "missing_model", "body.model")
    if body.get("stream"):
        return LineError(number, f"line {number}: streaming is not supported in a batch", "invalid_body", "body.stream")
    return BatchRequest(number, custom_id, url, body)
