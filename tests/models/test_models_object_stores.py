"""The store on object storage: S3 (a local moto server, s3fs) and GCS (an emulator, gcsfs)."""

from __future__ import annotations

import hashlib

import fsspec
import pytest

from inferplane.models.cache import ensure_cached
from inferplane.models.cli import main
from inferplane.models.errors import VersionInUseError
from inferplane.models.leases import acquire_lease
from inferplane.models.pull import pull
from inferplane.models.remove import remove_version
from inferplane.models.store import Store

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_pull_to_object_store_then_materialize(hub, object_store_url: str, tmp_path, capsys) -> None:
    store = Store(object_store_url)
    result = pull("hf://tiny/model", store)
    version = COMMIT[:12]
    assert result.created and result.manifest.version == version

    fs, root = fsspec.core.url_to_fs(object_store_url, skip_instance_cache=True)
    assert fs.cat_file(f"{root}/tiny/model/latest") == f"{version}\n".encode()
    weights = hub.repos["tiny/model"].files["model.safetensors"]
    assert fs.cat_file(f"{root}/tiny/model/versions/{version}/files/model.safetensors") == weights
    assert Store(object_store_url).models() == {"tiny/model": [version]}
    assert not list((tmp_path / "staging").rglob("*.safetensors"))  # staging cleaned after upload

    cached = ensure_cached(store, "tiny/model", "latest", tmp_path / "node")
    assert cached.filled
    assert hashlib.sha256((cached.path / "model.safetensors").read_bytes()).hexdigest() == (
        hashlib.sha256(weights).hexdigest()
    )

    assert main(["list", "--store", object_store_url]) == 0
    assert f"tiny/model  {version}  *" in capsys.readouterr().out


def test_leases_and_rm_on_object_store(hub, object_store_url: str) -> None:
    store = Store(object_store_url)
    first = pull("hf://tiny/model", store, allow_patterns=["*.json"]).manifest.version
    pull("hf://tiny/model", store)  # latest moves to the full version
    lease = acquire_lease(store, "tiny/model", first, holder="pod-0")
    with pytest.raises(VersionInUseError, match="pod-0"):
        remove_version(store, "tiny/model", first)
    lease.release()
    remove_version(store, "tiny/model", first)
    assert Store(object_store_url).versions("tiny/model") == [COMMIT[:12]]
