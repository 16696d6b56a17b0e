"""Approximate prefix-cache affinity (design.md §4): remember which prompt blocks went where.

The prompt is cut into blocks of ``block_size_tokens × chars_per_token`` bytes (~4 characters a
token when there is no tokenizer), chain-hashed with xxhash64 starting from a hash of the model
name, so a block's hash stands for the whole prefix up to it. Each endpoint keeps an LRU of the
block hashes routed to it; an endpoint scores ``matched leading blocks / total blocks`` (or over
``full_score_blocks`` for shorter prompts, so that a short prompt is routed by load).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import xxhash
from pydantic import BaseModel, ConfigDict, Field

from inferplane.picker.endpoints import Endpoint
from inferplane.picker.scheduling.plugin import CycleContext, Scorer
from inferplane.picker.scheduling.registry import register

_STATE_KEY = "prefix-cache-scorer.hashes"
#: ``InferenceRequest.state`` key where the scorer leaves, per endpoint address, how many leading
#: prompt tokens it believes that endpoint has cached (absent: none); later scorers may read it.
MATCHED_TOKENS_KEY = "prefix-cache-scorer.matched-tokens"
#: ``InferenceRequest.state`` key where a scorer that tokenized the prompt (the precise prefix-cache
#: scorer) leaves its exact token count, so that readers of ``MATCHED_TOKENS_KEY`` compare like with like.
PROMPT_TOKENS_KEY = "prefix-cache-scorer.prompt-tokens"


def block_hashes(model: str, prompt: str, block_bytes: int, max_blocks: int) -> list[int]:
    """Chained hashes of the prompt's full blocks: ``h[i] = xxh64(block[i] ‖ h[i-1])``, ``h[-1] = xxh64(model)``.

    A trailing partial block is left out (it cannot be a cached block yet).
    """
    data = prompt.encode()
    count = min(len(data) // block_bytes, max_blocks)
    previous = xxhash.xxh64_intdigest(model.encode())
    hashes: list[int] = []
    digest = xxhash.xxh64_intdigest
    for start in range(0, count * block_bytes, block_bytes):
        previous = digest(data[start : start + block_bytes] + previous.to_bytes(8, "little"))
        hashes.append(previous)
    return hashes


class PrefixCacheParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Tokens per block (vLLM's default KV block is 16 tokens).
    block_size_tokens: int = Field(16, ge=1)
    chars_per_token: int = Field(4, ge=1)
    #: Longest prefix considered, in blocks (bounds per-request hashing cost).
    max_prefix_blocks: int = Field(256, ge=1)
    #: Block hashes remembered per endpoint before the least recently used are forgotten.
    lru_capacity_per_endpoint: int = Field(31250, ge=1)
    #: Size each endpoint's LRU from its scraped cache geometry instead (``vllm:cache_config_info``:
    #: num_gpu_blocks × block_size tokens), so the index forgets about as fast as the server evicts;
    #: endpoints that do not export it keep ``lru_capacity_per_endpoint``.
    lru_capacity_from_server: bool = False
    #: Prompts shorter than this many blocks earn a proportionally smaller score: the score is
    #: ``matched / max(total, full_score_blocks)``. A short prompt costs little to prefill again, so
    #: load, not a cached system-prompt fragment, should decide where it goes. 1 = the GIE reference.
    full_score_blocks: int = Field(16, ge=1)


class PrefixIndex:
    """Which endpoints were sent which block hashes, with a per-endpoint LRU bound."""

    def __init__(self, capacity_per_endpoint: int) -> None:
        self.capacity = capacity_per_endpoint
        self._holders: dict[int, set[str]] = {}
        self._lru: dict[str, OrderedDict[int, None]] = {}

    def add(self, address: str, hashes: Sequence[int], capacity: int | None = None) -> None:
        """Remember ``hashes`` as routed to ``address``, keeping at most ``capacity`` (default: the index's)."""
        lru = self._lru.get(address)
        if lru is None:
            lru = self._lru[address] = OrderedDict()
        holders = self._holders
        touch = lru.move_to_end
        # last block first: a prompt's leading blocks end up the most recently used and are evicted
        # last, as vLLM frees a request's blocks tail first (a prefix is useless without its head)
        for h in reversed(hashes):
            if h in lru:
                touch(h)
            else:
                lru[h] = None
                owners = holders.get(h)
                if owners is None:
                    holders[h] = {address}
                else:
                    owners.add(address)
        limit = self.capacity if capacity is None else capacity
        while len(lru) > limit:
            old, _ = lru.popitem(last=False)
            owners = holders.get(old)
            if owners is not None:
                owners.discard(address)
                if not owners:
                    del holders[old]

    def matched_blocks(self, hashes: Sequence[int]) -> dict[str, int]:
        """For each endpoint holding the first block: how many leading blocks it holds."""
        matched: dict[str, int] = {}
        if not hashes:
            return matched
        alive = self._holders.get(hashes[0])
        if not alive:
            return matched
        alive = set(alive)
        depth = 1  # leading blocks every endpoint in ``alive`` holds
        holders_of = self._holders.get
        for i in range(1, len(hashes)):
            holders = holders_of(hashes[i])
            if not holders:
                break
            if not alive <= holders:  # someone's match ends here (the common case allocates nothing)
                for address in alive - holders:
                    matched[address] = depth
                alive &= holders
                if not alive:
                    break
            depth += 1
        for address in alive:
            matched[address] = depth
        return matched

    def forget(self, address: str) -> None:
        """Drop everything remembered for an endpoint that left the pool."""
        for h in self._lru.pop(address, ()):
            owners = self._holders.get(h)
            if owners is not None:
                owners.discard(address)
                if not owners:
                    del self._holders[h]

    def size(self) -> int:
        return sum(len(lru) for lru in self._lru.values())


@register()
class PrefixCacheScorer(Scorer):
    """Score = share of the prompt's leading blocks already routed to the endpoint."""

    type_name = "prefix-cache-scorer"
    Parameters = PrefixCacheParameters

    def __init__(self, name: str = "", parameters: BaseModel | None = None) -> None:
        super().__init__(name, parameters)
        p: PrefixCacheParameters = self.parameters  # type: ignore[assignment]
        self.block_bytes = p.block_size_tokens * p.chars_per_token
        self.block_tokens = p.block_size_tokens
        self.capacity_from_server = p.lru_capacity_from_server
        self.max_blocks = p.max_prefix_blocks
        self.full_score_blocks = p.full_score_blocks
        self.index = PrefixIndex(p.lru_capacity_per_endpoint)

    def hashes(self, ctx: CycleContext) -> list[int]:
        state = ctx.request.state
        hashes = state.get(_STATE_KEY)
        if hashes is None:
            request = ctx.request
            hashes = block_hashes(request.model, request.prompt, self.block_bytes, self.max_blocks)
            state[_STATE_KEY] = hashes
        return hashes

    def score(self, ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[float]:
        hashes = self.hashes(ctx)
        if not hashes:
            ctx.request.state[MATCHED_TOKENS_KEY] = {}
            return [0.0] * len(endpoints)
        matched = self.index.matched_blocks(hashes)
        block_tokens = self.block_tokens
        ctx.request.state[MATCHED_TOKENS_KEY] = {address: n * block_tokens for address, n in matched.items()}
        if not matched:
            return [0.0] * len(endpoints)
        total = max(len(hashes), self.full_score_blocks)
        scores = [0.0] * len(endpoints)
        where = ctx.positions(endpoints).get
        for address, blocks in matched.items():
            i = where(address)
            if i is not None:
                scores[i] = blocks / total
        return scores

    def forget_endpoint(self, address: str) -> None:
        self.index.forget(address)

    def on_picked(self, ctx: CycleContext, endpoint: Endpoint) -> None:
        hashes = self.hashes(ctx)
        if hashes:
            self.index.add(endpoint.address, hashes, self.server_capacity(endpoint))

    def server_capacity(self, endpoint: Endpoint) -> int | None:
        """The endpoint's KV cache in this scorer's blocks, when configured to follow it and it is known."""
        m = endpoint.metrics
        if not self.capacity_from_server or m is None or not m.num_gpu_blocks or not m.block_size:
            return None
        return max(1, m.num_gpu_blocks * m.block_size // self.block_tokens)
