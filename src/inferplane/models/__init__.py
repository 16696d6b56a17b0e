"""The model store: pull models from the hub into immutable versions, load them on servers.

Servers use ``load_model("store://STORE_URL#NAME[@VERSION]")`` (lease + node cache) or
``materialize(store_url, name, version, cache_dir)``; see docs/models.md. Names are imported on
first use, so importing the CLI module stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "inferplane.models.cache": ("CacheResult", "ensure_cached", "materialize"),
    "inferplane.models.errors": ("BadReferenceError", "ChecksumError", "HubError", "ModelsError",
                                 "NotFoundError", "VersionInUseError"),
    "inferplane.models.leases": ("Lease", "acquire_lease", "live_leases"),
    "inferplane.models.loader": ("LoadedModel", "load_model"),
    "inferplane.models.manifest": ("FileEntry", "Manifest"),
    "inferplane.models.store": ("Store",),
    "inferplane.models.urls": ("StoreRef", "parse_store_ref"),
}
_MODULE_OF = {name: module for module, names in _EXPORTS.items() for name in names}
__all__ = sorted(_MODULE_OF)


def __getattr__(name: str) -> Any:
    if name not in _MODULE_OF:
        raise AttributeError(f"module 'inferplane.models' has no attribute {name!r}")
    return getattr(importlib.import_module(_MODULE_OF[name]), name)
