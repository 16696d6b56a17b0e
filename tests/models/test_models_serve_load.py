"""A model server loading a store version: node cache checked on every load, damaged files fetched again."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from models_support import make_version, payload, subprocess_env
from platform_runner import wait_healthy

from inferplane.models.cache import cache_path, ensure_cached
from inferplane.models.serving import load_for_server, model_file
from inferplane.models.store import Store
from inferplane.server.config import ServerConfig


def test_corrupted_cached_file_is_detected_and_fetched_again(store_dir: Path, tmp_path: Path) -> None:
    store = Store(str(store_dir))
    data = payload(300_000)
    make_version(store, "org/m", "v1", {"config.json": b"{}", "w.bin": data})
    cache = tmp_path / "node-cache"
    first = ensure_cached(store, "org/m", "v1", cache)
    assert first.filled and not first.repaired
    cached = first.path / "w.bin"
    cached.write_bytes(b"\xff" + data[1:])  # same size, one byte changed on the node's disk

    again = ensure_cached(store, "org/m", "v1", cache)
    assert again.repaired == ("w.bin",)
    assert cached.read_bytes() == data
    assert ensure_cached(store, "org/m", "v1", cache).repaired == ()  # verified: nothing to do
    cached.unlink()  # a file deleted from the cache
    assert ensure_cached(store, "org/m", "v1", cache).repaired == ("w.bin",)
    assert cached.read_bytes() == data


def test_size_check_alone_misses_a_flipped_byte_full_catches_it(store_dir: Path, tmp_path: Path) -> None:
    store = Store(str(store_dir))
    data = payload(10_000)
    make_version(store, "org/m", "v1", {"w.bin": data})
    cached = ensure_cached(store, "org/m", "v1", tmp_path / "c").path / "w.bin"
    stamp = cached.stat()
    cached.write_bytes(b"\xff" + data[1:])
    import os

    os.utime(cached, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # even with the old mtime
    assert ensure_cached(store, "org/m", "v1", tmp_path / "c", verify="size").repaired == ()
    assert ensure_cached(store, "org/m", "v1", tmp_path / "c", verify="full").repaired == ("w.bin",)
    assert cached.read_bytes() == data


def test_server_model_path_from_a_store_version(store_dir: Path, tmp_path: Path) -> None:
    store = Store(str(store_dir))
    make_version(store, "org/gguf", "v1", {"model.Q4.gguf": b"GGUF", "README.md": b"x"})
    make_version(store, "org/dir", "v1", {"config.json": b"{}", "model.safetensors": b"w"})
    store.set_latest("org/gguf", "v1")
    path, loaded = load_for_server(f"store://{store_dir}#org/gguf", tmp_path / "c")
    try:
        assert path.name == "model.Q4.gguf" and path.read_bytes() == b"GGUF"
        assert path.parent == cache_path(store, "org/gguf", "v1", tmp_path / "c") / "files"
    finally:
        loaded.release()
    path, loaded = load_for_server(f"store://{store_dir}#org/dir@v1", tmp_path / "c")
    loaded.release()
    assert path == model_file(path) and (path / "config.json").is_file()


def test_server_config_accepts_store_refs_and_names_bad_ones() -> None:
    assert ServerConfig(model="store://s3://bucket/models#org/m@v2").model == "store://s3://bucket/models#org/m@v2"
    assert ServerConfig(model="s3://bucket/models#org/m@v2").model == "store://s3://bucket/models#org/m@v2"
    assert ServerConfig(model="file:///srv/models#org/m").model == "store://file:///srv/models#org/m"
    with pytest.raises(ValueError, match="model: invalid model reference"):
        ServerConfig(model="store://s3://bucket/models")
    with pytest.raises(ValueError, match="model: invalid model"):
        ServerConfig(model="s3://bucket/models#../etc@v1")


def test_serve_loads_by_store_url(store_dir: Path, tmp_path: Path) -> None:
    """``inferplane serve --model store://…`` fetches the version, serves, and gives its lease back on exit."""
    store = Store(str(store_dir))
    make_version(store, "org/m", "v1", {"config.json": b"{}"})
    store.set_latest("org/m", "v1")
    from inferplane.models.leases import live_leases

    port_probe = __import__("socket").socket()
    port_probe.bind(("127.0.0.1", 0))
    port = port_probe.getsockname()[1]
    port_probe.close()
    process = subprocess.Popen(
        [sys.executable, "-m", "inferplane", "serve", "--engine", "sim", "--port", str(port),
         "--model", f"store://{store_dir}#org/m", "--model-cache-dir", str(tmp_path / "c")],
        env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_healthy(f"http://127.0.0.1:{port}/health", process)
        assert [lease.pid for lease in live_leases(store, "org/m", "v1")] == [process.pid]
    finally:
        process.terminate()
        out, _ = process.communicate(timeout=20)
    assert "org/m@v1 at" in out
    assert live_leases(store, "org/m", "v1") == []
    assert (cache_path(store, "org/m", "v1", tmp_path / "c") / "files" / "config.json").is_file()


def test_serve_names_a_missing_version(store_dir: Path, tmp_path: Path) -> None:
    Store(str(store_dir))
    result = subprocess.run(
        [sys.executable, "-m", "inferplane", "serve", "--engine", "sim", "--model", f"store://{store_dir}#org/none@v9",
         "--model-cache-dir", str(tmp_path / "c")], env=subprocess_env(), check=False, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2
    assert "org/none" in result.stderr and "Traceback" not in result.stderr


_COUNTING_LOADER = """
import json, sys, time
from pathlib import Path
from inferplane.models import cache
from inferplane.models.loader import load_model
fills = []
real_fill = cache._fill_file
cache._fill_file = lambda *a, **k: (fills.append(a[3].path), real_fill(*a, **k))[1]
while not Path(sys.argv[3]).exists():
    time.sleep(0.005)
loaded = load_model(sys.argv[1], sys.argv[2])
loaded.release()
print(json.dumps({"path": str(loaded.path), "downloaded": fills}))
"""


def test_replicas_on_one_node_download_an_s3_version_once(s3_store_url: str, tmp_path: Path) -> None:
    """Two servers start at once on one node, loading the same version from S3: one download, one cache."""
    store = Store(s3_store_url)
    data = payload(2_000_000)
    make_version(store, "org/m", "v1", {"config.json": b"{}", "w.bin": data})
    store.set_latest("org/m", "v1")
    go, cache = tmp_path / "go", tmp_path / "node-cache"
    ref = f"store://{s3_store_url}#org/m"
    workers = [subprocess.Popen([sys.executable, "-c", _COUNTING_LOADER, ref, str(cache), str(go)],
                                env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for _ in range(2)]
    time.sleep(1.0)  # both at the start line (importing takes a moment); the test holds either way
    go.touch()
    results = []
    for worker in workers:
        out, err = worker.communicate(timeout=120)
        assert worker.returncode == 0, err
        results.append(__import__("json").loads(out))
    assert sorted(len(r["downloaded"]) for r in results) == [0, 2]  # config.json and w.bin, fetched once
    assert results[0]["path"] == results[1]["path"]
    assert (Path(results[0]["path"]) / "w.bin").read_bytes() == data


def test_models_fetch_repairs_and_says_so(store_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from inferplane.models.cli import main

    store = Store(str(store_dir))
    make_version(store, "org/m", "v1", {"w.bin": payload(1000)})
    argv = ["fetch", "org/m@v1", "--store", str(store_dir), "--cache-dir", str(tmp_path / "c")]
    assert main(argv) == 0
    cached = Path(capsys.readouterr().out.strip()) / "w.bin"
    cached.write_bytes(b"x" * 1000)
    assert main([*argv, "--verify", "full"]) == 0
    assert "fetched again (damaged in the cache): w.bin" in capsys.readouterr().err
    assert cached.read_bytes() == payload(1000)
