"""A fuzz pass over the picker's request parsing (headers and OpenAI bodies, as ext_proc hands them over).

Whatever a client sends, parsing either succeeds or raises the picker's own typed error (which
becomes an OpenAI error response), never anything else.
"""

from __future__ import annotations

import json

import orjson
from envoy.config.core.v3 import base_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from inferplane.picker.errors import RequestRejected
from inferplane.picker.extproc import header_map
from inferplane.picker.request import (
    FAIRNESS_ID,
    MODEL_REWRITE,
    OBJECTIVE_HEADERS,
    SLO_TPOT_MS,
    SLO_TTFT_MS,
    body_bytes,
    from_headers,
    parse_body,
)

FUZZ = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
PATHS = ["/v1/chat/completions", "/v1/completions", "/v1/embeddings", "/v1/models", "/", "/v1/chat/completions?x=1"]
KNOWN = [":path", ":method", "x-request-id", FAIRNESS_ID, MODEL_REWRITE, SLO_TTFT_MS, SLO_TPOT_MS, *OBJECTIVE_HEADERS]

json_scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text()
json_values = st.recursive(json_scalars, lambda inner: st.lists(inner, max_size=4)
                           | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=20)
field_values = {
    "model": json_values | st.text(min_size=1),
    "messages": json_values | st.lists(st.fixed_dictionaries({"role": json_values, "content": json_values}), max_size=3),
    "prompt": json_values | st.lists(st.integers(), max_size=5),
    "input": json_values,
    "stream": json_values,
    "stream_options": json_values | st.fixed_dictionaries({"include_usage": json_values}),
    "max_tokens": json_values,
    "max_completion_tokens": json_values,
}
def encode(value: object) -> bytes:
    return json.dumps(value).encode()  # stdlib: also integers beyond 64 bits, Infinity


openai_bodies = st.fixed_dictionaries({}, optional=field_values).map(encode)
deep = st.integers(1, 3000).map(lambda n: b'{"model": "m", "messages": ' + b"[" * n + b"]" * n + b"}")
raw_bodies = st.binary(max_size=256) | openai_bodies | json_values.map(encode) | deep
header_values = st.binary(max_size=32)
headers = st.dictionaries(st.sampled_from(KNOWN) | st.text(max_size=12).map(str.lower), header_values, max_size=8)


def envoy_headers(values: dict[str, bytes]) -> base_pb2.HeaderMap:
    return base_pb2.HeaderMap(headers=[base_pb2.HeaderValue(key=k, raw_value=v) for k, v in values.items()])


@FUZZ
@given(headers=headers, path=st.sampled_from(PATHS), body=raw_bodies)
def test_parsing_raises_only_typed_errors(headers: dict[str, bytes], path: str, body: bytes) -> None:
    parsed_headers = header_map(envoy_headers({**headers, ":path": path.encode()}))
    request = from_headers(parsed_headers, {"batch": -1, "interactive": 10})
    try:
        parse_body(request, body)
    except RequestRejected as exc:
        assert 400 <= exc.status < 600 and orjson.loads(exc.body())["error"]["message"]
        return
    assert isinstance(request.model, str) and request.model
    assert isinstance(request.prompt, str)
    assert request.max_tokens is None or isinstance(request.max_tokens, int)
    if request.body_changed:
        try:
            orjson.loads(body_bytes(request))  # a rewritten body is sent on, or refused with a typed error
        except RequestRejected as exc:
            assert exc.status == 400


@FUZZ
@given(headers=headers)
def test_headers_alone_never_fail(headers: dict[str, bytes]) -> None:
    request = from_headers(header_map(envoy_headers(headers)))
    assert isinstance(request.fairness_id, str) and isinstance(request.priority, int)
    assert request.slo_ttft_ms is None or isinstance(request.slo_ttft_ms, float)
