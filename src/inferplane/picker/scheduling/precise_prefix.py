"""Precise prefix-cache affinity: score endpoints by the prompt blocks their KV-cache events say they hold.

The request is tokenized as the server tokenizes it (:mod:`inferplane.picker.prompt_tokens`), cut
into blocks of the endpoint's block size and chain-hashed as :mod:`inferplane.picker.kv_events`
hashes the blocks its events report; an endpoint scores ``matched / max(total, full_score_blocks)``
where ``matched`` is the longest run of leading blocks resident there, in [0, 1].

Events come after the fact: a server reports a prompt's blocks once it has prefilled them, which
under load is seconds after the request was routed. Meanwhile a request sharing that prefix would
find it nowhere and go wherever load sends it, prefilling it twice. So, as llm-d's speculative
indexing does, the picked endpoint is credited at once with the request's blocks as *speculative*
entries; the endpoint's ``BlockStored`` events confirm (replace) them, and unconfirmed ones expire
after ``speculative_ttl_s``.

An endpoint whose index is unknown (no events yet, or dropped after a gap or reconnect) has no
confirmed blocks: it scores by its speculative entries only, which is what the approximate
``prefix-cache-scorer`` would say about the last ``speculative_ttl_s`` seconds of routing, and 0
with speculation off. An index only under-reports, so an unknown one never attracts traffic on
stale claims.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Container, Sequence

from pydantic import BaseModel, ConfigDict, Field

from inferplane.picker.endpoints import Endpoint
from inferplane.picker.kv_events import KVBlockIndex, chain_hashes
from inferplane.picker.prompt_tokens import (
    PromptTokenizer,
    TokenizerSpec,
    build_tokenizer,
    prompt_token_ids,
)
from inferplane.picker.request import InferenceRequest
from inferplane.picker.scheduling.plugin import CycleContext, Scorer
from inferplane.picker.scheduling.prefix import MATCHED_TOKENS_KEY, PROMPT_TOKENS_KEY
from inferplane.picker.scheduling.registry import register

_TOKENS_KEY = "precise-prefix-cache-scorer.tokens"
_HASHES_KEY = "precise-prefix-cache-scorer.hashes"
_LORA_KEY = "precise-prefix-cache-scorer.lora"


class PrecisePrefixParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: The model servers' tokenizer and chat template.
    tokenizer: TokenizerSpec = Field(default_factory=TokenizerSpec)
    #: Tokens per block until an endpoint's events tell its own (vLLM's default is 16).
    block_size: int = Field(16, ge=1)
    #: Longest prefix considered, in blocks (bounds the hashing per request).
    max_prefix_blocks: int = Field(1024, ge=1)
    #: Prompts shorter than this many blocks earn a proportionally smaller score (as the approximate
    #: scorer: a short prompt is cheap to prefill again, so load should decide). 1 = the plain fraction.
    full_score_blocks: int = Field(16, ge=1)
    #: Seconds a routed request's blocks count at its endpoint before that endpoint's events confirm
    #: them; 0 = only what the events say.
    speculative_ttl_s: float = Field(10.0, ge=0)


class SpeculativeBlocks:
    """Chain hashes credited to endpoints at routing time, until confirmed or ``ttl`` seconds old."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._blocks: dict[str, dict[int, float]] = {}
        # (expiry, address, hashes) in expiry order: every entry lives the same ttl
        self._expiries: deque[tuple[float, str, list[int]]] = deque()

    def add(self, address: str, hashes: Sequence[int], now: float, confirmed: Container[int] = ()) -> None:
        """Credit ``address`` with ``hashes`` (those already ``confirmed`` there need no credit)."""
        fresh = [h for h in hashes if h not in confirmed]
        if not fresh or self.ttl <= 0:
            return
        expiry = now + self.ttl
        blocks = self._blocks.setdefault(address, {})
        for h in fresh:
            blocks[h] = expiry
        self._expiries.append((expiry, address, fresh))

    def expire(self, now: float) -> None:
        expiries = self._expiries
        while expiries and expiries[0][0] <= now:
            expiry, address, hashes = expiries.popleft()
            blocks = self._blocks.get(address)
            if blocks is None:
                continue
            for h in hashes:
                if blocks.get(h) == expiry:  # not credited again since
                    del blocks[h]
            if not blocks:
                del self._blocks[address]

    def confirmed(self, address: str, hashes: Sequence[int]) -> None:
        """The endpoint's events report ``hashes`` resident: the index speaks for them now."""
        blocks = self._blocks.get(address)
        if blocks:
            for h in hashes:
                blocks.pop(h, None)

    def blocks(self, address: str) -> Container[int]:
        return self._blocks.get(address) or ()

    def forget(self, address: str) -> None:
        self._blocks.pop(address, None)

    def size(self) -> int:
        return sum(len(blocks) for blocks in self._blocks.values())


@register()
class PrecisePrefixCacheScorer(Scorer):
    """Score = share of the prompt's leading blocks the endpoint's KV-cache events say it holds."""

    type_name = "precise-prefix-cache-scorer"
    Parameters = PrecisePrefixParameters

    def __init__(self, name: str = "", parameters: BaseModel | None = None) -> None:
        super().__init__(name, parameters)
        p: PrecisePrefixParameters = self.parameters  # type: ignore[assignment]
        self.block_size = p.block_size
        self.max_blocks = p.max_prefix_blocks
        self.full_score_blocks = p.full_score_blocks
        self.speculative = SpeculativeBlocks(p.speculative_ttl_s)
        self._tokenizer: PromptTokenizer | None = None
        self.index = KVBlockIndex()
        self.index.on_stored.append(self.speculative.confirmed)

    def use_index(self, index: KVBlockIndex) -> None:
        """Read ``index`` (the subscriber's) instead of the scorer's own."""
        if self.speculative.confirmed in self.index.on_stored:
            self.index.on_stored.remove(self.speculative.confirmed)
        self.index = index
        index.on_stored.append(self.speculative.confirmed)

    def prepare(self) -> None:
        """Load the tokenizer now rather than on the first request."""
        self.tokenizer()

    def tokenizer(self) -> PromptTokenizer:
        if self._tokenizer is None:
            p: PrecisePrefixParameters = self.parameters  # type: ignore[assignment]
            self._tokenizer = build_tokenizer(p.tokenizer)
        return self._tokenizer

    # -- per request --------------------------------------------------------------------------------

    def token_ids(self, request: InferenceRequest) -> list[int]:
        """The prompt's token ids as the server computes them (memoised in the request's state)."""
        state = request.state
        tokens = state.get(_TOKENS_KEY)
        if tokens is None:
            tokens = prompt_token_ids(self.tokenizer(), request.body) or []
            state[_TOKENS_KEY] = tokens
        return tokens

    def hashes(self, request: InferenceRequest, block_size: int, lora_name: str | None) -> list[int]:
        """The prompt's block chain hashes for one block size and adapter (memoised)."""
        memo: dict[tuple[int, str | None], list[int]] = request.state.setdefault(_HASHES_KEY, {})
        hashes = memo.get((block_size, lora_name))
        if hashes is None:
            hashes = chain_hashes(self.token_ids(request), block_size, lora_name, self.max_blocks)
            memo[block_size, lora_name] = hashes
        return hashes

    @staticmethod
    def lora_name(model: str, endpoints: Sequence[Endpoint]) -> str | None:
        """The adapter a request's model names: None for a base model some endpoint serves (or when
        no endpoint reports its base models), else the model itself."""
        reported = False
        for ep in endpoints:
            m = ep.metrics
            if m is not None and m.models:
                if model in m.models:
                    return None
                reported = True
        return model if reported and model else None

    def score(self, ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[float]:
        request = ctx.request
        scores = [0.0] * len(endpoints)
        matched_tokens: dict[str, int] = {}
        request.state[MATCHED_TOKENS_KEY] = matched_tokens
        if not endpoints or not self.token_ids(request):
            return scores
        request.state[PROMPT_TOKENS_KEY] = len(self.token_ids(request))
        self.speculative.expire(ctx.now)
        lora = self.lora_name(request.model, endpoints)
        request.state[_LORA_KEY] = lora
        index, speculative = self.index, self.speculative
        full = self.full_score_blocks
        for i, ep in enumerate(endpoints):
            address = ep.address
            resident = index.resident(address)
            credited = speculative.blocks(address)
            if not resident and not credited:
                continue
            block_size = index.block_size(address) or self.block_size
            hashes = self.hashes(request, block_size, lora)
            depth = 0
            for h in hashes:
                if h not in resident and h not in credited:
                    break
                depth += 1
            if depth:
                scores[i] = depth / max(len(hashes), full)
                matched_tokens[address] = depth * block_size
        return scores

    def on_picked(self, ctx: CycleContext, endpoint: Endpoint) -> None:
        if self.speculative.ttl <= 0:
            return
        request = ctx.request
        if not self.token_ids(request):
            return
        address = endpoint.address
        block_size = self.index.block_size(address) or self.block_size
        lora = request.state.get(_LORA_KEY)
        hashes = self.hashes(request, block_size, lora)
        self.speculative.add(address, hashes, ctx.now, self.index.resident(address))

    def forget_endpoint(self, address: str) -> None:
        self.speculative.forget(address)
        self.index.forget(address)
