"""Workloads: timed requests carrying prompt text (for the picker) and token ids (for the replicas).

Prompts are made as inference-perf makes them: random token ids of the simulator's tokenizer,
decoded to text. Equal prompts share one :class:`Prompt` object, so their token ids and KV block
hashes are built once. Arrivals are generated lazily, in time order.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np

from inferplane.sim.cluster.config import (
    Arrivals,
    RandomWorkload,
    SharedPrefixWorkload,
    TraceWorkload,
    Workload,
)
from inferplane.sim.kv_cache import NONE_HASH, hash_prompt_blocks
from inferplane.sim.tokenizer import SPECIAL_TOKENS, Tokenizer

_FIRST_TEXT_ID = 256 + len(SPECIAL_TOKENS)  # below: byte tokens and special tokens
_SPACE_ID = ord(" ")


@dataclass(slots=True, eq=False)
class Prompt:
    """One distinct prompt: an optional ``prefix`` prompt (a group's system prompt, shared with
    other prompts) followed by its own ``tail``. The full text and token ids are built on demand,
    so 24,000 prompts of 7,200 tokens share their system prompts in memory too."""

    tail_text: str
    tail_ids: list[int]
    prefix: Prompt | None = None
    num_tokens: int = 0
    #: KV block hashes for ``kv_block_size`` (filled by :func:`kv_hashes`).
    kv_hashes: list[int] | None = None
    kv_block_size: int = 0
    #: Picker scratch state that is a pure function of the text (the prefix scorer's hashes).
    picker_state: dict[str, object] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.num_tokens = len(self.tail_ids) + (self.prefix.num_tokens if self.prefix is not None else 0)

    @property
    def text(self) -> str:
        return self.tail_text if self.prefix is None else self.prefix.text + self.tail_text

    @property
    def text_length(self) -> int:
        """``len(self.text)``, without building the text."""
        return len(self.tail_text) + (self.prefix.text_length if self.prefix is not None else 0)

    @property
    def token_ids(self) -> list[int]:
        return self.tail_ids if self.prefix is None else self.prefix.token_ids + self.tail_ids


def kv_hashes(prompt: Prompt, block_size: int) -> list[int]:
    """The chain hashes of ``prompt``'s full KV blocks (as the replicas compute them), memoised;
    the full blocks inside ``prompt.prefix`` come from the prefix's own (memoised) hashes."""
    if prompt.kv_hashes is not None and prompt.kv_block_size == block_size:
        return prompt.kv_hashes
    if prompt.prefix is None:
        hashes = hash_prompt_blocks(prompt.tail_ids, block_size)
    else:
        shared = kv_hashes(prompt.prefix, block_size)
        rest = prompt.token_ids[len(shared) * block_size :]
        hashes = shared + hash_prompt_blocks(rest, block_size, parent_hash=shared[-1] if shared else NONE_HASH)
    prompt.kv_hashes, prompt.kv_block_size = hashes, block_size
    return hashes


def decode(tokenizer: Tokenizer, token_ids: list[int]) -> str:
    """Text of ids drawn by :func:`random_tokens` (no special tokens), faster than ``Tokenizer.decode``."""
    table = tokenizer.byte_table
    return b"".join(map(table.__getitem__, token_ids)).decode("utf-8", errors="replace")


@dataclass(slots=True)
class Arrival:
    time: float
    prompt: Prompt
    max_tokens: int
    stage: int = 0


class TraceError(ValueError):
    """A trace line that cannot be replayed; the message names the line and the field."""


_INTS = list(range(1 << 17))  # one int object per token id, shared by every prompt


def random_tokens(rng: np.random.Generator, tokenizer: Tokenizer, length: int) -> list[int]:
    """``length`` token ids drawn uniformly from the text vocabulary (no byte or special tokens)."""
    return list(map(_INTS.__getitem__, rng.integers(_FIRST_TEXT_ID, tokenizer.vocab_size, size=length).tolist()))


def arrival_times(arrivals: Arrivals, rng: random.Random) -> Iterator[tuple[float, int]]:
    """(time, stage index) of each request: Poisson per stage, stages back to back."""
    count = 0
    limit = arrivals.num_requests
    start = 0.0
    for index, stage in enumerate(arrivals.stage_list()):
        end = start + stage.duration
        now = start
        while True:
            now += rng.expovariate(stage.rate)
            if now >= end or (limit is not None and count >= limit):
                break
            count += 1
            yield now, index
        if limit is not None and count >= limit:
            return
        start = end


def shared_prefix(workload: SharedPrefixWorkload, tokenizer: Tokenizer) -> Iterator[Arrival]:
    """Prompts are made on first use (a group's system prompt with its first question), each
    group from its own seeded generator, so a short run of a huge workload stays cheap."""
    per_group = workload.prompts_per_group
    groups: dict[int, list[Prompt]] = {}

    def prompt(slot: int) -> Prompt:
        group_index, question_index = divmod(slot, per_group)
        made = groups.get(group_index)
        if made is None:
            rng = np.random.default_rng((workload.seed, group_index))
            system = random_tokens(rng, tokenizer, workload.system_prompt_len)
            system_prompt = Prompt(decode(tokenizer, system), system) if system else None
            made = groups[group_index] = []
            for _ in range(per_group):
                question = random_tokens(rng, tokenizer, workload.question_len)
                if system_prompt is None:
                    made.append(Prompt(decode(tokenizer, question), question))
                else:
                    made.append(Prompt(" " + decode(tokenizer, question), [_SPACE_ID, *question], system_prompt))
        return made[question_index]

    # Shuffled once, then cycled; every stage starts again from the first prompt, as inference-perf's
    # shared-prefix generator does (a new data generator per stage over the same shuffled prompts), so a
    # stage repeats prompts, questions included, that the previous stage sent.
    order = list(range(workload.num_groups * per_group))
    random.Random(workload.seed).shuffle(order)
    sent_in_stage: dict[int, int] = {}
    for time, stage in arrival_times(workload.arrivals, random.Random(workload.seed + 1)):
        index = sent_in_stage.get(stage, 0)
        sent_in_stage[stage] = index + 1
        yield Arrival(time, prompt(order[index % len(order)]), workload.output_len, stage)


def random_prompts(workload: RandomWorkload, tokenizer: Tokenizer) -> Iterator[Arrival]:
    rng = np.random.default_rng(workload.seed)
    for time, stage in arrival_times(workload.arrivals, random.Random(workload.seed + 1)):
        ids = random_tokens(rng, tokenizer, workload.input_len)
        yield Arrival(time, Prompt(decode(tokenizer, ids), ids), workload.output_len, stage)


def trace(workload: TraceWorkload, tokenizer: Tokenizer) -> Iterator[Arrival]:
    """Replay ``workload.path``; lines must be in timestamp order."""
    rng = np.random.default_rng(workload.seed)
    blocks: dict[object, list[int]] = {}
    prompts: dict[str, Prompt] = {}
    first: float | None = None
    previous = 0.0
    count = 0
    try:
        handle = workload.path.open()
    except OSError as exc:
        raise TraceError(f"trace file {workload.path} cannot be read: {exc}") from None
    with handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            where = f"{workload.path}:{number}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise TraceError(f"{where}: not JSON: {exc}") from None
            if not isinstance(record, dict):
                raise TraceError(f"{where}: a line must be a JSON object")
            stamp = record.get("timestamp")
            if not isinstance(stamp, int | float) or isinstance(stamp, bool):
                raise TraceError(f"{where}: 'timestamp' must be a number of seconds")
            if first is None:
                first = float(stamp)
            time = (float(stamp) - first) / workload.speedup
            if time < previous:
                raise TraceError(f"{where}: 'timestamp' goes backwards")
            previous = time
            max_tokens = record.get("max_tokens", record.get("output_tokens", workload.default_max_tokens))
            if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
                raise TraceError(f"{where}: 'max_tokens' must be a positive integer")
            prompt = _trace_prompt(record, where, tokenizer, rng, prompts, blocks, workload.hash_block_tokens)
            yield Arrival(time, prompt, max_tokens)
            count += 1
            if workload.num_requests is not None and count >= workload.num_requests:
                return


def _trace_prompt(
    record: dict[str, object],
    where: str,
    tokenizer: Tokenizer,
    rng: np.random.Generator,
    prompts: dict[str, Prompt],
    blocks: dict[object, list[int]],
    block_tokens: int,
) -> Prompt:
    text = record.get("prompt")
    if isinstance(text, str):
        prompt = prompts.get(text)
        if prompt is None:
            prompt = prompts[text] = Prompt(text, tokenizer.encode(text))
        return prompt
    tokens = record.get("prompt_tokens", record.get("input_length"))
    if isinstance(tokens, list) and tokens and all(isinstance(t, int) for t in tokens):
        given = [t for t in tokens if isinstance(t, int)]
        return Prompt(" ".join(map(str, given)), given)  # the picker's text form of a token-id prompt
    if isinstance(tokens, int) and not isinstance(tokens, bool) and tokens > 0:
        hash_ids = record.get("hash_ids")
        if isinstance(hash_ids, list):
            ids: list[int] = []
            for hash_id in hash_ids:
                block = blocks.get(hash_id)
                if block is None:
                    block = blocks[hash_id] = random_tokens(rng, tokenizer, block_tokens)
                ids.extend(block)
                if len(ids) >= tokens:
                    break
            ids = ids[:tokens]
            if len(ids) < tokens:
                ids.extend(random_tokens(rng, tokenizer, tokens - len(ids)))
        else:
            ids = random_tokens(rng, tokenizer, tokens)
        return Prompt(decode(tokenizer, ids), ids)
    raise TraceError(f"{where}: needs 'prompt' (text) or 'prompt_tokens' (token ids or a count)")


def generate(workload: Workload, tokenizer: Tokenizer) -> Iterator[Arrival]:
    """The workload's arrivals in time order."""
    if isinstance(workload, SharedPrefixWorkload):
        return shared_prefix(workload, tokenizer)
    if isinstance(workload, RandomWorkload):
        return random_prompts(workload, tokenizer)
    return trace(workload, tokenizer)
