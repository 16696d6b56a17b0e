"""``materialize``: the node cache fills once, atomically, with verified bytes."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
from models_support import BIG, make_version, payload, subprocess_env

from inferplane.models.cache import cache_path, ensure_cached, materialize
from inferplane.models.errors import ChecksumError
from inferplane.models.store import Store


def test_materialize_latest_and_reuse(store_dir: Path, tmp_path: Path) -> None:
    store = Store(str(store_dir))
    make_version(store, "org/m", "v1", {"config.json": b"{}", "sub/w.bin": payload(5000)})
    store.set_latest("org/m", "v1")
    cache = tmp_path / "node-cache"

    path = materialize(str(store_dir), "org/m", "latest", cache)
    assert path == cache_path(store, "org/m", "v1", cache) / "files"
    assert (path / "sub/w.bin").read_bytes() == payload(5000)
    again = ensure_cached(store, "org/m", "v1", cache)
    assert again.path == path and not again.filled
    assert not list(cache.rglob("*.partial"))


def test_corrupted_store_file_is_rejected(store_dir: Path, tmp_path: Path) -> None:
    store = Store(str(store_dir))
    make_version(store, "org/m", "v1", {"config.json": b"{}", "w.bin": payload(5000)})
    stored = store_dir / "org/m/versions/v1/files/w.bin"
    stored.write_bytes(b"\0" + stored.read_bytes()[1:])  # same size, one byte flipped

    with pytest.raises(ChecksumError, match="w.bin in .* does not match its manifest"):
        materialize(str(store_dir), "org/m", "v1", tmp_path / "c")
    final = cache_path(store, "org/m", "v1", tmp_path / "c")
    assert not final.exists()  # nothing half-verified is ever visible
    assert not (final.parent / "v1.partial/files/w.bin").exists()  # the bad bytes are dropped


def test_interrupted_fill_resumes(store_dir: Path, tmp_path: Path) -> None:
    store = Store(str(store_dir))
    data = payload(200_000)
    make_version(store, "org/m", "v1", {"w.bin": data})
    partial = cache_path(store, "org/m", "v1", tmp_path / "c").with_name("v1.partial") / "files" / "w.bin"
    partial.parent.mkdir(parents=True)
    partial.write_bytes(data[:123_456])  # what a killed process left behind
    result = ensure_cached(store, "org/m", "v1", tmp_path / "c")
    assert result.filled and (result.path / "w.bin").read_bytes() == data


_WORKER = """
import json, os, sys, time
from pathlib import Path
from inferplane.models.cache import ensure_cached
from inferplane.models.store import Store
store = Store(sys.argv[1])
while not Path(sys.argv[3]).exists():
    time.sleep(0.005)
result = ensure_cached(store, "org/m", "latest", sys.argv[2])
print(json.dumps({"filled": result.filled, "path": str(result.path), "pid": os.getpid()}))
"""


def test_concurrent_replicas_download_once(store_dir: Path, tmp_path: Path) -> None:
    store = Store(str(store_dir))
    data = payload(BIG)
    make_version(store, "org/m", "v1", {"config.json": b"{}", "w.bin": data})
    store.set_latest("org/m", "v1")
    go, cache = tmp_path / "go", tmp_path / "node-cache"
    workers = [
        subprocess.Popen([sys.executable, "-c", _WORKER, str(store_dir), str(cache), str(go)],
                         env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    time.sleep(1.5)  # let every worker finish importing and wait at the start line
    go.touch()
    results = []
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        results.append(json.loads(out))
    assert sum(r["filled"] for r in results) == 1
    assert len({r["path"] for r in results}) == 1
    assert (Path(results[0]["path"]) / "w.bin").read_bytes() == data
