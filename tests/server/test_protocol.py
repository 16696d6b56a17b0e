"""Validation of OpenAI requests: what is accepted, and the 400s (naming the field) for what is not."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from inferplane.server.protocol import (
    ChatCompletionRequest,
    CompletionRequest,
    TokenizeRequest,
    describe_validation_error,
    error_body,
)

MESSAGES = [{"role": "user", "content": "hi"}]


def api_error(model: type, data: dict):  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as info:
        model.model_validate(data)
    return describe_validation_error(info.value)


def test_chat_request_defaults_and_sampling_params() -> None:
    request = ChatCompletionRequest.model_validate({"model": "m", "messages": MESSAGES})
    assert request.stream is False and request.n == 1 and request.stop_strings == []
    params = request.sampling_params(100, frozenset({2}))
    assert params.max_tokens == 100 and params.temperature == 1.0 and params.stop_token_ids == (2,)


def test_ignore_eos_drops_the_eos_stop_token() -> None:
    request = ChatCompletionRequest.model_validate({"messages": MESSAGES, "ignore_eos": True, "stop_token_ids": [7]})
    params = request.sampling_params(5, frozenset({2}))
    assert params.ignore_eos and params.stop_token_ids == (7,)


def test_max_completion_tokens_wins_over_max_tokens() -> None:
    request = ChatCompletionRequest.model_validate({"messages": MESSAGES, "max_tokens": 9, "max_completion_tokens": 4})
    assert request.requested_max_tokens() == 4


def test_content_parts_are_joined() -> None:
    request = ChatCompletionRequest.model_validate(
        {"messages": [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]}
    )
    assert request.chat_messages() == [{"role": "user", "content": "ab"}]


def test_stop_as_string_or_list() -> None:
    assert ChatCompletionRequest.model_validate({"messages": MESSAGES, "stop": "x"}).stop_strings == ["x"]
    assert ChatCompletionRequest.model_validate({"messages": MESSAGES, "stop": ["x", "y"]}).stop_strings == ["x", "y"]


@pytest.mark.parametrize(
    ("prompt", "expected"),
    [
        ("text", ["text"]),
        (["a", "b"], ["a", "b"]),
        ([1, 2, 3], [[1, 2, 3]]),
        ([[1, 2], [3]], [[1, 2], [3]]),
    ],
)
def test_completion_prompt_forms(prompt: object, expected: list) -> None:
    assert CompletionRequest.model_validate({"prompt": prompt}).prompts() == expected


@pytest.mark.parametrize(
    ("data", "param", "needle"),
    [
        ({"messages": MESSAGES, "n": 3}, "n", "only n=1"),
        ({"messages": MESSAGES, "temperature": -1}, "temperature", "greater than or equal to 0"),
        ({"messages": MESSAGES, "max_tokens": 0}, "max_tokens", "greater than or equal to 1"),
        ({"messages": []}, "messages", "at least 1"),
        ({"messages": MESSAGES, "stream_options": {"include_usage": True}}, None, "stream_options"),
        ({"messages": [{"role": "robot", "content": "x"}]}, "messages.0.role", "system"),
        ({"messages": MESSAGES, "stop": ["ok", ""]}, "stop", "empty"),
    ],
)
def test_chat_request_errors_name_the_field(data: dict, param: str | None, needle: str) -> None:
    error = api_error(ChatCompletionRequest, data)
    assert error.status == 400
    assert error.param == param
    assert needle in error.message
    assert "pydantic" not in error.message and "https://" not in error.message


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({}, "prompt"),
        ({"prompt": []}, "prompt"),
        ({"prompt": "x", "echo": True}, "echo"),
        ({"prompt": "x", "logprobs": 2}, "logprobs"),
        ({"prompt": "x", "top_p": 1.5}, "top_p"),
    ],
)
def test_completion_request_errors(data: dict, param: str) -> None:
    error = api_error(CompletionRequest, data)
    assert error.param is not None and error.param.startswith(param)


def test_tokenize_needs_exactly_one_input() -> None:
    assert "exactly one" in api_error(TokenizeRequest, {}).message
    assert TokenizeRequest.model_validate({"prompt": "x"}).prompt == "x"


def test_error_body_shape() -> None:
    assert error_body("nope", 404, "model") == {
        "error": {"message": "nope", "type": "NotFoundError", "param": "model", "code": 404}
    }


def test_union_field_errors_name_the_field_not_pydantic_types() -> None:
    error = api_error(CompletionRequest, {"prompt": 5})
    assert error.param == "prompt"
    assert "list[" not in error.message
