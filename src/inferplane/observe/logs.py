"""Structured logs: one JSON object per line, carrying the request id of the request being served.

``setup_logging(component, "json")`` replaces the root handler; :func:`bind_request_id` marks the
current task (asyncio context) as serving a request, so every record logged from it names the id.
"""

from __future__ import annotations

import contextvars
import datetime
import logging
import sys
from typing import Any, Literal, TextIO

import orjson

#: The ``x-request-id`` of the request the current asyncio task is serving ("" outside requests).
REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("inferplane_request_id", default="")

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {"message", "asctime", "taskName"}


def bind_request_id(request_id: str) -> None:
    """Records logged from the current context on carry ``request_id``."""
    REQUEST_ID.set(request_id)


class JsonFormatter(logging.Formatter):
    """``{"time", "level", "component", "logger", "message", "request_id"?, extras..., "exception"?}``."""

    def __init__(self, component: str) -> None:
        super().__init__()
        self.component = component

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "component": self.component,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or REQUEST_ID.get()
        if request_id:
            entry["request_id"] = request_id
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in entry and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(entry, default=str).decode()


def json_line(component: str, message: str, level: str = "info", **fields: Any) -> str:
    """One JSON log line written without the logging module (``inferplane up``'s own output)."""
    entry = {
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds"),
        "level": level,
        "component": component,
        "message": message,
        **fields,
    }
    return orjson.dumps(entry, default=str).decode()


def setup_logging(component: str, log_format: Literal["text", "json"], level: int | str = logging.INFO,
                  stream: TextIO | None = None, text_format: str | None = None) -> None:
    """Configure the root logger (and uvicorn's) for ``component``; replaces handlers set before."""
    handler = logging.StreamHandler(stream or sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(component))
    else:
        handler.setFormatter(logging.Formatter(text_format or "%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    if log_format == "json":
        for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
            uv = logging.getLogger(name)  # uvicorn installs its own text handlers: route them through ours
            uv.handlers = []
            uv.propagate = True


def uvicorn_log_config(log_format: Literal["text", "json"]) -> dict[str, Any] | None:
    """uvicorn's ``log_config``: ``None`` (keep the root handler) for JSON, its default otherwise."""
    if log_format == "json":
        return None
    from uvicorn.config import LOGGING_CONFIG

    return LOGGING_CONFIG


def announce(component: str, log_format: Literal["text", "json"], message: str, stream: TextIO | None = None) -> None:
    """A start-up line printed whatever the log level: plain text, or one JSON object."""
    line = json_line(component, message) if log_format == "json" else message
    print(line, file=stream or sys.stderr, flush=True)


def json_relay(process: str, line: str) -> str:
    """A child's output line as one JSON object: kept when it already is one, else wrapped (``inferplane up``)."""
    if line.startswith("{"):
        try:
            entry = orjson.loads(line)
        except orjson.JSONDecodeError:
            entry = None
        if isinstance(entry, dict):
            entry.setdefault("component", process)
            entry["process"] = process
            return orjson.dumps(entry, default=str).decode()
    return json_line(process if process == "up" else process.split("-", 1)[0], line, process=process)
