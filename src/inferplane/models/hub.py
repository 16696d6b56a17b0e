"""Downloading a model repository from the Hugging Face hub into a local staging directory.

Uses ``huggingface_hub`` for the API calls (revision → commit, file tree), the per-file metadata
request, authentication headers and the ranged HTTP transfer. Every file is downloaded to
``.partial/PATH`` and resumed from its current size with an HTTP ``Range`` request after an
interruption; finished files are verified (sha256 of LFS files, git blob id of the others) and
moved to ``files/PATH``. ``HF_ENDPOINT`` selects the hub, ``HF_TOKEN`` authenticates.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote, urlsplit

from huggingface_hub import HfApi, get_hf_file_metadata
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HTTPError,
    RemoteEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.file_download import http_get
from huggingface_hub.hf_api import RepoFile
from huggingface_hub.utils import build_hf_headers, filter_repo_objects

from inferplane.models.errors import ChecksumError, HubError, NotFoundError
from inferplane.models.manifest import FileEntry, git_blob_sha1, sha256_file
from inferplane.models.urls import HubSource

DEFAULT_ENDPOINT = "https://huggingface.co"
# Called with the number of bytes just received.
Progress = Callable[[int], None]


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repository at the resolved commit, with what the hub says about it."""

    path: str
    size: int
    blob_id: str | None
    lfs_sha256: str | None


def hub_endpoint() -> str:
    """The hub to talk to: ``HF_ENDPOINT`` (read at call time) or huggingface.co."""
    return (os.environ.get("HF_ENDPOINT") or DEFAULT_ENDPOINT).rstrip("/")


def hub_token() -> str | None:
    """``HF_TOKEN`` if set; otherwise huggingface_hub falls back to a saved login."""
    return os.environ.get("HF_TOKEN") or None


def resolve_url(endpoint: str, repo_id: str, commit: str, path: str) -> str:
    """The hub's download URL of one file (huggingface_hub's template, on ``endpoint``)."""
    return f"{endpoint}/{repo_id}/resolve/{quote(commit, safe='')}/{quote(path)}"


class HubClient:
    """The hub calls a pull makes, with hub errors turned into user-facing ones."""

    def __init__(self, endpoint: str | None = None, token: str | None = None):
        self.endpoint = endpoint or hub_endpoint()
        self.token = token if token is not None else hub_token()
        self.api = HfApi(endpoint=self.endpoint, token=self.token)

    def _fail(self, source: HubSource, exc: Exception) -> Exception:
        if isinstance(exc, GatedRepoError):
            return HubError(f"{source.repo_id} is gated: accept its terms on the hub and set HF_TOKEN")
        if isinstance(exc, RevisionNotFoundError):
            return NotFoundError(f"revision {source.revision!r} of {source.repo_id} not found on {self.endpoint}")
        if isinstance(exc, RepositoryNotFoundError):
            return NotFoundError(
                f"{source.repo_id} not found on {self.endpoint} (if it is private, set HF_TOKEN)"
            )
        if isinstance(exc, (EntryNotFoundError, RemoteEntryNotFoundError)):
            return NotFoundError(f"{source.repo_id}: {exc}")
        if isinstance(exc, HfHubHTTPError):
            return HubError(f"{source.repo_id}: the hub answered {exc}")
        return HubError(f"cannot reach the hub at {self.endpoint}: {exc}")

    def resolve(self, source: HubSource) -> tuple[str, list[RemoteFile]]:
        """The commit a revision points to, and every file of the repository at that commit."""
        try:
            info = self.api.model_info(source.repo_id, revision=source.revision)
            if not info.sha:
                raise HubError(f"{self.endpoint} gave no commit for {source}")
            tree = self.api.list_repo_tree(source.repo_id, recursive=True, revision=info.sha)
            files = [
                RemoteFile(
                    path=f.path,
                    size=f.size,
                    blob_id=f.blob_id,
                    lfs_sha256=f.lfs.sha256 if f.lfs is not None else None,
                )
                for f in tree
                if isinstance(f, RepoFile)
            ]
        except HTTPError as exc:
            raise self._fail(source, exc) from None
        return info.sha, sorted(files, key=lambda f: f.path)

    def download(self, source: HubSource, commit: str, remote: RemoteFile, partial: Path,
                 progress: Progress | None = None) -> None:
        """Download (or resume) one file into ``partial``; checks its size, not yet its checksum."""
        url = resolve_url(self.endpoint, source.repo_id, commit, remote.path)
        headers = build_hf_headers(token=self.token, library_name="inferplane")
        try:
            meta = get_hf_file_metadata(url, token=self.token, endpoint=self.endpoint, headers=headers)
            if meta.commit_hash is None or meta.etag is None:
                raise HubError(f"{url} answered without X-Repo-Commit / ETag: is {self.endpoint} a hub?")
            if meta.commit_hash != commit:
                raise HubError(f"{remote.path}: the hub served commit {meta.commit_hash}, expected {commit}")
            if meta.size is not None and meta.size != remote.size:
                raise ChecksumError(f"{remote.path}: the hub reports {meta.size} bytes, its tree {remote.size}")
            partial.parent.mkdir(parents=True, exist_ok=True)
            resume = partial.stat().st_size if partial.exists() else 0
            if resume > remote.size:
                partial.unlink()
                resume = 0
            if progress and resume:
                progress(resume)
            if urlsplit(meta.location).netloc != urlsplit(url).netloc:
                # A signed CDN / storage URL: the hub token must not leave the hub.
                headers = {k: v for k, v in headers.items() if k.lower() != "authorization"}
            with open(partial, "ab") as f:
                http_get(
                    meta.location,
                    f,
                    resume_size=resume,
                    headers=headers,
                    expected_size=remote.size,
                    displayed_filename=remote.path,
                    tqdm_class=_forwarding_tqdm(progress),
                )
        except HTTPError as exc:
            raise self._fail(source, exc) from None
        except OSError as exc:
            if "Consistency check failed" in str(exc):
                partial.unlink(missing_ok=True)
                raise ChecksumError(f"{remote.path}: wrong size from the hub ({exc.args[0].splitlines()[0]})") from None
            raise


def _forwarding_tqdm(progress: Progress | None) -> type:
    """A stand-in tqdm class for ``http_get`` that forwards byte counts to ``progress``."""

    class Forward:
        def __init__(self, *args: object, **kwargs: object):
            pass

        def __enter__(self) -> "Forward":
            return self

        def __exit__(self, *exc: object) -> None:
            pass

        def update(self, n: float | None = 1) -> None:
            if progress and n:
                progress(int(n))

        def update_transfer(self, n: float | None = 1) -> None:
            pass

        def set_postfix_str(self, *args: object, **kwargs: object) -> None:
            pass

        def close(self) -> None:
            pass

    return Forward


def verify(remote: RemoteFile, path: Path) -> str:
    """The file's sha256, after checking it against the hub's LFS sha256 or git blob id."""
    size = path.stat().st_size
    if size != remote.size:
        raise ChecksumError(f"{remote.path}: {size} bytes downloaded, the hub lists {remote.size}")
    digest = sha256_file(path)
    if remote.lfs_sha256:
        if digest != remote.lfs_sha256:
            raise ChecksumError(
                f"{remote.path}: sha256 {digest} does not match the hub's {remote.lfs_sha256}"
            )
    elif remote.blob_id:
        blob = sha256_file(path, git_blob_sha1(size))
        if blob != remote.blob_id:
            raise ChecksumError(f"{remote.path}: git blob id {blob} does not match the hub's {remote.blob_id}")
    return digest


def select(files: list[RemoteFile], allow: list[str] | None, ignore: list[str] | None) -> list[RemoteFile]:
    """The files kept by huggingface_hub's allow / ignore pattern rules."""
    return list(filter_repo_objects(files, allow_patterns=allow, ignore_patterns=ignore, key=lambda f: f.path))


def done_log_path(staging: Path) -> Path:
    """The list of verified files of a staging directory (beside it, so it is never published)."""
    return staging.with_name(staging.name + ".done.jsonl")


def stage(client: HubClient, source: HubSource, commit: str, files: list[RemoteFile], staging: Path,
          progress: Progress | None = None) -> list[FileEntry]:
    """Bring every file into ``staging/files``, resuming earlier work; entries in tree order.

    ``done_log(staging)`` remembers verified files, so an interrupted pull skips them next time.
    A checksum mismatch discards that file's bytes and raises ChecksumError.
    """
    done_log = done_log_path(staging)
    done: dict[str, FileEntry] = {}
    if done_log.exists():
        for line in done_log.read_text().splitlines():
            try:
                entry = FileEntry.model_validate_json(line)
            except ValueError:
                continue
            final = staging / "files" / entry.path
            if final.is_file() and final.stat().st_size == entry.size:
                done[entry.path] = entry
    entries = []
    for remote in files:
        if remote.path in done and done[remote.path].size == remote.size:
            if progress:
                progress(remote.size)
            entries.append(done[remote.path])
            continue
        partial = staging / ".partial" / remote.path
        client.download(source, commit, remote, partial, progress)
        try:
            digest = verify(remote, partial)
        except ChecksumError:
            partial.unlink(missing_ok=True)
            raise
        final = staging / "files" / remote.path
        final.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, final)
        entry = FileEntry(path=remote.path, size=remote.size, sha256=digest)
        with open(done_log, "a") as log:
            log.write(json.dumps(entry.model_dump()) + "\n")
        entries.append(entry)
    shutil.rmtree(staging / ".partial", ignore_errors=True)
    return entries
