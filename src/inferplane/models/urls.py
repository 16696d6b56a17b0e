"""Parsing of the addresses the model store accepts.

- hub sources: ``hf://ORG/NAME[@REVISION]``
- stores: a local path, ``file://PATH``, ``s3://BUCKET[/PREFIX]``, ``gs://BUCKET[/PREFIX]``
  (``gcs://`` too)
- model references for servers: ``store://STORE_URL#NAME[@VERSION]``, e.g.
  ``store://s3://models/prod#Qwen/Qwen3-0.6B@latest`` or ``store:///srv/models#Qwen/Qwen3-0.6B``
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from inferplane.models.errors import BadReferenceError

_SEGMENT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_VERSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REVISION = re.compile(r"^[A-Za-z0-9._/-]{1,255}$")
# Path segments of a model name that would collide with the store layout.
RESERVED_SEGMENTS = frozenset({"versions", "leases", "latest", "files"})
STORE_SCHEMES = ("file", "s3", "gs", "gcs")
LATEST = "latest"


@dataclass(frozen=True)
class HubSource:
    """A model repository on the Hugging Face hub, at a branch, tag or commit."""

    repo_id: str
    revision: str = "main"

    def __str__(self) -> str:
        return f"hf://{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class StoreRef:
    """A model version in a store, as a server names it."""

    store_url: str
    name: str
    version: str = LATEST


def validate_name(name: str) -> str:
    """A model name is ``NAME`` or ``ORG/NAME``: letters, digits, ``.``, ``_`` and ``-``."""
    parts = name.split("/")
    if not 1 <= len(parts) <= 2 or not all(_SEGMENT.match(p) for p in parts):
        raise BadReferenceError(
            f"invalid model name {name!r}: expected NAME or ORG/NAME "
            "(letters, digits, '.', '_' and '-')"
        )
    if any(p in RESERVED_SEGMENTS for p in parts):
        raise BadReferenceError(
            f"invalid model name {name!r}: {', '.join(sorted(RESERVED_SEGMENTS))} are reserved"
        )
    return name


def validate_version(version: str) -> str:
    """Version ids are single path segments; ``latest`` means the store's pointer."""
    if not _VERSION.match(version):
        raise BadReferenceError(f"invalid version {version!r}")
    return version


def parse_hub_url(url: str) -> HubSource:
    """Parse ``hf://ORG/NAME[@REVISION]``."""
    if not url.startswith("hf://"):
        raise BadReferenceError(f"invalid source {url!r}: expected hf://ORG/NAME[@REVISION]")
    rest = url[len("hf://") :]
    repo_id, _, revision = rest.partition("@")
    if "@" in rest and not revision:
        raise BadReferenceError(f"invalid source {url!r}: empty revision after '@'")
    parts = repo_id.split("/")
    if len(parts) != 2 or not all(_SEGMENT.match(p) for p in parts):
        raise BadReferenceError(f"invalid source {url!r}: expected hf://ORG/NAME[@REVISION]")
    if revision and (not _REVISION.match(revision) or ".." in revision):
        raise BadReferenceError(f"invalid source {url!r}: bad revision {revision!r}")
    return HubSource(repo_id=repo_id, revision=revision or "main")


def parse_store_url(url: str) -> str:
    """Check a store URL and return it normalised (no trailing slash)."""
    if not url or not url.strip():
        raise BadReferenceError("the store URL is empty")
    url = url.strip()
    scheme, sep, rest = url.partition("://")
    if not sep:
        if "#" in url or url.startswith(("hf:", "store:")):
            raise BadReferenceError(f"invalid store {url!r}: expected a path, s3://, gs:// or file://")
        return url.rstrip("/") or "/"
    if scheme not in STORE_SCHEMES:
        raise BadReferenceError(
            f"invalid store {url!r}: unsupported scheme {scheme + '://'!r} "
            f"(use a local path, {', '.join(s + '://' for s in STORE_SCHEMES)})"
        )
    if scheme in ("s3", "gs", "gcs") and not rest.strip("/"):
        raise BadReferenceError(f"invalid store {url!r}: missing bucket name")
    if scheme == "file" and not rest.startswith("/"):
        raise BadReferenceError(f"invalid store {url!r}: file:// needs an absolute path")
    return f"{scheme}://{rest.rstrip('/')}" if rest.strip("/") else f"{scheme}://{rest}"


def parse_name_version(text: str, default_version: str | None = LATEST) -> tuple[str, str | None]:
    """Split ``NAME[@VERSION]``; the version defaults to ``default_version``."""
    name, sep, version = text.partition("@")
    if sep and not version:
        raise BadReferenceError(f"invalid model {text!r}: empty version after '@'")
    return validate_name(name), validate_version(version) if version else default_version


def parse_store_ref(ref: str) -> StoreRef:
    """Parse ``store://STORE_URL#NAME[@VERSION]`` (version defaults to ``latest``)."""
    if not ref.startswith("store://"):
        raise BadReferenceError(f"invalid model reference {ref!r}: expected store://STORE_URL#NAME[@VERSION]")
    store, sep, model = ref[len("store://") :].rpartition("#")
    if not sep or not store or not model:
        raise BadReferenceError(f"invalid model reference {ref!r}: expected store://STORE_URL#NAME[@VERSION]")
    name, version = parse_name_version(model)
    return StoreRef(store_url=parse_store_url(store), name=name, version=version or LATEST)
