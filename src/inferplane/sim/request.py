"""The simulator's per-request state (what vLLM v1 keeps in ``vllm.v1.request.Request``)."""

from __future__ import annotations

import enum
from collections.abc import Collection
from typing import Literal

from inferplane.sim.kv_cache import KVCacheOwner

FinishReason = Literal["stop", "length", "abort"]


class RequestStatus(enum.IntEnum):
    WAITING = 0
    RUNNING = 1
    PREEMPTED = 2
    FINISHED = 3


class SimRequest(KVCacheOwner):
    """One request: its tokens (prompt then output), progress, and how it will end.

    ``eos_at`` is the output index at which the simulated model emits EOS (None: never, as with
    ``ignore_eos``); ``text_offset`` picks where in the sampler's word sequence its text starts.
    """

    __slots__ = (
        "arrival_time",
        "eos_at",
        "finish_reason",
        "finish_time",
        "first_token_time",
        "ignore_eos",
        "max_tokens",
        "num_cached_tokens",
        "num_computed_tokens",
        "num_preemptions",
        "num_prompt_tokens",
        "priority",
        "request_id",
        "status",
        "stop_token_ids",
        "text_offset",
    )

    def __init__(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        max_tokens: int,
        *,
        ignore_eos: bool = False,
        stop_token_ids: Collection[int] = (),
        lora_name: str | None = None,
        arrival_time: float = 0.0,
        priority: int = 0,
    ) -> None:
        super().__init__(list(prompt_token_ids), lora_name)
        # vLLM's request priority: lower is served first (used by the ``priority`` policy).
        self.priority = priority
        self.request_id = request_id
        self.num_prompt_tokens = len(prompt_token_ids)
        self.max_tokens = max_tokens
        self.ignore_eos = ignore_eos
        self.stop_token_ids = frozenset(stop_token_ids)
        self.eos_at: int | None = None
        self.text_offset = 0
        self.num_computed_tokens = 0
        # Prompt tokens found in the prefix cache when first scheduled (-1: not yet scheduled).
        self.num_cached_tokens = -1
        self.num_preemptions = 0
        self.status = RequestStatus.WAITING
        self.finish_reason: FinishReason | None = None
        self.arrival_time = arrival_time
        self.first_token_time: float | None = None
        self.finish_time: float | None = None

    @property
    def num_tokens(self) -> int:
        return len(self.all_token_ids)

    @property
    def num_output_tokens(self) -> int:
        return len(self.all_token_ids) - self.num_prompt_tokens

    @property
    def output_token_ids(self) -> list[int]:
        return self.all_token_ids[self.num_prompt_tokens :]

    @property
    def is_finished(self) -> bool:
        return self.status == RequestStatus.FINISHED

    def __repr__(self) -> str:
        return (
            f"SimRequest({self.request_id!r}, prompt={self.num_prompt_tokens}, "
            f"output={self.num_output_tokens}, computed={self.num_computed_tokens}, {self.status.name})"
        )
