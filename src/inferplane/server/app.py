"""The OpenAI-compatible HTTP API (Starlette) over any :class:`~inferplane.server.engine.Engine`.

Routes: ``/v1/chat/completions``, ``/v1/completions``, ``/v1/models``, ``/health``, ``/metrics``,
``/v1/load_lora_adapter`` and ``/v1/unload_lora_adapter`` (vLLM, when runtime LoRA updating is on),
and what peer routers read: ``/tokenize``, ``/detokenize``, ``/v1/completions/render``,
``/v1/chat/completions/render`` (vLLM), ``/model_info``, ``/server_info`` (SGLang). The engine is
started and stopped by the caller (:mod:`inferplane.server.runner`), not by the app.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable, Coroutine
from typing import Any

import orjson
from pydantic import BaseModel, ValidationError
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from inferplane import __version__
from inferplane.configfile import ConfigError
from inferplane.server.config import ServerConfig
from inferplane.server.engine import Engine, EngineError
from inferplane.server.generation import (
    TextDelta,
    chat_prompt_ids,
    check_length,
    engine_request,
    generate_text,
    tokenize,
)
from inferplane.server.lora import LoraRegistry
from inferplane.server.metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from inferplane.server.metrics import ServerMetrics
from inferplane.server.protocol import (
    APIError,
    AssistantMessage,
    ChatChoice,
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionChoice,
    CompletionRequest,
    CompletionResponse,
    DetokenizeRequest,
    LoadLoRAAdapterRequest,
    ModelCard,
    ModelList,
    SamplingRequest,
    TokenizeRequest,
    UnloadLoRAAdapterRequest,
    describe_validation_error,
    error_body,
    make_usage,
)
from inferplane.server.sse import (
    DONE,
    ClientDisconnected,
    EventStream,
    sse_event,
    until_disconnect,
)

logger = logging.getLogger("inferplane.server")

Handler = Callable[[Request], Coroutine[Any, Any, Response]]


def json_response(content: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    body = content.model_dump_json().encode() if isinstance(content, BaseModel) else orjson.dumps(content)
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def error_response(message: str, status: int = 400, param: str | None = None) -> Response:
    return json_response(error_body(message, status, param), status)


async def read_json(request: Request) -> dict[str, Any]:
    body = await request.body()
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise APIError(f"malformed JSON body: {exc}", 400) from None
    if not isinstance(data, dict):
        raise APIError("the request body must be a JSON object", 400)
    return data


def parse(model: type[Any], data: dict[str, Any]) -> Any:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise describe_validation_error(exc) from None


class OpenAIServer:
    """Request handlers bound to one engine and its metrics."""

    def __init__(self, engine: Engine, config: ServerConfig) -> None:
        self.engine = engine
        self.config = config
        self.model_name = config.served_model_name
        self.metrics = ServerMetrics(engine, self.model_name, config.enable_prefix_caching)
        self.started = int(time.time())
        self.loras = LoraRegistry(engine, self.model_name, config.max_lora_rank)
        for index, module in enumerate(config.lora_modules):  # vLLM loads them before serving
            try:
                self.loras.load(module.name, module.path)
            except APIError as exc:
                raise ConfigError(f"lora_modules.{index} ({module.name}): {exc.message}") from None

    # ------------------------------------------------------------ helpers

    def check_model(self, model: str | None) -> str | None:
        """The LoRA adapter ``model`` names (None: the base model); 404 for a model not served here."""
        return self.loras.resolve(model)

    def response_model(self, lora_name: str | None) -> str:
        """The ``model`` of a response: the adapter's name when one was applied (as vLLM)."""
        return lora_name or self.model_name

    def check_priority(self, priority: int) -> None:
        """vLLM refuses a non-zero ``priority`` unless the server schedules by priority."""
        if priority != 0 and self.config.scheduling_policy != "priority":
            raise APIError(
                f"Got priority {priority} but priority scheduling is not enabled "
                "(start the server with scheduling_policy: priority).",
                400,
                "priority",
            )

    @staticmethod
    def request_id(request: Request) -> str:
        return request.headers.get("x-request-id") or uuid.uuid4().hex

    @staticmethod
    def _chunk(
        response_id: str, model: str, created: int, obj: str, choices: list[Any], usage: Any = None
    ) -> bytes:
        payload: dict[str, Any] = {
            "id": response_id,
            "object": obj,
            "created": created,
            "model": model,
            "choices": choices,
        }
        if usage is not None:
            payload["usage"] = usage
        return sse_event(orjson.dumps(payload))

    # ------------------------------------------------------------ chat completions

    async def chat_completions(self, request: Request) -> Response:
        body = parse(ChatCompletionRequest, await read_json(request))
        lora_name = self.check_model(body.model)
        model = self.response_model(lora_name)
        self.check_priority(body.priority)
        prompt_ids = await chat_prompt_ids(self.engine, body.chat_messages(), body.add_generation_prompt)
        max_tokens = check_length(self.engine, len(prompt_ids), body.requested_max_tokens(), "messages")
        base_id = self.request_id(request)
        response_id = f"chatcmpl-{base_id}"
        engine_req = engine_request(self.engine, response_id, prompt_ids, body, max_tokens, lora_name)
        deltas = generate_text(self.engine, engine_req, body.stop_strings, self.metrics)
        headers = {"x-request-id": base_id}
        if body.stream:
            return EventStream(self._chat_stream(response_id, model, len(prompt_ids), body, deltas), headers)  # type: ignore[return-value]
        last, text = await until_disconnect(_collect(deltas), request.receive)
        response = ChatCompletionResponse(
            id=response_id,
            model=model,
            choices=[
                ChatChoice(
                    index=0,
                    message=AssistantMessage(content=text),
                    finish_reason=last.finish_reason,
                    stop_reason=last.stop_reason,
                )
            ],
            usage=make_usage(len(prompt_ids), last.completion_tokens, last.cached_tokens),
        )
        return json_response(response, headers=headers)

    async def _chat_stream(
        self,
        response_id: str,
        model: str,
        prompt_tokens: int,
        body: SamplingRequest,
        deltas: AsyncIterator[TextDelta],
    ) -> AsyncIterator[bytes]:
        created = int(time.time())
        obj = "chat.completion.chunk"
        try:
            yield self._chunk(
                response_id,
                model,
                created,
                obj,
                [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}],
            )
            last: TextDelta | None = None
            async for delta in _errors_as_events(deltas):
                if isinstance(delta, bytes):
                    yield delta
                    return
                last = delta
                choice: dict[str, Any] = {
                    "index": 0,
                    "delta": {"content": delta.text} if delta.text else {},
                    "logprobs": None,
                    "finish_reason": delta.finish_reason,
                }
                if delta.finish_reason is not None:
                    choice["stop_reason"] = delta.stop_reason
                yield self._chunk(response_id, model, created, obj, [choice])
            if body.include_usage and last is not None:
                usage = make_usage(prompt_tokens, last.completion_tokens, last.cached_tokens).model_dump()
                yield self._chunk(response_id, model, created, obj, [], usage)
            yield DONE
        finally:
            await deltas.aclose()  # type: ignore[attr-defined]

    # ------------------------------------------------------------ completions

    async def _completion_prompts(self, body: CompletionRequest) -> list[list[int]]:
        prompts: list[list[int]] = []
        for prompt in body.prompts():
            if isinstance(prompt, str):
                prompts.append(await tokenize(self.engine, prompt, body.add_special_tokens))
            else:
                prompts.append(list(prompt))
        return prompts

    async def completions(self, request: Request) -> Response:
        body = parse(CompletionRequest, await read_json(request))
        lora_name = self.check_model(body.model)
        model = self.response_model(lora_name)
        self.check_priority(body.priority)
        prompts = await self._completion_prompts(body)
        limits = [check_length(self.engine, len(ids), body.requested_max_tokens(), "prompt") for ids in prompts]
        base_id = self.request_id(request)
        response_id = f"cmpl-{base_id}"
        streams = [
            generate_text(
                self.engine,
                engine_request(self.engine, f"{response_id}-{i}", ids, body, limit, lora_name),
                body.stop_strings,
                self.metrics,
            )
            for i, (ids, limit) in enumerate(zip(prompts, limits, strict=True))
        ]
        headers = {"x-request-id": base_id}
        prompt_tokens = sum(len(ids) for ids in prompts)
        if body.stream:
            return EventStream(self._completion_stream(response_id, model, prompt_tokens, body, streams), headers)  # type: ignore[return-value]
        try:
            results = await until_disconnect(asyncio.gather(*(_collect(stream) for stream in streams)), request.receive)
        finally:
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]
        response = CompletionResponse(
            id=response_id,
            model=model,
            choices=[
                CompletionChoice(index=i, text=text, finish_reason=last.finish_reason, stop_reason=last.stop_reason)
                for i, (last, text) in enumerate(results)
            ],
            usage=make_usage(
                prompt_tokens,
                sum(last.completion_tokens for last, _ in results),
                sum(last.cached_tokens for last, _ in results),
            ),
        )
        return json_response(response, headers=headers)

    async def _completion_stream(
        self,
        response_id: str,
        model: str,
        prompt_tokens: int,
        body: SamplingRequest,
        streams: list[AsyncIterator[TextDelta]],
    ) -> AsyncIterator[bytes]:
        created = int(time.time())
        obj = "text_completion"
        merged: asyncio.Queue[tuple[int, TextDelta | None]] = asyncio.Queue()

        async def drain(index: int, stream: AsyncIterator[TextDelta]) -> None:
            try:
                async for delta in stream:
                    merged.put_nowait((index, delta))
            finally:
                merged.put_nowait((index, None))

        failure: list[bytes] = []

        async def drain_or_fail(index: int, stream: AsyncIterator[TextDelta]) -> None:
            try:
                await drain(index, stream)
            except (EngineError, APIError) as exc:
                failure.append(_error_event(exc))

        tasks = [asyncio.ensure_future(drain_or_fail(i, s)) for i, s in enumerate(streams)]
        completion_tokens = [0] * len(streams)
        cached_tokens = [0] * len(streams)
        try:
            open_streams = len(streams)
            while open_streams:
                index, delta = await merged.get()
                if delta is None:
                    open_streams -= 1
                    continue
                completion_tokens[index] = delta.completion_tokens
                cached_tokens[index] = delta.cached_tokens
                choice = {
                    "index": index,
                    "text": delta.text,
                    "logprobs": None,
                    "finish_reason": delta.finish_reason,
                    "stop_reason": delta.stop_reason,
                }
                yield self._chunk(response_id, model, created, obj, [choice])
            for task in tasks:
                task.result()
            if failure:
                yield failure[0]
                yield DONE
                return
            if body.include_usage:
                usage = make_usage(prompt_tokens, sum(completion_tokens), sum(cached_tokens)).model_dump()
                yield self._chunk(response_id, model, created, obj, [], usage)
            yield DONE
        finally:
            # Cancelling a drain task closes the stream it iterates (aborting its engine request);
            # wait for that before closing the rest (never-started streams).
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for stream in streams:
                await stream.aclose()  # type: ignore[attr-defined]

    # ------------------------------------------------------------ models, health, metrics

    async def models(self, request: Request) -> Response:
        card = ModelCard(
            id=self.model_name,
            created=self.started,
            root=self.config.model or self.model_name,
            max_model_len=self.engine.max_model_len,
        )
        adapters = [
            ModelCard(id=adapter.name, created=self.started, root=adapter.path, parent=self.model_name)
            for adapter in self.loras.adapters()
        ]
        return json_response(ModelList(data=[card, *adapters]))

    # ------------------------------------------------------------ LoRA adapters at run time (vLLM)

    def _check_runtime_updating(self) -> None:
        if not self.config.allow_runtime_lora_updating:
            raise APIError(
                "Loading and unloading LoRA adapters at run time is off; start the server with "
                "allow_runtime_lora_updating: true (vLLM: VLLM_ALLOW_RUNTIME_LORA_UPDATING=True).",
                404,
            )

    async def load_lora_adapter(self, request: Request) -> Response:
        self._check_runtime_updating()
        body = parse(LoadLoRAAdapterRequest, await read_json(request))
        message = self.loras.load(body.lora_name, body.lora_path)
        logger.info("loaded LoRA adapter %r from %s", body.lora_name, body.lora_path)
        return Response(message, media_type="text/plain")

    async def unload_lora_adapter(self, request: Request) -> Response:
        self._check_runtime_updating()
        body = parse(UnloadLoRAAdapterRequest, await read_json(request))
        message = self.loras.unload(body.lora_name)
        logger.info("unloaded LoRA adapter %r", body.lora_name)
        return Response(message, media_type="text/plain")

    async def health(self, request: Request) -> Response:
        return Response(status_code=200 if self.engine.is_healthy() else 503)

    async def prometheus(self, request: Request) -> Response:
        return Response(self.metrics.render(), media_type=METRICS_CONTENT_TYPE)

    # ------------------------------------------------------------ tokenizer endpoints (vLLM)

    async def tokenize_endpoint(self, request: Request) -> Response:
        body = parse(TokenizeRequest, await read_json(request))
        self.check_model(body.model)
        if body.messages is not None:
            messages = [{"role": m.role, "content": m.text()} for m in body.messages]
            ids = await chat_prompt_ids(self.engine, messages, body.add_generation_prompt)
        else:
            ids = await tokenize(self.engine, body.prompt or "", body.add_special_tokens)
        result: dict[str, Any] = {"count": len(ids), "max_model_len": self.engine.max_model_len, "tokens": ids}
        if body.return_token_strs:
            result["token_strs"] = [self.engine.detokenize([i]) for i in ids]
        return json_response(result)

    async def detokenize_endpoint(self, request: Request) -> Response:
        body = parse(DetokenizeRequest, await read_json(request))
        self.check_model(body.model)
        return json_response({"prompt": self.engine.detokenize(body.tokens)})

    def _rendered(
        self, request_id: str, ids: list[int], body: SamplingRequest, max_tokens: int, model: str
    ) -> dict[str, Any]:
        params = body.sampling_params(max_tokens, self.engine.eos_token_ids)
        return {
            "request_id": request_id,
            "token_ids": ids,
            "sampling_params": {
                "max_tokens": params.max_tokens,
                "temperature": params.temperature,
                "top_p": params.top_p,
                "top_k": params.top_k,
                "seed": params.seed,
                "stop": body.stop_strings,
                "stop_token_ids": list(body.stop_token_ids or []),
                "ignore_eos": params.ignore_eos,
                "presence_penalty": params.presence_penalty,
                "frequency_penalty": params.frequency_penalty,
                "repetition_penalty": params.repetition_penalty,
            },
            "model": model,
            "stream": body.stream,
            "stream_options": body.stream_options.model_dump() if body.stream_options else None,
            "token_offsets": None,
        }

    async def render_completions(self, request: Request) -> Response:
        body = parse(CompletionRequest, await read_json(request))
        model = self.response_model(self.check_model(body.model))
        base_id = self.request_id(request)
        rendered = []
        for i, ids in enumerate(await self._completion_prompts(body)):
            max_tokens = check_length(self.engine, len(ids), body.requested_max_tokens(), "prompt")
            rendered.append(self._rendered(f"cmpl-{base_id}-{i}", ids, body, max_tokens, model))
        return json_response(rendered)

    async def render_chat(self, request: Request) -> Response:
        body = parse(ChatCompletionRequest, await read_json(request))
        model = self.response_model(self.check_model(body.model))
        ids = await chat_prompt_ids(self.engine, body.chat_messages(), body.add_generation_prompt)
        max_tokens = check_length(self.engine, len(ids), body.requested_max_tokens(), "messages")
        return json_response(self._rendered(f"chatcmpl-{self.request_id(request)}", ids, body, max_tokens, model))

    # ------------------------------------------------------------ SGLang-style info

    def _tokenizer_path(self) -> str | None:
        return self.config.model if self.config.engine != "sim" else None

    async def model_info(self, request: Request) -> Response:
        return json_response(
            {
                "model_path": self.config.model or self.model_name,
                "tokenizer_path": self._tokenizer_path(),
                "served_model_name": self.model_name,
                "is_generation": True,
                "preferred_sampling_params": None,
                "weight_version": "default",
                "has_image_understanding": False,
                "has_audio_understanding": False,
                "max_model_len": self.engine.max_model_len,
            }
        )

    async def server_info(self, request: Request) -> Response:
        stats = self.engine.stats()
        cfg = self.config
        return json_response(
            {
                "version": f"inferplane {__version__}",
                "engine": cfg.engine,
                "model_path": cfg.model or self.model_name,
                "tokenizer_path": self._tokenizer_path(),
                "served_model_name": self.model_name,
                "host": cfg.host,
                "port": cfg.port,
                "context_length": self.engine.max_model_len,
                "max_running_requests": cfg.max_num_seqs,
                "chunked_prefill_size": cfg.max_num_batched_tokens,
                "page_size": stats.block_size,
                "max_total_num_tokens": stats.block_size * stats.num_gpu_blocks,
                "disable_radix_cache": not cfg.enable_prefix_caching,
                "device": cfg.device,
                "tp_size": 1,
                "dp_size": 1,
                "internal_states": [
                    {
                        "num_requests_running": stats.num_requests_running,
                        "num_requests_waiting": stats.num_requests_waiting,
                        "kv_cache_usage": stats.kv_cache_usage,
                        "prefix_cache_queries": stats.prefix_cache_queries,
                        "prefix_cache_hits": stats.prefix_cache_hits,
                        **stats.extra,
                    }
                ],
            }
        )


async def _collect(deltas: AsyncIterator[TextDelta]) -> tuple[TextDelta, str]:
    """The whole text of one choice and its last delta (finish reason, token counts)."""
    parts: list[str] = []
    last: TextDelta | None = None
    try:
        async for delta in deltas:
            parts.append(delta.text)
            last = delta
    finally:
        await deltas.aclose()  # type: ignore[attr-defined]
    if last is None:
        raise EngineError("the engine ended the request without output", status=500)
    return last, "".join(parts)


def _error_event(exc: EngineError | APIError) -> bytes:
    status = exc.status
    message = exc.message if isinstance(exc, APIError) else str(exc)
    return sse_event(orjson.dumps(error_body(message, status, exc.param)))


async def _errors_as_events(deltas: AsyncIterator[TextDelta]) -> AsyncIterator[TextDelta | bytes]:
    """The deltas; an engine failure after the response has started becomes an SSE error event
    followed by ``[DONE]`` (as vLLM does), never a torn connection."""
    try:
        async for delta in deltas:
            yield delta
    except (EngineError, APIError) as exc:
        yield _error_event(exc) + DONE


def _guard(handler: Handler) -> Handler:
    """Turn every failure into OpenAI error JSON; never a traceback to the client."""

    async def guarded(request: Request) -> Response:
        try:
            return await handler(request)
        except APIError as exc:
            return error_response(exc.message, exc.status, exc.param)
        except EngineError as exc:
            return error_response(str(exc), exc.status, exc.param)
        except ClientDisconnected:
            return Response(status_code=499)
        except Exception:
            logger.exception("internal error on %s", request.url.path)
            return error_response("internal server error", 500)

    return guarded


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    return error_response(exc.detail or "error", exc.status_code)


def create_app(engine: Engine, config: ServerConfig) -> Starlette:
    """The ASGI app for a started ``engine``."""
    server = OpenAIServer(engine, config)
    post, get = ["POST"], ["GET"]
    routes = [
        Route("/v1/chat/completions", _guard(server.chat_completions), methods=post),
        Route("/v1/completions", _guard(server.completions), methods=post),
        Route("/v1/models", _guard(server.models), methods=get),
        Route("/v1/load_lora_adapter", _guard(server.load_lora_adapter), methods=post),
        Route("/v1/unload_lora_adapter", _guard(server.unload_lora_adapter), methods=post),
        Route("/health", server.health, methods=get),
        Route("/metrics", server.prometheus, methods=get),
        Route("/tokenize", _guard(server.tokenize_endpoint), methods=post),
        Route("/detokenize", _guard(server.detokenize_endpoint), methods=post),
        Route("/v1/completions/render", _guard(server.render_completions), methods=post),
        Route("/v1/chat/completions/render", _guard(server.render_chat), methods=post),
        Route("/model_info", _guard(server.model_info), methods=get),
        Route("/get_model_info", _guard(server.model_info), methods=get),
        Route("/server_info", _guard(server.server_info), methods=get),
        Route("/get_server_info", _guard(server.server_info), methods=get),
    ]
    app = Starlette(routes=routes, exception_handlers={HTTPException: _http_error})
    app.state.server = server
    return app
