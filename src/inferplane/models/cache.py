"""The node-local model cache: ``materialize`` copies a stored version to local disk once per node.

Cache layout: ``CACHE/STOREKEY/NAME/VERSION/{manifest.json,files/...}`` where STOREKEY is a hash
of the store URL. A version is filled in ``VERSION.partial`` under a file lock and renamed into
place after every file matched its manifest sha256, so replicas on one node download it once and
never see a half-filled directory. A fill interrupted by a crash resumes where it stopped.

Every load checks the cached files against the manifest: sizes always, sha256 of each file whose
size or modification time changed since it was last verified (``verify="changed"``, recorded in
``VERSION/verified.json``) or of every file (``verify="full"``). A damaged file is fetched again,
under the same lock, into a side file renamed over it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from filelock import FileLock, Timeout

from inferplane.models.errors import ChecksumError, ModelsError
from inferplane.models.manifest import HASH_CHUNK, FileEntry, Manifest, sha256_file
from inferplane.models.store import MANIFEST, Store
from inferplane.models.urls import LATEST, validate_name

log = logging.getLogger(__name__)

#: How much of a cached version a load checks: ``changed`` hashes files whose size or mtime moved since
#: they were last verified, ``full`` hashes every file, ``size`` only compares sizes.
Verify = Literal["changed", "full", "size"]
VERIFIED = "verified.json"


@dataclass(frozen=True)
class CacheResult:
    """A materialized version: ``path`` holds the model files; ``filled`` if this call downloaded it."""

    path: Path
    manifest: Manifest
    filled: bool
    #: Cached files that were damaged and fetched again by this call.
    repaired: tuple[str, ...] = ()


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


def _stamp(path: Path) -> list[int]:
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _read_verified(version_dir: Path) -> dict[str, list[int]]:
    try:
        data = json.loads((version_dir / VERIFIED).read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _write_verified(version_dir: Path, manifest: Manifest) -> None:
    """Record the files' stamps as verified (skipped when unchanged, or when the cache is read-only)."""
    files = version_dir / "files"
    stamps = {entry.path: _stamp(files / entry.path) for entry in manifest.files}
    if _read_verified(version_dir) == stamps:
        return
    tmp = version_dir / f".{VERIFIED}.{os.getpid()}"
    try:
        tmp.write_text(json.dumps(stamps))
        os.replace(tmp, version_dir / VERIFIED)
    except OSError as exc:  # e.g. a cache shared read-only: the next load hashes again
        log.debug("cannot record verified files in %s: %s", version_dir, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()


def damaged_files(version_dir: Path, manifest: Manifest, verify: Verify = "changed") -> list[FileEntry]:
    """The manifest's files that are missing from a cached version or do not match it."""
    files = version_dir / "files"
    verified = _read_verified(version_dir) if verify == "changed" else {}
    bad = []
    for entry in manifest.files:
        path = files / entry.path
        try:
            stamp = _stamp(path)
        except OSError:
            bad.append(entry)
            continue
        if stamp[0] != entry.size:
            bad.append(entry)
        elif verify == "full" or (verify == "changed" and verified.get(entry.path) != stamp):
            if sha256_file(path) != entry.sha256:
                bad.append(entry)
    return bad


def _repair(store: Store, name: str, version: str, final: Path, manifest: Manifest, verify: Verify) -> CacheResult:
    """Fetch the damaged files of a cached version again (the caller holds the version's lock)."""
    bad = damaged_files(final, manifest, verify)
    for entry in bad:
        dest = final / "files" / entry.path
        side = dest.with_name(dest.name + ".refill")
        side.unlink(missing_ok=True)
        _fill_file(store, name, version, entry, side)
        os.replace(side, dest)
    _write_verified(final, manifest)
    if bad:
        log.warning("%s@%s: cached files did not match the manifest and were fetched again: %s",
                    name, version, ", ".join(e.path for e in bad))
    return CacheResult(final / "files", manifest, False, tuple(e.path for e in bad))


def ensure_cached(
    store: Store,
    name: str,
    version: str = LATEST,
    cache_dir: str | Path | None = None,
    *,
    lock_timeout_s: float = -1,
    verify: Verify = "changed",
) -> CacheResult:
    """Make ``name@version`` available on local disk, checked against its manifest; say whether this call
    filled it (or repaired damaged files)."""
    version = store.resolve(name, version)
    root = Path(cache_dir) if cache_dir else default_cache_dir()
    final = cache_path(store, name, version, root)

    def cached() -> Manifest | None:
        if not (final / MANIFEST).is_file():
            return None
        return Manifest.model_validate_json((final / MANIFEST).read_bytes())

    manifest = cached()
    if manifest is not None and not damaged_files(final, manifest, verify):
        if verify != "size":
            _write_verified(final, manifest)  # hashed just now: the next load need not hash again
        return CacheResult(final / "files", manifest, False)
    final.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(str(final) + ".lock", timeout=lock_timeout_s)
    try:
        with lock:
            manifest = cached()
            if manifest is not None:  # filled (maybe damaged since, maybe repaired while we waited)
                return _repair(store, name, version, final, manifest, verify)
            manifest = store.read_manifest(name, version)
            partial = final.with_name(final.name + ".partial")
            for entry in manifest.files:
                _fill_file(store, name, version, entry, partial / "files" / entry.path)
            (partial / MANIFEST).write_bytes(manifest.to_json())
            _write_verified(partial, manifest)
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

