"""The manifest of a stored model version, and the checksums it records."""

from __future__ import annotations

import hashlib
import json
from datetime import datetime, timezone
from pathlib import Path, PurePosixPath

from pydantic import BaseModel, ConfigDict, Field, field_validator

MANIFEST_FORMAT = 1
HASH_CHUNK = 1 << 20


class FileEntry(BaseModel):
    """One file of a model version; ``path`` is relative, with ``/`` separators."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    size: int = Field(ge=0)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")

    @field_validator("path")
    @classmethod
    def _relative(cls, path: str) -> str:
        parts = PurePosixPath(path).parts
        if not parts or path.startswith("/") or any(p in ("..", ".") for p in parts) or "\\" in path:
            raise ValueError(f"file path {path!r} must be relative and stay inside the version")
        return path


class Manifest(BaseModel):
    """What a version holds and where it came from; written last, so it marks a complete version."""

    model_config = ConfigDict(extra="ignore")

    format: int = MANIFEST_FORMAT
    name: str
    version: str
    source: str
    repo_id: str | None = None
    revision: str | None = None
    commit: str | None = None
    allow_patterns: list[str] | None = None
    ignore_patterns: list[str] | None = None
    created: datetime = Field(default_factory=lambda: datetime.now(timezone.utc))
    files: list[FileEntry]

    @property
    def total_size(self) -> int:
        return sum(f.size for f in self.files)

    def to_json(self) -> bytes:
        data = self.model_dump(mode="json")
        data["total_size"] = self.total_size
        return (json.dumps(data, indent=1) + "\n").encode()


def sha256_file(path: Path, hasher: "hashlib._Hash | None" = None) -> str:
    """Hex sha256 of a file (or feed it into ``hasher`` and return its digest)."""
    hasher = hasher or hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def git_blob_sha1(size: int) -> "hashlib._Hash":
    """A sha1 primed with git's blob header: feed it the content to get the git object id."""
    return hashlib.sha1(f"blob {size}\0".encode())
