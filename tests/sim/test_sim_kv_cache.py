from inferplane.sim.kv_cache import (
    NONE_HASH,
    CacheEvent,
    KVCache,
    KVCacheOwner,
    hash_block_tokens,
    hash_prompt_blocks,
)

BLOCK = 4


def owner(tokens: list[int], lora: str | None = None) -> KVCacheOwner:
    return KVCacheOwner(list(tokens), lora)


def admit(cache: KVCache, request: KVCacheOwner) -> int:
    """Look up the prefix, allocate the whole prompt; returns the number of cached tokens."""
    num_tokens = len(request.all_token_ids)
    hits = cache.find_cached_prefix(request, num_tokens)
    computed = len(hits) * cache.block_size
    assert cache.allocate(request, computed, num_tokens - computed, hits)
    cache.record_prefix_lookup(num_tokens, computed)
    return computed


def test_block_hash_chain_is_deterministic_and_keyed() -> None:
    tokens = list(range(12))
    hashes = hash_prompt_blocks(tokens, BLOCK)
    assert len(hashes) == 3
    assert hashes[0] == hash_block_tokens(NONE_HASH, tokens[:4])
    assert hashes[1] == hash_block_tokens(hashes[0], tokens[4:8])
    # Same tokens after a different prefix, or under a LoRA adapter, hash differently.
    assert hash_prompt_blocks([99, 1, 2, 3] + tokens[4:8], BLOCK)[1] != hashes[1]
    assert hash_prompt_blocks(tokens, BLOCK, extra_key="my-lora") != hashes
    # The trailing partial block has no hash.
    assert hash_prompt_blocks(tokens[:11], BLOCK) == hashes[:2]


def test_shared_prefix_is_reused_with_reference_counts() -> None:
    cache = KVCache(num_blocks=16, block_size=BLOCK)
    first = owner(list(range(10)))  # blocks: [0-3] [4-7] [8-9 partial]
    assert admit(cache, first) == 0
    assert len(first.block_ids) == 3
    second = owner(list(range(8)) + [50, 51, 52])
    assert admit(cache, second) == 8
    assert second.block_ids[:2] == first.block_ids[:2]
    assert second.block_ids[2] != first.block_ids[2]
    assert [cache.ref_counts[b] for b in first.block_ids] == [2, 2, 1]
    assert cache.prefix_queries == 21
    assert cache.prefix_hits == 8


def test_last_token_is_never_served_from_cache() -> None:
    cache = KVCache(num_blocks=16, block_size=BLOCK)
    admit(cache, owner(list(range(8))))
    # The same 8-token prompt: the last full block holds the token that must be recomputed.
    assert admit(cache, owner(list(range(8)))) == 4


def test_usage_counts_referenced_blocks_only() -> None:
    cache = KVCache(num_blocks=10, block_size=BLOCK)
    request = owner(list(range(12)))
    admit(cache, request)
    assert cache.usage == 0.3
    cache.free(request)
    assert cache.usage == 0.0
    # Freed full blocks stay cached and are found again.
    assert admit(cache, owner(list(range(12)) + [7])) == 12


def test_lru_eviction_takes_least_recently_freed_and_tail_blocks_first() -> None:
    cache = KVCache(num_blocks=6, block_size=BLOCK)
    old = owner([1] * 8)  # 2 full blocks
    new = owner([2] * 8)
    admit(cache, old)
    admit(cache, new)
    cache.free(old)
    cache.free(new)
    assert cache.num_free_blocks == 6 and len(cache.cached) == 4
    # Two never-used blocks go first, then old's tail block, then old's head block.
    taker = owner(list(range(100, 112)))  # needs 3 blocks
    admit(cache, taker)
    old_hashes = hash_prompt_blocks([1] * 8, BLOCK)
    assert old_hashes[1] not in cache.cached  # old's tail was evicted
    assert old_hashes[0] in cache.cached
    assert all(h in cache.cached for h in hash_prompt_blocks([2] * 8, BLOCK))


def test_reusing_a_cached_block_refreshes_it() -> None:
    cache = KVCache(num_blocks=4, block_size=BLOCK)
    a, b = owner([1] * 4 + [0]), owner([2] * 4 + [0])
    admit(cache, a)
    admit(cache, b)
    cache.free(a)
    cache.free(b)
    again = owner([1] * 4 + [5])
    assert admit(cache, again) == 4  # a's block is in use again, b's becomes the oldest
    cache.free(again)
    admit(cache, owner(list(range(20, 32))))  # 3 blocks: evicts the free ones, b's first
    assert hash_prompt_blocks([2] * 4, BLOCK)[0] not in cache.cached


def test_allocation_fails_without_changing_anything() -> None:
    cache = KVCache(num_blocks=3, block_size=BLOCK)
    request = owner(list(range(20)))
    assert not cache.allocate(request, 0, 20)
    assert request.block_ids == [] and cache.num_free_blocks == 3


def test_decode_grows_blocks_and_caches_full_ones() -> None:
    cache = KVCache(num_blocks=8, block_size=BLOCK)
    request = owner([1, 2, 3])
    admit(cache, request)
    assert len(request.block_ids) == 1 and not cache.cached
    request.all_token_ids.append(4)  # generated token; computing it fills the block
    assert cache.allocate(request, 3, 1)
    assert len(cache.cached) == 1
    request.all_token_ids.append(5)
    assert cache.allocate(request, 4, 1)
    assert len(request.block_ids) == 2


def test_prefix_caching_disabled_never_hits() -> None:
    cache = KVCache(num_blocks=8, block_size=BLOCK, enable_prefix_caching=False)
    admit(cache, owner(list(range(9))))
    assert admit(cache, owner(list(range(9)))) == 0
    assert not cache.cached


def test_events_report_stored_and_removed_blocks() -> None:
    events: list[CacheEvent] = []
    cache = KVCache(num_blocks=2, block_size=BLOCK, on_event=events.append)
    first = owner(list(range(9)), lora="adapter")
    assert not cache.allocate(first, 0, 9)  # needs 3 blocks
    first = owner(list(range(8)), lora="adapter")
    admit(cache, first)
    hashes = hash_prompt_blocks(list(range(8)), BLOCK, extra_key="adapter")
    assert [(e.kind, e.block_hashes, e.parent_block_hash) for e in events] == [("stored", hashes, None)]
    assert events[0].token_ids == list(range(8)) and events[0].lora_name == "adapter"
    cache.free(first)
    admit(cache, owner([9] * 5))
    assert [e.kind for e in events[1:]] == ["removed", "removed", "stored"]
    assert events[1].block_hashes == [hashes[1]]  # tail first
    assert events[3].parent_block_hash is None
    assert cache.reset_prefix_cache() is False  # blocks still in use


def test_reset_prefix_cache_when_idle() -> None:
    events: list[CacheEvent] = []
    cache = KVCache(num_blocks=4, block_size=BLOCK, on_event=events.append)
    request = owner(list(range(8)))
    admit(cache, request)
    cache.free(request)
    assert cache.reset_prefix_cache()
    assert events[-1].kind == "cleared" and not cache.cached
    assert admit(cache, owner(list(range(8)))) == 0
