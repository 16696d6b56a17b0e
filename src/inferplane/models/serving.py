"""A model server's ``model`` setting when it names a store version: ``store://STORE_URL#NAME[@VERSION]``.

The version is materialized in the node cache (one download per node, checked against its
manifest) under a lease; the server then loads the local path: the version's only ``.gguf``
file when it has exactly one, else its directory (a Hugging Face / OpenVINO model directory).
"""

from __future__ import annotations

from pathlib import Path

from inferplane.models.cache import Verify
from inferplane.models.loader import LoadedModel, load_model

STORE_PREFIX = "store://"


def store_ref(model: str | None) -> str | None:
    """``model`` as a ``store://`` reference when it names a store version, else ``None``.

    ``s3://BUCKET/PREFIX#NAME@V``, ``gs://…#…`` and ``file:///DIR#…`` are accepted as short forms.
    """
    if not model:
        return None
    if model.startswith(STORE_PREFIX):
        return model
    scheme, sep, rest = model.partition("://")
    if sep and scheme in ("s3", "gs", "gcs", "file") and "#" in rest:
        return STORE_PREFIX + model
    return None


def is_store_ref(model: str | None) -> bool:
    return store_ref(model) is not None


def model_file(files: Path) -> Path:
    """What an engine loads from a cached version's ``files`` directory."""
    ggufs = sorted(files.rglob("*.gguf"))
    return ggufs[0] if len(ggufs) == 1 else files


def load_for_server(ref: str, cache_dir: str | Path | None = None, verify: Verify = "changed") -> tuple[Path, LoadedModel]:
    """The local path to serve and the loaded version (``release()`` it when the server stops)."""
    loaded = load_model(ref, cache_dir, verify=verify)
    return model_file(loaded.path), loaded
