"""Fixtures of the model-store tests: a fake hub, isolated caches, and never the real hub."""

from __future__ import annotations

import socket
import sys
import uuid
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from models_fakehub import FakeHub  # noqa: E402
from models_support import payload  # noqa: E402


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Point every hub / cache setting at the test; an unset HF_ENDPOINT would reach nothing."""
    monkeypatch.setenv("HF_ENDPOINT", "http://127.0.0.1:9")  # discard port: fails fast, never the hub
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_DOWNLOAD_TIMEOUT", "5")
    monkeypatch.setenv("INFERPLANE_MODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("INFERPLANE_STAGING_DIR", str(tmp_path / "staging"))
    for name in ("HF_TOKEN", "INFERPLANE_MODEL_STORE", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    # huggingface_hub fixed its default endpoint at import time and fetches an "agent harness"
    # registry from it when building headers: keep that off the real hub too.
    import huggingface_hub.constants
    import huggingface_hub.utils._detect_agent as detect_agent

    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setattr(detect_agent, "_registry", detect_agent._EMPTY_REGISTRY)


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch):
    """A fake hub with ``tiny/model`` (small config files and one LFS weight file)."""
    with FakeHub() as fake:
        fake.add("tiny/model", {
            "config.json": b'{"model_type": "llama"}',
            "tokenizer.json": b'{"version": "1.0"}',
            "README.md": b"# tiny model\n",
            "model.safetensors": payload(300_000),
            "onnx/model.onnx": payload(5_000, seed=1),
        })
        monkeypatch.setenv("HF_ENDPOINT", fake.endpoint)
        yield fake


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def moto_endpoint():
    """A local S3 (moto's threaded server) for the whole session."""
    from moto.server import ThreadedMotoServer

    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture(scope="session")
def gcs_endpoint():
    """A local GCS (gcp-storage-emulator, in memory) for the whole session."""
    from gcp_storage_emulator.server import create_server

    port = _free_port()
    server = create_server("127.0.0.1", port, in_memory=True)
    server.start()
    yield f"http://127.0.0.1:{port}"
    server.stop()


@pytest.fixture
def gcs_store_url(gcs_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the local GCS; gcsfs finds it through STORAGE_EMULATOR_HOST."""
    import gcsfs

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_endpoint)
    gcsfs.GCSFileSystem.clear_instance_cache()
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    gcsfs.GCSFileSystem(skip_instance_cache=True).mkdir(bucket)
    yield f"gs://{bucket}/prod"
    gcsfs.GCSFileSystem.clear_instance_cache()


@pytest.fixture(params=["s3", "gs"])
def object_store_url(request: pytest.FixtureRequest) -> str:
    """The store on each object storage: S3 (moto) and GCS (emulator)."""
    return request.getfixturevalue(f"{'s3' if request.param == 's3' else 'gcs'}_store_url")


@pytest.fixture
def s3_store_url(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the local S3; s3fs finds it through AWS_ENDPOINT_URL."""
    import s3fs

    for key, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                       "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": moto_endpoint}.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    s3fs.S3FileSystem.clear_instance_cache()
    bucket = f"models-{uuid.uuid4().hex[:8]}"
    s3fs.S3FileSystem(skip_instance_cache=True).mkdir(bucket)
    yield f"s3://{bucket}/prod"
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def store_dir(tmp_path: Path) -> Path:
    return tmp_path / "store"
