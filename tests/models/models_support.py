"""Helpers shared by the model-store tests."""

from __future__ import annotations

import hashlib
import os
import random
import shutil
import tempfile
from pathlib import Path

from inferplane.models.manifest import FileEntry, Manifest
from inferplane.models.store import Store

# Larger than huggingface_hub's 10 MiB download chunk, so an interrupted transfer leaves bytes on disk.
BIG = 12 * 1024 * 1024


def payload(size: int, seed: int = 0) -> bytes:
    return random.Random(seed).randbytes(size)


def subprocess_env(**extra: str) -> dict[str, str]:
    """The test's environment (fake hub, isolated caches) for a child process."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), env.get("PYTHONPATH")]))
    env.update(extra)
    return env


def make_version(store: Store, name: str, version: str, files: dict[str, bytes]) -> Manifest:
    """Publish a version built from ``files`` straight into ``store`` (no hub involved)."""
    if store.is_local:
        Path(store.root).mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix="staged-", dir=store.root if store.is_local else None))
    entries = []
    for path, data in sorted(files.items()):
        (staged / "files" / path).parent.mkdir(parents=True, exist_ok=True)
        (staged / "files" / path).write_bytes(data)
        entries.append(FileEntry(path=path, size=len(data), sha256=hashlib.sha256(data).hexdigest()))
    manifest = Manifest(name=name, version=version, source="test://", files=entries)
    assert store.put_version(staged, manifest)
    shutil.rmtree(staged, ignore_errors=True)
    return manifest
