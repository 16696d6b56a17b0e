"""The store layout and its atomic ``latest`` pointer."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
from models_support import make_version

from inferplane.models.errors import NotFoundError
from inferplane.models.store import Store


def test_versions_listing_and_resolution(store_dir: Path) -> None:
    store = Store(str(store_dir))
    make_version(store, "org/a", "v1", {"config.json": b"{}"})
    make_version(store, "org/a", "v2", {"config.json": b"{ }"})
    make_version(store, "solo", "v1", {"w.bin": b"123"})
    (store_dir / "org/a/versions/v3/files").mkdir(parents=True)  # no manifest: incomplete, invisible

    assert store.models() == {"org/a": ["v1", "v2"], "solo": ["v1"]}
    with pytest.raises(NotFoundError, match="org/a has no 'latest' version"):
        store.resolve("org/a")
    store.set_latest("org/a", "v2")
    assert store.resolve("org/a") == "v2"
    assert store.resolve("org/a", "v1") == "v1"
    with pytest.raises(NotFoundError, match=r"org/a@v3 is not in store"):
        store.resolve("org/a", "v3")
    assert store.read_manifest("solo", "v1").files[0].sha256 == (
        "a665a45920422f9d417e4867efdc4fb8a04a1f3fff1fa07e998e86f7f7a27ae3"
    )


def test_latest_pointer_is_replaced_atomically(store_dir: Path) -> None:
    store = Store(str(store_dir))
    versions = ["a" * 40, "b" * 12]  # different lengths: a torn write would show up as a mixed id
    for v in versions:
        make_version(store, "org/m", v, {"f": v.encode()})
    store.set_latest("org/m", versions[0])
    seen: set[str | None] = set()
    stop = threading.Event()

    def read() -> None:
        while not stop.is_set():
            seen.add(store.latest("org/m"))

    readers = [threading.Thread(target=read) for _ in range(2)]
    for r in readers:
        r.start()
    for i in range(100):
        store.set_latest("org/m", versions[i % 2])
    stop.set()
    for r in readers:
        r.join()
    assert seen <= set(versions) and seen  # never empty, truncated or mixed
    assert sorted(p.name for p in (store_dir / "org/m").iterdir()) == ["latest", "versions"]  # no temp files


def test_published_version_is_complete_or_absent(store_dir: Path) -> None:
    store = Store(str(store_dir))
    manifest = make_version(store, "org/m", "v1", {"a/b.bin": b"x" * 10, "c.json": b"{}"})
    assert sorted(p.relative_to(store_dir).as_posix() for p in store_dir.rglob("*") if p.is_file()) == [
        "org/m/versions/v1/files/a/b.bin", "org/m/versions/v1/files/c.json", "org/m/versions/v1/manifest.json",
    ]
    assert manifest.total_size == 12
    store.delete_version("org/m", "v1")
    assert store.models() == {}
