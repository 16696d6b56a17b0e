"""LoRA adapters in host memory: vLLM's LRU cache of ``max_cpu_loras`` loaded adapters.

vLLM keeps up to ``max_cpu_loras`` adapters loaded in CPU memory (an LRU cache); a batch may
use at most ``max_loras`` of them at once (GPU slots; enforced by the scheduler). An adapter
that a step needs and that is not in the cache is read from disk first, which stalls that step:
the replica adds ``cost.lora_load_s`` per such load. Activating a cached adapter in a GPU slot
(a host-to-device copy of a few tens of MB) is not modelled.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Collection


class AdapterCache:
    """The names of the adapters held in host memory, least recently used first."""

    def __init__(self, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"max_cpu_loras must be at least 1, not {capacity}")
        self.capacity = capacity
        self._names: OrderedDict[str, None] = OrderedDict()
        self.num_loads = 0  # adapters read from disk since start

    def __contains__(self, name: object) -> bool:
        return name in self._names

    def __len__(self) -> int:
        return len(self._names)

    def names(self) -> list[str]:
        """Cached adapters, least recently used first."""
        return list(self._names)

    def add(self, name: str) -> bool:
        """Load ``name`` (an adapter registered at start or at run time); True if it was not cached."""
        return self.use((name,)) == 1

    def use(self, names: Collection[str]) -> int:
        """Make every adapter of one step resident; returns how many had to be loaded.

        Evicts the least recently used adapters that this step does not need; ``names`` must
        not outnumber the capacity (the scheduler's ``max_loras`` ≤ ``max_cpu_loras``)."""
        loads = 0
        cached = self._names
        for name in names:
            if name in cached:
                cached.move_to_end(name)
            else:
                cached[name] = None
                loads += 1
        if len(cached) > self.capacity:
            for old in [name for name in cached if name not in names][: len(cached) - self.capacity]:
                del cached[old]
        self.num_loads += loads
        return loads

    def remove(self, name: str) -> None:
        """Forget ``name`` (unloaded); a later use loads it again."""
        self._names.pop(name, None)
