"""A paged KV cache with automatic prefix caching, following vLLM v1's ``KVCacheManager``.

- The cache holds ``num_blocks`` blocks of ``block_size`` tokens. A request owns a list of blocks.
- A *full* block is identified by a chain hash: ``hash(parent block hash, block token ids, extra
  keys such as the LoRA name)`` (:func:`hash_block_tokens`), so equal hashes mean equal prefixes.
- Full blocks are registered in a hash → block map and shared by later requests with the same
  prefix (reference counted). A block whose count drops to zero stays cached but becomes
  evictable: it joins the tail of the free queue, and allocation takes the head (LRU). A request
  frees its blocks in reverse order, so the tail of a prefix is evicted before its head.
- ``usage`` is vLLM's ``kv_cache_usage_perc``: blocks in use (count > 0) / all blocks.
- Prefix-cache queries and hits are counted in tokens, as ``vllm:prefix_cache_queries_total``.

No asyncio, no clock: the scheduler and the cluster simulator drive it.
"""

from __future__ import annotations

from array import array
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import xxhash

#: Parent hash of a request's first block (vLLM seeds it per process; ours is fixed so that
#: replicas and routers compute the same hashes).
NONE_HASH: int = xxhash.xxh3_64_intdigest(b"inferplane-kv-root")

_xxh3_64 = xxhash.xxh3_64_intdigest


def hash_block_tokens(parent_hash: int, token_ids: Sequence[int], extra_key: str | None = None) -> int:
    """Chain hash of one full block: xxh3-64 of ``parent (8 bytes LE) ‖ token ids (uint32 LE)
    [‖ 0xFF ‖ extra key UTF-8]``. Deterministic across processes and machines."""
    data = parent_hash.to_bytes(8, "little") + array("I", token_ids).tobytes()
    if extra_key is not None:
        data += b"\xff" + extra_key.encode()
    return _xxh3_64(data)


def hash_prompt_blocks(
    token_ids: Sequence[int], block_size: int, extra_key: str | None = None, parent_hash: int = NONE_HASH
) -> list[int]:
    """Chain hashes of every full block of ``token_ids`` (the trailing partial block has none)."""
    hashes: list[int] = []
    for start in range(0, len(token_ids) - block_size + 1, block_size):
        parent_hash = hash_block_tokens(parent_hash, token_ids[start : start + block_size], extra_key)
        hashes.append(parent_hash)
    return hashes


@dataclass(slots=True)
class CacheEvent:
    """What changed in the cache, in vLLM's KV-event vocabulary.

    ``kind`` is ``"stored"`` (``block_hashes`` and ``token_ids`` of newly cached full blocks, with
    ``parent_block_hash``), ``"removed"`` (evicted block hashes) or ``"cleared"``.
    """

    kind: str
    block_hashes: list[int]
    parent_block_hash: int | None = None
    token_ids: list[int] = field(default_factory=list)
    lora_name: str | None = None


class KVCacheOwner:
    """What the cache keeps per request: its blocks and the hashes of its full blocks.

    The scheduler's request type inherits from it; ``all_token_ids`` must hold the request's
    prompt plus generated tokens.
    """

    __slots__ = ("all_token_ids", "block_hashes", "block_ids", "lora_name", "num_cached_blocks")

    def __init__(self, token_ids: list[int], lora_name: str | None = None) -> None:
        self.all_token_ids = token_ids
        self.block_ids: list[int] = []
        # Chain hashes of the full blocks of all_token_ids, extended lazily.
        self.block_hashes: list[int] = []
        # How many of block_ids are registered in the cache (or were found there).
        self.num_cached_blocks = 0
        self.lora_name = lora_name

    def update_block_hashes(self, block_size: int) -> list[int]:
        """Extend ``block_hashes`` to every full block of ``all_token_ids``; return them."""
        hashes = self.block_hashes
        tokens = self.all_token_ids
        start = len(hashes) * block_size
        if start + block_size <= len(tokens):
            parent = hashes[-1] if hashes else NONE_HASH
            extra = self.lora_name
            while start + block_size <= len(tokens):
                parent = hash_block_tokens(parent, tokens[start : start + block_size], extra)
                hashes.append(parent)
                start += block_size
        return hashes


class KVCache:
    """Paged blocks, reference counts, the prefix-cache map and the LRU free queue."""

    def __init__(
        self,
        num_blocks: int,
        block_size: int = 16,
        enable_prefix_caching: bool = True,
        on_event: Callable[[CacheEvent], None] | None = None,
    ) -> None:
        if num_blocks < 1 or block_size < 1:
            raise ValueError("num_blocks and block_size must be positive")
        self.num_blocks = num_blocks
        self.block_size = block_size
        self.enable_prefix_caching = enable_prefix_caching
        self.on_event = on_event
        self.ref_counts: list[int] = [0] * num_blocks
        # Hash of each block while it is registered in the prefix cache (else None).
        self.block_hash: list[int | None] = [None] * num_blocks
        self.cached: dict[int, int] = {}  # block hash -> block id
        # Blocks with reference count 0, least recently freed first (dict order = LRU order).
        self.free_queue: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_blocks))
        self.prefix_queries = 0  # tokens looked up
        self.prefix_hits = 0  # tokens found

    # -- queries --------------------------------------------------------------------------------

    @property
    def num_free_blocks(self) -> int:
        """Blocks nobody references (empty or cached-and-evictable)."""
        return len(self.free_queue)

    @property
    def usage(self) -> float:
        """Fraction of blocks referenced by requests, like vLLM's ``kv_cache_usage_perc``."""
        return (self.num_blocks - len(self.free_queue)) / self.num_blocks

    def find_cached_prefix(self, owner: KVCacheOwner, num_tokens: int) -> list[int]:
        """Blocks holding the longest cached prefix of ``owner``'s first ``num_tokens - 1``
        tokens (the last prompt token is always recomputed to produce logits, as in vLLM)."""
        if not self.enable_prefix_caching:
            return []
        hashes = owner.update_block_hashes(self.block_size)
        max_blocks = (num_tokens - 1) // self.block_size
        cached = self.cached
        hits: list[int] = []
        for block_hash in hashes[:max_blocks]:
            block = cached.get(block_hash)
            if block is None:
                break
            hits.append(block)
        return hits

    def record_prefix_lookup(self, num_tokens: int, num_hit_tokens: int) -> None:
        self.prefix_queries += num_tokens
        self.prefix_hits += num_hit_tokens

    # -- allocation -----------------------------------------------------------------------------

    def allocate(
        self, owner: KVCacheOwner, num_computed_tokens: int, num_new_tokens: int, cached_blocks: Sequence[int] = ()
    ) -> bool:
        """Give ``owner`` blocks for ``num_new_tokens`` more tokens after ``num_computed_tokens``
        (which include the ``cached_blocks`` prefix hits, adopted now). Returns False, changing
        nothing, when too few blocks are free."""
        block_size = self.block_size
        ref_counts = self.ref_counts
        free_queue = self.free_queue
        total_tokens = num_computed_tokens + num_new_tokens
        num_required = -(-total_tokens // block_size)
        num_new_blocks = num_required - len(owner.block_ids) - len(cached_blocks)
        # Adopting an evictable cached block takes it out of the free queue as well.
        num_evictable_hits = 0
        for block in cached_blocks:
            if ref_counts[block] == 0:
                num_evictable_hits += 1
        if num_new_blocks + num_evictable_hits > len(free_queue):
            return False
        block_ids = owner.block_ids
        if cached_blocks:
            for block in cached_blocks:
                if ref_counts[block] == 0:
                    del free_queue[block]
                ref_counts[block] += 1
            block_ids.extend(cached_blocks)
            owner.num_cached_blocks = len(block_ids)
        for _ in range(num_new_blocks):
            block, _none = free_queue.popitem(last=False)
            if self.block_hash[block] is not None:
                self._evict(block)
            ref_counts[block] = 1
            block_ids.append(block)
        if self.enable_prefix_caching:
            self._cache_full_blocks(owner, total_tokens)
        return True

    def _evict(self, block: int) -> None:
        block_hash = self.block_hash[block]
        assert block_hash is not None
        self.block_hash[block] = None
        if self.cached.get(block_hash) == block:
            del self.cached[block_hash]
        if self.on_event is not None:
            self.on_event(CacheEvent("removed", [block_hash]))

    def _cache_full_blocks(self, owner: KVCacheOwner, num_tokens: int) -> None:
        """Register the blocks of ``owner`` that will be full once ``num_tokens`` are computed."""
        block_size = self.block_size
        num_full = min(num_tokens, len(owner.all_token_ids)) // block_size
        start = owner.num_cached_blocks
        if num_full <= start:
            return
        hashes = owner.update_block_hashes(block_size)
        cached = self.cached
        block_hash_of = self.block_hash
        block_ids = owner.block_ids
        for index in range(start, num_full):
            block_hash = hashes[index]
            if block_hash not in cached:  # a duplicate computed concurrently stays uncached
                block = block_ids[index]
                cached[block_hash] = block
                block_hash_of[block] = block_hash
        owner.num_cached_blocks = num_full
        if self.on_event is not None:
            tokens = owner.all_token_ids[start * block_size : num_full * block_size]
            parent = hashes[start - 1] if start > 0 else None
            self.on_event(CacheEvent("stored", hashes[start:num_full], parent, list(tokens), owner.lora_name))

    def free(self, owner: KVCacheOwner) -> None:
        """Release ``owner``'s blocks, last block first so that it is evicted first."""
        ref_counts = self.ref_counts
        free_queue = self.free_queue
        for block in reversed(owner.block_ids):
            count = ref_counts[block] - 1
            ref_counts[block] = count
            if count == 0:
                free_queue[block] = None
        owner.block_ids = []
        owner.num_cached_blocks = 0

    def reset_prefix_cache(self) -> bool:
        """Forget every cached hash (vLLM's ``/reset_prefix_cache``); only when nothing runs."""
        if len(self.free_queue) != self.num_blocks:
            return False
        self.cached.clear()
        self.block_hash = [None] * self.num_blocks
        if self.on_event is not None:
            self.on_event(CacheEvent("cleared", []))
        return True
