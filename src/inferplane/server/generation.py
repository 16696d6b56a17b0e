"""From a validated OpenAI request to text deltas: prompt tokens, length checks, engine stream.

Formatting (chat vs completions, streaming vs not) happens in :mod:`inferplane.server.app`; this
module owns what both share.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from inferplane.observe.server_telemetry import record_generation
from inferplane.server.detokenizer import (
    ByteTableDecoder,
    IncrementalDecoder,
    TextStream,
    WindowDecoder,
)
from inferplane.server.engine import Engine, EngineRequest, SamplingParams
from inferplane.server.metrics import RequestTimer, ServerMetrics
from inferplane.server.protocol import APIError, SamplingRequest

# Prompts longer than this (characters) are tokenized off the event loop.
_INLINE_TOKENIZE_CHARS = 2000


async def tokenize(engine: Engine, text: str, add_special_tokens: bool) -> list[int]:
    if len(text) <= _INLINE_TOKENIZE_CHARS:
        return engine.tokenize(text, add_special_tokens=add_special_tokens)
    return await asyncio.to_thread(engine.tokenize, text, add_special_tokens)


async def chat_prompt_ids(engine: Engine, messages: list[dict[str, str]], add_generation_prompt: bool) -> list[int]:
    """The chat template applied, then tokenized (the template already holds the special tokens)."""
    text = engine.apply_chat_template(messages, add_generation_prompt=add_generation_prompt)
    return await tokenize(engine, text, add_special_tokens=False)


def check_length(engine: Engine, prompt_len: int, requested: int | None, what: str = "messages") -> int:
    """``max_tokens`` to use; a 400 naming the lengths when prompt plus completion do not fit."""
    limit = engine.max_model_len
    if prompt_len >= limit or (requested is not None and prompt_len + requested > limit):
        wanted = prompt_len + (requested or 0)
        raise APIError(
            f"This model's maximum context length is {limit} tokens. However, you requested "
            f"{wanted} tokens ({prompt_len} in the {what}, {requested or 0} in the completion). "
            f"Please reduce the length of the {what} or completion.",
            400,
            "max_tokens" if requested and prompt_len < limit else what,
        )
    return requested if requested is not None else limit - prompt_len


def engine_request(
    engine: Engine,
    request_id: str,
    prompt_ids: Sequence[int],
    request: SamplingRequest,
    max_tokens: int,
    lora_name: str | None = None,
) -> EngineRequest:
    params: SamplingParams = request.sampling_params(max_tokens, engine.eos_token_ids)
    return EngineRequest(
        request_id=request_id,
        prompt_token_ids=prompt_ids,
        params=params,
        lora_name=lora_name,
        priority=request.priority,
    )


def new_decoder(engine: Engine) -> IncrementalDecoder:
    table = engine.token_bytes()
    if table is not None:
        return ByteTableDecoder(table)
    return WindowDecoder(engine.detokenize)


@dataclass(slots=True)
class TextDelta:
    """New text of one choice; ``finish_reason`` set on the last one."""

    text: str
    finish_reason: str | None
    stop_reason: str | None
    completion_tokens: int
    cached_tokens: int


async def generate_text(
    engine: Engine, request: EngineRequest, stop: Sequence[str], metrics: ServerMetrics
) -> AsyncIterator[TextDelta]:
    """Stream text deltas of one request; closing this iterator aborts the engine request."""
    timer = RequestTimer(metrics, len(request.prompt_token_ids))
    text_stream = TextStream(new_decoder(engine), stop)
    outputs = engine.generate(request)
    reason = "abort"
    cached = 0
    try:
        async for output in outputs:
            cached = max(cached, output.num_cached_tokens)
            before = text_stream.num_tokens
            text = text_stream.push(output.new_token_ids)
            timer.tokens(text_stream.num_tokens - before)
            if text_stream.stopped_by is not None:
                reason = "stop"
                yield TextDelta(text, reason, text_stream.stopped_by, text_stream.num_tokens, cached)
                return
            if output.finished:
                reason = output.finish_reason or "stop"
                text += text_stream.finish()
                yield TextDelta(text, reason, None, text_stream.num_tokens, cached)
                return
            if text:
                yield TextDelta(text, None, None, text_stream.num_tokens, cached)
    finally:
        await outputs.aclose()  # type: ignore[attr-defined]
        timer.finish(reason)
        record_generation(reason, timer.prompt_tokens, timer.generated)
