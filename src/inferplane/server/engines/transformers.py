"""A torch + transformers engine for CUDA (or CPU): ``--engine transformers --device cuda``.

Batching is static per batch, iteration by iteration: an engine thread takes up to
``max_num_seqs`` waiting requests, left-pads them into one batch, prefills once and decodes step
by step with one shared KV cache, streaming each row's new token after every step. Requests that
arrive meanwhile wait for the next batch; an aborted row stops streaming at once and the batch
ends early when every row is done. torch and transformers are imported only when this engine is
started, so the rest of inferplane works without them.
"""

from __future__ import annotations

import asyncio
import importlib.util
import itertools
import queue
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from inferplane.configfile import ConfigError
from inferplane.server.config import ServerConfig
from inferplane.server.engine import (
    Engine,
    EngineError,
    EngineOutput,
    EngineRequest,
    EngineStats,
    FinishReason,
)


def _require(package: str) -> None:
    if importlib.util.find_spec(package) is None:
        raise ConfigError(
            f"engine 'transformers' needs the Python package '{package}', which is not installed "
            f"(pip install torch transformers gguf)"
        )


@dataclass
class _Slot:
    """One request inside the engine thread."""

    rid: int
    request: EngineRequest
    stream: asyncio.Queue[EngineOutput | Exception]
    generator: Any = None
    generated: int = 0
    done: bool = False
    aborted: threading.Event = field(default_factory=threading.Event)


class TransformersEngine(Engine):
    """Hugging Face transformers on torch; GGUF files are dequantized at load time."""

    def __init__(self, config: ServerConfig) -> None:
        _require("torch")
        _require("transformers")
        assert config.model is not None
        self.config = config
        self.model_name = config.served_model_name
        self.max_model_len = config.max_model_len
        self._device = config.device.lower() if config.device != "CPU" else "cpu"
        self._tokenizer: Any = None
        self._model: Any = None
        self._eos: frozenset[int] = frozenset()
        self._waiting: queue.SimpleQueue[_Slot | None] = queue.SimpleQueue()
        self._slots: dict[int, _Slot] = {}
        self._ids = itertools.count(1)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._running = 0
        self._batch_tokens = 0
        self._max_running = 0

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._load)
        self._thread = threading.Thread(target=self._run, name="transformers-engine", daemon=True)
        self._thread.start()

    def _load(self) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(self.config.model or "")
        kwargs: dict[str, Any] = {}
        if path.suffix == ".gguf":
            kwargs["gguf_file"] = path.name
            path = path.parent
        dtype = torch.bfloat16 if self._device.startswith("cuda") else torch.float32
        self._tokenizer = AutoTokenizer.from_pretrained(path, **kwargs)
        self._tokenizer.padding_side = "left"
        if self._tokenizer.pad_token_id is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token
        self._model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=dtype, **kwargs).to(self._device).eval()
        eos = self._model.generation_config.eos_token_id
        eos_ids = eos if isinstance(eos, list) else [eos if eos is not None else self._tokenizer.eos_token_id]
        self._eos = frozenset(int(i) for i in eos_ids if i is not None)

    async def stop(self) -> None:
        self._waiting.put(None)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join, 30)
        for slot in list(self._slots.values()):
            slot.stream.put_nowait(EngineError("the engine stopped", status=503))

    # ------------------------------------------------------------ engine thread

    def _emit(self, slot: _Slot, output: EngineOutput | Exception) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(slot.stream.put_nowait, output)

    def _next_batch(self) -> list[_Slot] | None:
        first = self._waiting.get()
        if first is None:
            return None
        batch = [first]
        while len(batch) < self.config.max_num_seqs:
            try:
                slot = self._waiting.get_nowait()
            except queue.Empty:
                break
            if slot is None:
                self._waiting.put(None)
                break
            batch.append(slot)
        return [slot for slot in batch if not slot.aborted.is_set()]

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            if not batch:
                continue
            try:
                self._run_batch(batch)
            except Exception as exc:  # noqa: BLE001 - a failed batch fails its requests, not the engine
                for slot in batch:
                    if not slot.done:
                        self._emit(slot, EngineError(f"generation failed: {exc}", status=500))
            finally:
                self._running = 0
                self._batch_tokens = 0

    def _run_batch(self, batch: list[_Slot]) -> None:
        import torch

        model, device = self._model, self._device
        width = max(len(s.request.prompt_token_ids) for s in batch)
        pad = int(self._tokenizer.pad_token_id)
        input_ids = torch.full((len(batch), width), pad, dtype=torch.long)
        attention = torch.zeros((len(batch), width), dtype=torch.long)
        for row, slot in enumerate(batch):
            ids = list(slot.request.prompt_token_ids)
            input_ids[row, width - len(ids) :] = torch.tensor(ids)
            attention[row, width - len(ids) :] = 1
            if slot.request.params.seed is not None:
                slot.generator = torch.Generator(device=device).manual_seed(slot.request.params.seed)
        input_ids, attention = input_ids.to(device), attention.to(device)
        self._running = len(batch)
        self._max_running = max(self._max_running, len(batch))
        past = None
        next_ids = input_ids
        steps = max(s.request.params.max_tokens for s in batch)
        with torch.inference_mode():
            for step in range(steps):
                positions = (attention.cumsum(-1) - 1).clamp(min=0)
                if past is not None:
                    positions = positions[:, -1:]
                out = model(
                    input_ids=next_ids,
                    attention_mask=attention,
                    position_ids=positions,
                    past_key_values=past,
                    use_cache=True,
                )
                past = out.past_key_values
                logits = out.logits[:, -1, :].float()
                next_ids = torch.stack([self._sample(logits[row], slot) for row, slot in enumerate(batch)]).unsqueeze(-1)
                attention = torch.cat([attention, torch.ones_like(next_ids)], dim=-1)
                self._batch_tokens = int(attention.sum())
                chosen = next_ids.squeeze(-1).tolist()
                for slot, token in zip(batch, chosen, strict=True):
                    if slot.done:
                        continue
                    if slot.aborted.is_set():
                        slot.done = True
                        continue
                    slot.generated += 1
                    params = slot.request.params
                    reason: FinishReason | None = None
                    if not params.ignore_eos and token in set(params.stop_token_ids) | self._eos:
                        reason = "stop"
                    elif slot.generated >= params.max_tokens:
                        reason = "length"
                    slot.done = reason is not None
                    self._emit(slot, EngineOutput([int(token)], slot.done, reason))
                self._running = sum(1 for s in batch if not s.done)
                if all(s.done for s in batch) or step + 1 >= steps:
                    break

    @staticmethod
    def _sample(logits: Any, slot: _Slot) -> Any:
        import torch

        params = slot.request.params
        if params.temperature <= 0:
            return logits.argmax()
        logits = logits / params.temperature
        if params.top_k > 0:
            cutoff = torch.topk(logits, min(params.top_k, logits.numel())).values[-1]
            logits = logits.masked_fill(logits < cutoff, float("-inf"))
        probs = torch.softmax(logits, dim=-1)
        if params.top_p < 1.0:
            sorted_probs, order = probs.sort(descending=True)
            keep = sorted_probs.cumsum(-1) - sorted_probs < params.top_p
            probs = torch.zeros_like(probs).scatter(0, order[keep], sorted_probs[keep])
        return torch.multinomial(probs, 1, generator=slot.generator).squeeze(-1)

    # ------------------------------------------------------------ Engine interface

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        rid = next(self._ids)
        slot = _Slot(rid, request, asyncio.Queue())
        self._slots[rid] = slot
        self._waiting.put(slot)
        finished = False
        try:
            while True:
                item = await slot.stream.get()
                if isinstance(item, Exception):
                    finished = True
                    raise item
                finished = item.finished
                yield item
                if finished:
                    return
        finally:
            del self._slots[rid]
            if not finished:
                slot.aborted.set()

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        return list(self._tokenizer.encode(text, add_special_tokens=add_special_tokens))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(self._tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt))

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    def stats(self) -> EngineStats:
        block_size = self.config.block_size
        capacity_blocks = self.config.max_num_seqs * self.max_model_len // block_size
        used_blocks = -(-self._batch_tokens // block_size)
        return EngineStats(
            num_requests_running=self._running,
            num_requests_waiting=max(len(self._slots) - self._running, 0),
            kv_cache_usage=min(used_blocks / capacity_blocks, 1.0) if capacity_blocks else 0.0,
            block_size=block_size,
            num_gpu_blocks=capacity_blocks,
            extra={"max_num_running_observed": float(self._max_running)},
        )
