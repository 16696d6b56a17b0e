"""A vLLM-faithful simulator of one model-server replica: no GPU, same scheduling and KV cache.

Modules: :mod:`config` (``SimConfig``), :mod:`tokenizer` (offline deterministic tokenizer),
:mod:`kv_cache` (paged KV cache with prefix caching), :mod:`request`, :mod:`sampler` (what the
"model" generates), :mod:`scheduler` (continuous batching), :mod:`cost_model` (step time, presets),
:mod:`replica` (all of these stepped by a caller that owns time: reused by cluster simulations),
:mod:`engine` (the asyncio :class:`~inferplane.server.engine.Engine`), :mod:`kv_events` (vLLM's
KV-cache events over ZMQ) and :mod:`synthetic` (a virtual-time workload for profiling).
Only :mod:`config` is imported here, so ``ServerConfig`` can embed ``SimConfig`` cheaply.
"""

from inferplane.sim.config import SimConfig

__all__ = ["SimConfig"]
