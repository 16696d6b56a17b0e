"""``pull`` from a fake hub into a local store: manifest, patterns, auth, checksums, resume."""

from __future__ import annotations

import hashlib
import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from models_support import BIG, payload, subprocess_env

from inferplane.models.errors import ChecksumError, NotFoundError
from inferplane.models.pull import pull
from inferplane.models.store import Store

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_pull_writes_version_manifest_and_latest(hub, store_dir: Path) -> None:
    store = Store(str(store_dir))
    result = pull("hf://tiny/model", store)

    assert result.created
    version_dir = store_dir / "tiny/model/versions" / COMMIT[:12]
    repo = hub.repos["tiny/model"]
    for path, data in repo.files.items():
        assert (version_dir / "files" / path).read_bytes() == data
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["source"] == "hf://tiny/model@main"
    assert manifest["revision"] == "main" and manifest["commit"] == COMMIT
    assert manifest["files"] == [
        {"path": p, "size": len(d), "sha256": hashlib.sha256(d).hexdigest()} for p, d in sorted(repo.files.items())
    ]
    assert manifest["total_size"] == sum(len(d) for d in repo.files.values())
    assert (store_dir / "tiny/model/latest").read_text().strip() == COMMIT[:12]
    # Nothing of the staging area is left in the store's listing.
    assert store.models() == {"tiny/model": [COMMIT[:12]]}
    assert not any(p.name.endswith(".done.jsonl") for p in store_dir.rglob("*"))


def test_pull_again_downloads_nothing(hub, store_dir: Path) -> None:
    store = Store(str(store_dir))
    pull("hf://tiny/model", store)
    hub.requests.clear()
    again = pull("hf://tiny/model@main", store)
    assert not again.created
    assert again.manifest.version == COMMIT[:12]
    assert not [r for r in hub.requests if "/resolve/" in r["path"] or r["path"].startswith("/cdn/")]


def test_allow_and_ignore_patterns_select_files(hub, store_dir: Path) -> None:
    store = Store(str(store_dir))
    only_json = pull("hf://tiny/model", store, allow_patterns=["*.json"])
    assert [f.path for f in only_json.manifest.files] == ["config.json", "tokenizer.json"]
    no_onnx = pull("hf://tiny/model", store, ignore_patterns=["onnx/*", "*.md"])
    assert [f.path for f in no_onnx.manifest.files] == ["config.json", "model.safetensors", "tokenizer.json"]
    # Different selections are different immutable versions; latest follows the last pull.
    assert only_json.manifest.version != no_onnx.manifest.version
    assert only_json.manifest.allow_patterns == ["*.json"]
    assert store.latest("tiny/model") == no_onnx.manifest.version
    assert len(store.versions("tiny/model")) == 2
    assert not hub.file_gets("README.md") and not hub.file_gets("onnx/model.onnx")


def test_patterns_matching_nothing_are_an_error(hub, store_dir: Path) -> None:
    with pytest.raises(NotFoundError, match="no file of hf://tiny/model@main matches"):
        pull("hf://tiny/model", Store(str(store_dir)), allow_patterns=["*.gguf"])


def test_revision_tag_and_unknown_revision(hub, store_dir: Path) -> None:
    hub.repos["tiny/model"].refs["v1"] = COMMIT
    result = pull("hf://tiny/model@v1", Store(str(store_dir)), name="tiny")
    assert result.manifest.name == "tiny" and result.manifest.revision == "v1"
    with pytest.raises(NotFoundError, match="revision 'nope' of tiny/model not found"):
        pull("hf://tiny/model@nope", Store(str(store_dir)))


def test_private_repo_uses_hf_token_and_keeps_it_off_the_cdn(hub, store_dir: Path, monkeypatch) -> None:
    hub.add("acme/secret", {"config.json": b"{}", "weights.bin": payload(4096)}, private=True)
    with pytest.raises(NotFoundError, match="acme/secret not found .* set HF_TOKEN"):
        pull("hf://acme/secret", Store(str(store_dir)))

    monkeypatch.setenv("HF_TOKEN", hub.token)
    result = pull("hf://acme/secret", Store(str(store_dir)))
    assert [f.path for f in result.manifest.files] == ["config.json", "weights.bin"]
    hub_calls = [r for r in hub.requests if not r["path"].startswith("/cdn/") and "secret" in r["path"]]
    assert all(r["authorization"] == f"Bearer {hub.token}" for r in hub_calls[-5:])
    assert [r["authorization"] for r in hub.requests if r["path"].startswith("/cdn/")] == [None]


def test_checksum_mismatch_is_detected_and_nothing_is_published(hub, store_dir: Path) -> None:
    hub.corrupt.add("model.safetensors")
    store = Store(str(store_dir))
    with pytest.raises(ChecksumError, match="model.safetensors: sha256 .* does not match the hub's"):
        pull("hf://tiny/model", store)
    assert store.models() == {} and store.latest("tiny/model") is None

    hub.corrupt = {"tokenizer.json"}  # a small (non-LFS) file is checked against its git blob id
    with pytest.raises(ChecksumError, match="tokenizer.json: git blob id"):
        pull("hf://tiny/model", store)

    hub.corrupt.clear()  # the next pull succeeds: the bad bytes were discarded
    assert pull("hf://tiny/model", store).manifest.files[0].path == "README.md"


def test_interrupted_pull_resumes_with_a_range_request(hub, store_dir: Path, tmp_path: Path) -> None:
    weights = payload(BIG, seed=7)
    hub.add("big/model", {"config.json": b"{}", "weights.bin": weights})
    hub.stall_after["weights.bin"] = BIG - 1024 * 1024
    child = subprocess.Popen(
        [sys.executable, "-m", "inferplane.models.cli", "pull", "hf://big/model", "--to", str(store_dir), "-q"],
        env=subprocess_env(HF_HUB_DOWNLOAD_TIMEOUT="60"), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    partial = store_dir / ".staging" / f"big--model--{COMMIT[:12]}" / ".partial" / "weights.bin"
    deadline = time.monotonic() + 60
    while not (partial.exists() and partial.stat().st_size >= 10 * 1024 * 1024):
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the download never got going"
        time.sleep(0.05)
    child.send_signal(signal.SIGKILL)  # the worst interruption: no cleanup at all
    child.wait()
    have = partial.stat().st_size
    assert 0 < have < BIG

    del hub.stall_after["weights.bin"]
    hub.requests.clear()
    result = pull("hf://big/model", Store(str(store_dir)))
    gets = hub.file_gets("weights.bin")
    assert [g["range"] for g in gets] == [f"bytes={have}-"]
    assert hub.file_gets("config.json") == []  # finished files are not fetched again
    stored = store_dir / "big/model/versions" / COMMIT[:12] / "files" / "weights.bin"
    assert stored.read_bytes() == weights
    assert result.manifest.files[1].sha256 == hashlib.sha256(weights).hexdigest()
    assert not (store_dir / ".staging" / f"big--model--{COMMIT[:12]}").exists()
