"""A model store: immutable version directories and a ``latest`` pointer, on any fsspec filesystem.

Layout under the store URL::

    ORG/NAME/latest                              text file: the current version id
    ORG/NAME/versions/VERSION/manifest.json      written last: a version without it is incomplete
    ORG/NAME/versions/VERSION/files/...          the model files
    ORG/NAME/leases/VERSION/HOLDER.json          "in use" markers written by servers
    .staging/                                    local stores only: pulls in progress
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem
from pydantic import ValidationError

from inferplane.models.errors import BadReferenceError, ModelsError, NotFoundError
from inferplane.models.manifest import Manifest
from inferplane.models.urls import LATEST, parse_store_url, validate_name, validate_version

MANIFEST = "manifest.json"
# Called with the number of bytes just transferred.
Progress = Callable[[int], None]


class Store:
    """One model store, addressed by URL (local path, file://, s3://, gs://)."""

    def __init__(self, url: str, storage_options: dict[str, Any] | None = None):
        self.url = parse_store_url(url)
        if "://" not in self.url:
            self.url = os.path.abspath(os.path.expanduser(self.url))
        try:
            self.fs, self.root = fsspec.core.url_to_fs(self.url, **(storage_options or {}))
        except ImportError as exc:
            raise ModelsError(f"store {self.url}: missing filesystem support ({exc})") from None
        except ValueError as exc:
            raise BadReferenceError(f"invalid store {self.url!r}: {exc}") from None
        self.root = self.root.rstrip("/") or "/"
        self.is_local = isinstance(self.fs, LocalFileSystem)

    def __repr__(self) -> str:
        return f"Store({self.url!r})"

    # -- paths ---------------------------------------------------------------------------------
    def path(self, *parts: str) -> str:
        return "/".join([self.root.rstrip("/"), *parts]) if self.root != "/" else "/" + "/".join(parts)

    def version_path(self, name: str, version: str, *parts: str) -> str:
        return self.path(name, "versions", version, *parts)

    def local_path(self, *parts: str) -> Path:
        """The local filesystem path of a store path (local stores only)."""
        assert self.is_local
        return Path(self.path(*parts))

    # -- reading -------------------------------------------------------------------------------
    def check_exists(self) -> None:
        """NotFoundError unless the store's root exists (buckets count as existing)."""
        if self.is_local and not self.fs.isdir(self.root):
            raise NotFoundError(f"store {self.url} does not exist")

    def models(self) -> dict[str, list[str]]:
        """Every model name with its complete versions, sorted."""
        self.fs.invalidate_cache()
        found: dict[str, list[str]] = {}
        for pattern in (f"*/versions/*/{MANIFEST}", f"*/*/versions/*/{MANIFEST}"):
            for hit in self.fs.glob(self.path(pattern)):
                rel = hit.rstrip("/")[len(self.root.rstrip("/")) + 1 :].split("/")
                name, version = "/".join(rel[:-3]), rel[-2]
                if not name.startswith("."):
                    found.setdefault(name, []).append(version)
        return {name: sorted(found[name]) for name in sorted(found)}

    def versions(self, name: str) -> list[str]:
        """Complete versions of one model (those with a manifest), sorted."""
        validate_name(name)
        self.fs.invalidate_cache()
        hits = self.fs.glob(self.path(name, "versions", "*", MANIFEST))
        return sorted(h.rstrip("/").split("/")[-2] for h in hits)

    def has_version(self, name: str, version: str) -> bool:
        self.fs.invalidate_cache()
        return self.fs.exists(self.version_path(name, version, MANIFEST))

    def read_manifest(self, name: str, version: str) -> Manifest:
        validate_name(name)
        validate_version(version)
        try:
            raw = self.fs.cat_file(self.version_path(name, version, MANIFEST))
        except FileNotFoundError:
            raise NotFoundError(f"{name}@{version} is not in store {self.url}") from None
        try:
            return Manifest.model_validate_json(raw)
        except ValidationError as exc:
            raise ModelsError(f"{name}@{version} in {self.url} has an invalid manifest: {exc}") from None

    def latest(self, name: str) -> str | None:
        """The version ``latest`` points to, or None when there is no pointer."""
        validate_name(name)
        try:
            text = self.fs.cat_file(self.path(name, LATEST)).decode().strip()
        except FileNotFoundError:
            return None
        return validate_version(text) if text else None

    def resolve(self, name: str, version: str = LATEST) -> str:
        """Turn ``latest`` into a concrete version id, checking that the version exists."""
        validate_name(name)
        if version == LATEST:
            pointed = self.latest(name)
            if pointed is None:
                raise NotFoundError(f"{name} has no 'latest' version in store {self.url}")
            version = pointed
        if not self.has_version(name, validate_version(version)):
            raise NotFoundError(f"{name}@{version} is not in store {self.url}")
        return version

    def open_file(self, name: str, version: str, path: str, offset: int = 0):
        """A binary reader of one file of a version, positioned at ``offset``."""
        handle = self.fs.open(self.version_path(name, version, "files", path), "rb")
        if offset:
            handle.seek(offset)
        return handle

    # -- writing -------------------------------------------------------------------------------
    def write_atomic(self, target: str, data: bytes) -> None:
        """Write ``data`` to ``target`` (a store path) so that readers see the old or the new content, never a mix.

        Local stores write a temporary file beside it (``<target>.tmp-<id>``) and rename it over the
        target; object stores replace the object with a single PUT, which S3 and GCS apply atomically.
        """
        if self.is_local:
            tmp = f"{target}.tmp-{uuid.uuid4().hex}"
            Path(tmp).parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        else:
            self.fs.pipe_file(target, data)

    def set_latest(self, name: str, version: str) -> None:
        """Point ``latest`` at ``version`` atomically (:meth:`write_atomic`)."""
        validate_name(name)
        self.write_atomic(self.path(name, LATEST), f"{validate_version(version)}\n".encode())

    def put_version(self, staged: Path, manifest: Manifest, progress: Progress | None = None) -> bool:
        """Publish a staged version (``staged/files/...``); False if that version already existed.

        Local stores move the whole directory in with one rename (staging lives inside the store).
        Object stores upload the files, skipping those already uploaded with the right size, and
        write the manifest last, so the version appears complete or not at all.
        """
        name, version = manifest.name, manifest.version
        if self.has_version(name, version):
            return False
        (staged / MANIFEST).write_bytes(manifest.to_json())
        if self.is_local:
            target = self.local_path(name, "versions", version)
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.rename(staged, target)
            except OSError:
                if (target / MANIFEST).exists():  # a concurrent pull of the same version won
                    return False
                raise
            return True
        for entry in manifest.files:
            remote = self.version_path(name, version, "files", entry.path)
            try:
                if self.fs.size(remote) == entry.size:
                    if progress:
                        progress(entry.size)
                    continue
            except FileNotFoundError:
                pass
            self.fs.put_file(str(staged / "files" / entry.path), remote)
            if progress:
                progress(entry.size)
        self.fs.pipe_file(self.version_path(name, version, MANIFEST), manifest.to_json())
        return True

    def delete_version(self, name: str, version: str) -> None:
        """Remove a version: the manifest first (it stops being complete), then its files."""
        validate_name(name)
        validate_version(version)
        try:
            self.fs.rm_file(self.version_path(name, version, MANIFEST))
        except FileNotFoundError:
            raise NotFoundError(f"{name}@{version} is not in store {self.url}") from None
        try:
            self.fs.rm(self.version_path(name, version), recursive=True)
        except FileNotFoundError:
            pass
        self.fs.invalidate_cache()

    def clear_latest(self, name: str) -> None:
        try:
            self.fs.rm_file(self.path(name, LATEST))
        except FileNotFoundError:
            pass
