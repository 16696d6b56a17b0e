"""Fixtures: a repository of real small models, and an in-process server over it."""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).parent))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import oip_support
from oip_support import serve

from inferplane.oip.state import ServerState


@pytest.fixture(scope="session")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """sklearn, ONNX, XGBoost, TorchScript and MiniLM models (built once per session)."""
    root = tmp_path_factory.mktemp("repo")
    oip_support.build_sklearn(root)
    oip_support.build_sklearn(root, "two-versions", versions=(1, 2), version_policy={"latest": {"num_versions": 1}})
    oip_support.build_onnx(root)
    oip_support.build_xgboost(root)
    oip_support.build_torchscript(root)
    oip_support.build_embeddings(root)
    return root


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Shared by every server of the session, so MiniLM is exported and verified once."""
    return tmp_path_factory.mktemp("cache")


@pytest.fixture
async def server(repo: Path, cache_dir: Path) -> AsyncIterator[tuple[ServerState, httpx.AsyncClient]]:
    """The classic models (no embeddings), served in-process."""
    async with serve(repo, cache_dir, ["iris", "iris-onnx", "iris-xgb", "doubler", "two-versions"]) as pair:
        yield pair


@pytest.fixture
async def client(server: tuple[ServerState, httpx.AsyncClient]) -> httpx.AsyncClient:
    return server[1]
