"""SSE framing: every event is one line for every client, whatever characters the model emits."""

import json

import orjson

from inferplane.server.sse import sse_event


def test_line_breaking_unicode_is_escaped_in_events() -> None:
    text = "a\u2028b\x85c\u2029d"
    event = sse_event(orjson.dumps({"delta": {"content": text}}))
    lines = [line for line in event.decode().splitlines() if line]  # splitlines breaks on U+2028, U+2029, U+0085
    assert lines == [lines[0]] and lines[0].startswith("data: ")
    assert json.loads(lines[0][6:]) == {"delta": {"content": text}}
