"""JSON log lines: the fields, the request id of the request being served, up's relayed child lines."""

from __future__ import annotations

import asyncio
import io
import json
import logging

import pytest

from inferplane.observe.logs import (
    JsonFormatter,
    bind_request_id,
    json_relay,
    setup_logging,
)


@pytest.fixture(autouse=True)
def _restore_logging():
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def _capture(component: str = "picker") -> io.StringIO:
    stream = io.StringIO()
    setup_logging(component, "json", logging.INFO, stream=stream)
    return stream


def _lines(stream: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_one_json_object_per_line_with_time_level_component_message() -> None:
    stream = _capture()
    logging.getLogger("inferplane.picker").warning("pool has %d endpoints", 2)
    (entry,) = _lines(stream)
    assert entry["level"] == "warning"
    assert entry["component"] == "picker"
    assert entry["message"] == "pool has 2 endpoints"
    assert entry["time"].endswith("+00:00")
    assert "request_id" not in entry


def test_records_logged_while_serving_a_request_carry_its_id() -> None:
    stream = _capture()
    log = logging.getLogger("inferplane.test")

    async def serve(request_id: str) -> None:
        bind_request_id(request_id)
        await asyncio.sleep(0)
        log.info("handling")

    async def main() -> None:
        await asyncio.gather(serve("req-a"), serve("req-b"))
        log.info("outside")

    asyncio.run(main())
    entries = _lines(stream)
    assert sorted(e.get("request_id") for e in entries if e["message"] == "handling") == ["req-a", "req-b"]
    assert "request_id" not in next(e for e in entries if e["message"] == "outside")


def test_extra_fields_and_exceptions_are_kept() -> None:
    formatter = JsonFormatter("server")
    try:
        raise ValueError("boom")
    except ValueError:
        record = logging.getLogger("x").makeRecord("x", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info(),
                                                   extra={"status": 500})
    entry = json.loads(formatter.format(record))
    assert entry["status"] == 500
    assert "ValueError: boom" in entry["exception"]


def test_up_relays_child_lines_as_json() -> None:
    wrapped = json.loads(json_relay("envoy", "[info] starting main dispatch loop"))
    assert wrapped["component"] == "envoy" and wrapped["message"] == "[info] starting main dispatch loop"
    passed = json.loads(json_relay("server-1", json.dumps({"level": "info", "component": "server", "message": "hi"})))
    assert passed == {"level": "info", "component": "server", "message": "hi", "process": "server-1"}
    assert json.loads(json_relay("server-0", "plain"))["component"] == "server"
