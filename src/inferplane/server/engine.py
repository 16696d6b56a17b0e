"""The interface every inference engine implements, so the server never knows which one it drives.

An engine owns batching and the KV cache. The server turns OpenAI requests into
:class:`EngineRequest` objects (token ids plus sampling parameters), iterates the engine's
:class:`EngineOutput` stream, detokenizes incrementally, applies stop strings and formats
responses. Engines: OpenVINO GenAI (CPU default), the vLLM simulator (``inferplane.sim``), and a
transformers/torch engine for CUDA.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Literal

FinishReason = Literal["stop", "length", "abort"]


@dataclass(frozen=True, slots=True)
class SamplingParams:
    max_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    seed: int | None = None
    ignore_eos: bool = False
    stop_token_ids: Sequence[int] = ()
    top_k: int = 0  # 0: no top-k cut
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0


@dataclass(frozen=True, slots=True)
class EngineRequest:
    request_id: str
    prompt_token_ids: Sequence[int]
    params: SamplingParams
    # The LoRA adapter to apply (a name the engine was given with ``add_lora``); None: the base model.
    lora_name: str | None = None
    # vLLM's request priority (lower first); only engines started with the priority policy see non-zero.
    priority: int = 0


@dataclass(slots=True)
class EngineOutput:
    """Tokens produced since the previous output of the same request."""

    new_token_ids: list[int]
    finished: bool = False
    finish_reason: FinishReason | None = None
    # Prompt tokens served from the prefix cache; known once prefill is done.
    num_cached_tokens: int = 0


@dataclass(slots=True)
class EngineStats:
    """What ``/metrics`` exports as the vLLM metric contract (see docs/design: metrics)."""

    num_requests_running: int = 0
    num_requests_waiting: int = 0
    kv_cache_usage: float = 0.0  # 0..1
    block_size: int = 16
    num_gpu_blocks: int = 0
    prefix_cache_queries: int = 0  # tokens looked up
    prefix_cache_hits: int = 0  # tokens found
    num_preemptions: int = 0
    # LoRA, exported as ``vllm:lora_requests_info``; None: LoRA off (no such series, as in vLLM).
    max_lora: int | None = None
    running_lora_adapters: Sequence[str] = ()
    waiting_lora_adapters: Sequence[str] = ()
    extra: dict[str, float] = field(default_factory=dict)


class EngineError(Exception):
    """A request the engine cannot serve; ``status`` is the HTTP status to answer with."""

    def __init__(self, message: str, status: int = 400, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


class Engine(abc.ABC):
    """An inference engine serving one model (plus adapters) with continuous batching."""

    #: Served model name (what ``/v1/models`` lists and requests must name).
    model_name: str
    #: Prompt plus generated tokens must fit in this.
    max_model_len: int

    @abc.abstractmethod
    async def start(self) -> None:
        """Load weights and start the engine loop; returns when requests can be accepted."""

    @abc.abstractmethod
    async def stop(self) -> None:
        """Abort every request and stop the engine loop."""

    @abc.abstractmethod
    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]: ...

    @abc.abstractmethod
    def detokenize(self, token_ids: Sequence[int]) -> str: ...

    @abc.abstractmethod
    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str: ...

    @property
    @abc.abstractmethod
    def eos_token_ids(self) -> frozenset[int]: ...

    @abc.abstractmethod
    def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        """Stream outputs for one request. Closing the iterator (or cancelling the task
        iterating it) aborts the request and frees its batch slot and KV blocks at once."""

    @abc.abstractmethod
    def stats(self) -> EngineStats: ...

    def add_lora(self, name: str, path: str) -> None:
        """Make adapter ``name`` (weights at ``path``) available to requests; engines that cannot
        apply adapters refuse (the server configuration already rejects ``lora_modules`` for them)."""
        raise EngineError(f"this engine cannot apply LoRA adapters (adapter {name!r})", status=400, param="lora_modules")

    def remove_lora(self, name: str) -> None:
        """Forget adapter ``name``; requests already running with it may finish."""

    def is_healthy(self) -> bool:
        """False once the engine can no longer serve (``/health`` answers 503)."""
        return True

    def token_bytes(self) -> Sequence[bytes] | None:
        """The bytes of every token id (special tokens ``b""``) when the vocabulary is byte-level;
        lets the server detokenize without calling the tokenizer. ``None``: use :meth:`detokenize`."""
        return None
