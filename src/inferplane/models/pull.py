"""``pull``: copy a hub repository into a store as a new immutable version and move ``latest``."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock
from tqdm import tqdm

from inferplane.models.errors import NotFoundError
from inferplane.models.hub import HubClient, done_log_path, select, stage
from inferplane.models.manifest import Manifest
from inferplane.models.store import Store
from inferplane.models.urls import HubSource, parse_hub_url, validate_name


@dataclass(frozen=True)
class PullResult:
    manifest: Manifest
    created: bool  # False when the store already held this exact version

    @property
    def ref(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"


def default_staging_root() -> Path:
    """Where pulls to remote stores stage files: ``INFERPLANE_STAGING_DIR`` or ~/.cache/inferplane/staging."""
    configured = os.environ.get("INFERPLANE_STAGING_DIR")
    return Path(configured) if configured else Path.home() / ".cache" / "inferplane" / "staging"


def version_id(commit: str, allow: list[str] | None, ignore: list[str] | None) -> str:
    """Deterministic: the commit's first 12 digits, plus a hash of the patterns when any are given.

    Pulling the same commit with the same patterns again finds the existing version.
    """
    if not allow and not ignore:
        return commit[:12]
    patterns = json.dumps([sorted(set(allow or [])), sorted(set(ignore or []))])
    return f"{commit[:12]}-{hashlib.sha256(patterns.encode()).hexdigest()[:8]}"


def _staging_dir(store: Store, name: str, version: str, staging_root: Path | None) -> Path:
    key = f"{name.replace('/', '--')}--{version}"
    if store.is_local:  # inside the store, so publishing is one rename on the same filesystem
        return store.local_path(".staging", key)
    store_key = hashlib.sha256(store.url.encode()).hexdigest()[:12]
    return (staging_root or default_staging_root()) / store_key / key


def pull(
    source: str | HubSource,
    store: Store,
    *,
    name: str | None = None,
    allow_patterns: list[str] | None = None,
    ignore_patterns: list[str] | None = None,
    staging_root: Path | None = None,
    update_latest: bool = True,
    progress: bool = False,
    client: HubClient | None = None,
) -> PullResult:
    """Pull ``hf://ORG/NAME[@REV]`` into ``store`` and (by default) point ``latest`` at it."""
    source = parse_hub_url(source) if isinstance(source, str) else source
    name = validate_name(name or source.repo_id)
    client = client or HubClient()
    allow = sorted(set(allow_patterns)) if allow_patterns else None
    ignore = sorted(set(ignore_patterns)) if ignore_patterns else None

    commit, tree = client.resolve(source)
    files = select(tree, allow, ignore)
    if not files:
        raise NotFoundError(f"no file of {source} matches the allow / ignore patterns")
    version = version_id(commit, allow, ignore)
    if store.is_local:
        Path(store.root).mkdir(parents=True, exist_ok=True)

    created = False
    if not store.has_version(name, version):
        staging = _staging_dir(store, name, version, staging_root)
        staging.parent.mkdir(parents=True, exist_ok=True)
        # One pull per version at a time; a second waits, then finds the version published.
        with FileLock(str(staging) + ".lock"):
            if not store.has_version(name, version):
                staging.mkdir(exist_ok=True)
                total = sum(f.size for f in files)
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"{name}@{version}",
                          disable=not progress) as bar:
                    entries = stage(client, source, commit, files, staging, bar.update)
                manifest = Manifest(
                    name=name, version=version, source=str(source), repo_id=source.repo_id,
                    revision=source.revision, commit=commit, allow_patterns=allow,
                    ignore_patterns=ignore, files=entries,
                )
                with tqdm(total=total, unit="B", unit_scale=True, desc=f"upload to {store.url}",
                          disable=not progress or store.is_local) as bar:
                    created = store.put_version(staging, manifest, bar.update)
                shutil.rmtree(staging, ignore_errors=True)
                done_log_path(staging).unlink(missing_ok=True)
    manifest = store.read_manifest(name, version)
    if update_latest:
        store.set_latest(name, version)
    return PullResult(manifest=manifest, created=created)
