"""The node-local model cache: ``materialize`` copies a stored version to local disk once per node.

Cache layout: ``CACHE/STOREKEY/NAME/VERSION/{manifest.json,files/...}`` where STOREKEY is a hash
of the store URL. A version is filled in ``VERSION.partial`` under a file lock and renamed into
place after every file matched its manifest sha256, so replicas on one node download it once and
never see a half-filled directory. A fill interrupted by a crash resumes where it stopped.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock, Timeout

from inferplane.models.errors import ChecksumError, ModelsError
from inferplane.models.manifest import HASH_CHUNK, FileEntry, Manifest
from inferplane.models.store import MANIFEST, Store
from inferplane.models.urls import LATEST, validate_name


@dataclass(frozen=True)
class CacheResult:
    """A materialized version: ``path`` holds the model files; ``filled`` if this call downloaded it."""

    path: Path
    manifest: Manifest
    filled: bool


def default_cache_dir() -> Path:
    """``INFERPLANE_MODEL_CACHE`` or ~/.cache/inferplane/models."""
    configured = os.environ.get("INFERPLANE_MODEL_CACHE")
    return Path(configured) if configured else Path.home() / ".cache" / "inferplane" / "models"


def cache_path(store: Store, name: str, version: str, cache_dir: Path) -> Path:
    """Where a version lives in the cache (the directory holding ``manifest.json`` and ``files/``)."""
    store_key = hashlib.sha256(store.url.encode()).hexdigest()[:16]
    return Path(cache_dir) / store_key / validate_name(name) / version


def _fill_file(store: Store, name: str, version: str, entry: FileEntry, dest: Path) -> None:
    """Copy one file (resuming a partial copy) and check its size and sha256."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    have = dest.stat().st_size if dest.exists() else 0
    if have > entry.size:
        dest.unlink()
        have = 0
    digest = hashlib.sha256()
    if have:
        with open(dest, "rb") as f:
            while chunk := f.read(HASH_CHUNK):
                digest.update(chunk)
    if have < entry.size:
        with store.open_file(name, version, entry.path, offset=have) as src, open(dest, "ab") as out:
            while chunk := src.read(HASH_CHUNK):
                digest.update(chunk)
                out.write(chunk)
    size = dest.stat().st_size
    if size != entry.size or digest.hexdigest() != entry.sha256:
        dest.unlink(missing_ok=True)
        raise ChecksumError(
            f"{name}@{version}: {entry.path} in {store.url} does not match its manifest "
            f"(expected {entry.size} bytes, sha256 {entry.sha256}; got {size} bytes, sha256 {digest.hexdigest()})"
        )


def ensure_cached(
    store: Store,
    name: str,
    version: str = LATEST,
    cache_dir: str | Path | None = None,
    *,
    lock_timeout_s: float = -1,
) -> CacheResult:
    """Make ``name@version`` available on local disk and say whether this call filled it."""
    version = store.resolve(name, version)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    final = cache_path(store, name, version, root)
    if (final / MANIFEST).is_file():
        return CacheResult(final / "files", Manifest.model_validate_json((final / MANIFEST).read_bytes()), False)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(final) + ".lock", timeout=lock_timeout_s)
    try:
        with lock:
            if (final / MANIFEST).is_file():  # another process filled it while we waited
                return CacheResult(
                    final / "files", Manifest.model_validate_json((final / MANIFEST).read_bytes()), False
                )
            manifest = store.read_manifest(name, version)
            partial = final.with_name(final.name + ".partial")
            for entry in manifest.files:
                _fill_file(store, name, version, entry, partial / "files" / entry.path)
            (partial / MANIFEST).write_bytes(manifest.to_json())
            os.rename(partial, final)
            return CacheResult(final / "files", manifest, True)
    except Timeout:
        raise ModelsError(f"timed out waiting for another process to fill {final}") from None


def materialize(
    store_url: str,
    name: str,
    version: str = LATEST,
    cache_dir: str | Path | None = None,
    storage_options: dict[str, Any] | None = None,
) -> Path:
    """The local directory holding the files of ``name@version`` from the store at ``store_url``.

    Downloads at most once per node and cache directory, verifying every sha256.
    """
    return ensure_cached(Store(store_url, storage_options), name, version, cache_dir).path

