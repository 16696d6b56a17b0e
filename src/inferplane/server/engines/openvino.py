"""OpenVINO GenAI engine: ``ContinuousBatchingPipeline`` in an engine process, driven by one thread.

The server process keeps the tokenizer (chat template, token counting, detokenization) and sends
token ids to the engine process (:mod:`.openvino_worker`), which adds them to the running batch
between two ``step()`` calls and streams new tokens back after every step. A reader thread hands
each step's outputs to the event loop with ``loop.call_soon_threadsafe``; a writer thread sends
commands so a busy engine never blocks the event loop. Closing a request's iterator sends an
abort: the engine cancels the generation handle and the next step frees its slot and KV blocks.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import queue
import subprocess
import sys
import threading
from collections.abc import AsyncIterator, Sequence
from multiprocessing.connection import Connection
from typing import Any

from inferplane.server.config import ServerConfig
from inferplane.server.engine import (
    Engine,
    EngineError,
    EngineOutput,
    EngineRequest,
    EngineStats,
)

_WORKER_MODULE = "inferplane.server.engines.openvino_worker"


def _load_tokenizer(model: str) -> Any:
    import openvino_genai as ov_genai

    return ov_genai.Tokenizer(model)


def _is_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def _token_bytes_table(tokenizer: Any) -> list[bytes] | None:
    """Bytes per token id for byte-level vocabularies, special tokens as ``b""``; ``None`` if the
    vocabulary does not reproduce the tokenizer's own decoding."""
    vocab: dict[bytes, int] = tokenizer.get_vocab()
    if not vocab or not all(isinstance(key, bytes) for key in itertools.islice(vocab, 8)):
        return None
    table = [b""] * (max(vocab.values()) + 1)
    for piece, token_id in vocab.items():
        table[token_id] = piece
    decoded = tokenizer.decode([[i] for i in range(len(table))], skip_special_tokens=True)
    for token_id, text in enumerate(decoded):
        if not text and table[token_id] and _is_utf8(table[token_id]):
            table[token_id] = b""  # a special token: whole characters, yet skipped when decoding
    sample = "Héllo wörld! 日本語 😀 1234 \n\tcode()"
    sample_ids = [int(i) for i in tokenizer.encode(sample, add_special_tokens=False).input_ids.data[0]]
    if b"".join(table[i] for i in sample_ids).decode("utf-8", "replace") != tokenizer.decode(sample_ids):
        return None
    return table


class OpenVINOEngine(Engine):
    """Continuous batching on CPU (or an Intel GPU) with OpenVINO GenAI."""

    def __init__(self, config: ServerConfig) -> None:
        assert config.model is not None
        self.config = config
        self._model_path: str = config.model
        self.model_name = config.served_model_name
        self.max_model_len = config.max_model_len
        self._tokenizer: Any = None
        self._token_bytes: list[bytes] | None = None
        self._eos: frozenset[int] = frozenset()
        self._process: subprocess.Popen[bytes] | None = None
        self._commands: Connection | None = None
        self._outputs: Connection | None = None
        self._outbox: queue.SimpleQueue[tuple[Any, ...] | None] = queue.SimpleQueue()
        self._streams: dict[int, asyncio.Queue[EngineOutput | Exception]] = {}
        self._ids = itertools.count(1)
        self._stats = EngineStats(block_size=config.block_size, num_gpu_blocks=config.num_blocks or 0)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._dead: str | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        command_read, command_write = os.pipe()
        output_read, output_write = os.pipe()
        worker_config = {
            "model": self.config.model,
            "device": self.config.device,
            "max_num_seqs": self.config.max_num_seqs,
            "max_num_batched_tokens": self.config.max_num_batched_tokens,
            "enable_prefix_caching": self.config.enable_prefix_caching,
            "num_blocks": self.config.num_blocks,
            "kv_cache_size_gb": self.config.kv_cache_size_gb,
            "block_size": self.config.block_size,
            "num_threads": self.config.num_threads,
            "warmup": self.config.warmup,
        }
        self._process = await asyncio.to_thread(
            subprocess.Popen,
            [sys.executable, "-m", _WORKER_MODULE, str(command_read), str(output_write), json.dumps(worker_config)],
            pass_fds=(command_read, output_write),
        )
        os.close(command_read)
        os.close(output_write)
        self._commands = Connection(command_write, readable=False)
        self._outputs = Connection(output_read, writable=False)
        tokenizer_task = asyncio.create_task(asyncio.to_thread(_load_tokenizer, self._model_path))
        ready = await asyncio.to_thread(self._receive_first)
        self._tokenizer = await tokenizer_task
        if ready[0] != "ready":
            await self.stop()
            raise EngineError(f"the OpenVINO engine failed to start: {ready[1]}", status=500)
        self._eos = frozenset({int(ready[1]["eos_token_id"])})
        self._token_bytes = await asyncio.to_thread(_token_bytes_table, self._tokenizer)
        threading.Thread(target=self._read_outputs, name="openvino-engine-reader", daemon=True).start()
        threading.Thread(target=self._write_commands, name="openvino-engine-writer", daemon=True).start()

    def _receive_first(self) -> tuple[Any, ...]:
        assert self._outputs is not None
        try:
            return self._outputs.recv()
        except EOFError:
            return ("error", "the engine process exited while loading")

    async def stop(self) -> None:
        self._outbox.put(("stop",))
        self._outbox.put(None)
        process = self._process
        if process is not None and process.poll() is None:
            try:
                await asyncio.to_thread(process.wait, 10)
            except subprocess.TimeoutExpired:
                process.kill()
                await asyncio.to_thread(process.wait)
        if self._commands is not None:
            self._commands.close()
        self._fail_all("the engine stopped")

    # ------------------------------------------------------------ threads

    def _write_commands(self) -> None:
        assert self._commands is not None
        while (message := self._outbox.get()) is not None:
            try:
                self._commands.send(message)
            except (BrokenPipeError, OSError):
                return

    def _read_outputs(self) -> None:
        assert self._outputs is not None and self._loop is not None
        while True:
            try:
                message = self._outputs.recv()
            except (EOFError, OSError):
                break
            try:
                self._loop.call_soon_threadsafe(self._on_message, message)
            except RuntimeError:
                return  # the loop is closed
        try:
            self._loop.call_soon_threadsafe(self._fail_all, "the engine process exited")
        except RuntimeError:
            pass

    # ------------------------------------------------------------ event-loop side

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "step":
            _, results, stats = message
            self._stats = stats
            for rid, new_ids, finished, reason, cached in results:
                stream = self._streams.get(rid)
                if stream is not None:
                    stream.put_nowait(EngineOutput(new_ids, finished, reason, cached))
        elif kind == "failed":
            stream = self._streams.get(message[1])
            if stream is not None:
                stream.put_nowait(EngineError(f"the engine rejected the request: {message[2]}", status=400))

    def _fail_all(self, reason: str) -> None:
        self._dead = reason
        for stream in self._streams.values():
            stream.put_nowait(EngineError(reason, status=503))

    async def generate(self, request: EngineRequest) -> AsyncIterator[EngineOutput]:
        if self._dead is not None:
            raise EngineError(self._dead, status=503)
        rid = next(self._ids)
        stream: asyncio.Queue[EngineOutput | Exception] = asyncio.Queue()
        self._streams[rid] = stream
        self._outbox.put(("add", rid, list(request.prompt_token_ids), request.params))
        finished = False
        try:
            while True:
                item = await stream.get()
                if isinstance(item, Exception):
                    finished = True
                    raise item
                if item.finished:
                    finished = True
                yield item
                if finished:
                    return
        finally:
            del self._streams[rid]
            if not finished:
                self._outbox.put(("abort", rid))

    # ------------------------------------------------------------ tokenizer and stats

    def tokenize(self, text: str, add_special_tokens: bool = True) -> list[int]:
        encoded = self._tokenizer.encode(text, add_special_tokens=add_special_tokens)
        return [int(i) for i in encoded.input_ids.data[0]]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        return str(self._tokenizer.decode(list(token_ids), skip_special_tokens=True))

    def apply_chat_template(self, messages: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        return str(self._tokenizer.apply_chat_template(messages, add_generation_prompt=add_generation_prompt))

    @property
    def eos_token_ids(self) -> frozenset[int]:
        return self._eos

    def token_bytes(self) -> Sequence[bytes] | None:
        return self._token_bytes

    def is_healthy(self) -> bool:
        return self._dead is None and self._process is not None and self._process.poll() is None

    def stats(self) -> EngineStats:
        stats = self._stats
        # Requests still on their way to the engine count as waiting.
        in_flight = len(self._streams) - stats.num_requests_running - stats.num_requests_waiting
        if in_flight > 0:
            stats = EngineStats(
                num_requests_running=stats.num_requests_running,
                num_requests_waiting=stats.num_requests_waiting + in_flight,
                kv_cache_usage=stats.kv_cache_usage,
                block_size=stats.block_size,
                num_gpu_blocks=stats.num_gpu_blocks,
                prefix_cache_queries=stats.prefix_cache_queries,
                prefix_cache_hits=stats.prefix_cache_hits,
                num_preemptions=stats.num_preemptions,
                extra=stats.extra,
            )
        return stats
