"""What a model server calls: ``load_model("store://STORE#NAME@VERSION")``.

It resolves ``latest`` once, takes a lease on the concrete version (so ``models rm`` refuses to
delete it while the server runs), fills the node cache, and keeps the lease renewed until
``release()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from inferplane.models.cache import Verify, ensure_cached
from inferplane.models.leases import DEFAULT_TTL_S, Lease, acquire_lease
from inferplane.models.manifest import Manifest
from inferplane.models.store import Store
from inferplane.models.urls import parse_store_ref


@dataclass
class LoadedModel:
    """A model version on local disk, held in use through a store lease."""

    path: Path
    manifest: Manifest
    lease: Lease

    def release(self) -> None:
        """Give the lease back (call on server shutdown)."""
        self.lease.release()

    def __enter__(self) -> "LoadedModel":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def load_model(
    ref: str,
    cache_dir: str | Path | None = None,
    *,
    lease_ttl_s: float = DEFAULT_TTL_S,
    storage_options: dict[str, Any] | None = None,
    verify: Verify = "changed",
) -> LoadedModel:
    """Materialize ``store://STORE_URL#NAME[@VERSION]`` locally under a renewed lease."""
    parsed = parse_store_ref(ref)
    store = Store(parsed.store_url, storage_options)
    version = store.resolve(parsed.name, parsed.version)
    lease = acquire_lease(store, parsed.name, version, ttl_s=lease_ttl_s)
    try:
        result = ensure_cached(store, parsed.name, version, cache_dir, verify=verify)
    except BaseException:
        lease.release()
        raise
    return LoadedModel(path=result.path, manifest=result.manifest, lease=lease.start())
