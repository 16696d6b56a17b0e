"""The OpenAI batch object: creation, completion windows, result lines."""

from __future__ import annotations

import re
import time
import uuid
from typing import Any

TERMINAL = ("completed", "failed", "expired", "cancelled")
_WINDOW = re.compile(r"^(\d+)([smh])$")


def parse_window(value: str) -> int | None:
    """Seconds of a completion window such as ``24h`` (also ``90m``, ``30s``), or None when invalid."""
    match = _WINDOW.match(value or "")
    if not match:
        return None
    seconds = int(match.group(1)) * {"s": 1, "m": 60, "h": 3600}[match.group(2)]
    return seconds if 0 < seconds <= 7 * 24 * 3600 else None


def new_id(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def new_batch(input_file_id: str, endpoint: str, window: str, window_s: int, metadata: dict | None) -> dict[str, Any]:
    now = int(time.time())
    return {
        "id": new_id("batch_"), "object": "batch", "endpoint": endpoint, "errors": None,
        "input_file_id": input_file_id, "completion_window": window, "status": "validating",
        "output_file_id": None, "error_file_id": None, "created_at": now, "in_progress_at": None,
        "expires_at": now + window_s, "finalizing_at": None, "completed_at": None, "failed_at": None,
        "expired_at": None, "cancelling_at": None, "cancelled_at": None,
        "request_counts": {"total": 0, "completed": 0, "failed": 0}, "metadata": metadata,
    }


def result_line(custom_id: str, status_code: int, body: Any, request_id: str | None) -> dict[str, Any]:
    """A line of the output (2xx) or error (other status) file, in OpenAI's format."""
    return {"id": new_id("batch_req_"), "custom_id": custom_id,
            "response": {"status_code": status_code, "request_id": request_id or new_id("req_"), "body": body},
            "error": None}


def error_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    """A line of the error file for a request that got no response (e.g. ``batch_expired``)."""
    return {"id": new_id("batch_req_"), "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}
