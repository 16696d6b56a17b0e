"""Parsing hub sources, store URLs and server model references."""

from __future__ import annotations

import pytest

from inferplane.models.errors import BadReferenceError
from inferplane.models.urls import HubSource, StoreRef, parse_hub_url, parse_store_ref, parse_store_url


def test_hub_urls() -> None:
    assert parse_hub_url("hf://Qwen/Qwen3-0.6B") == HubSource("Qwen/Qwen3-0.6B", "main")
    assert parse_hub_url("hf://Qwen/Qwen3-0.6B@v1.0") == HubSource("Qwen/Qwen3-0.6B", "v1.0")
    assert parse_hub_url("hf://org/m@refs/pr/1").revision == "refs/pr/1"
    for bad in ("Qwen/Qwen3", "hf://Qwen", "hf://a/b/c", "hf://a/b@", "s3://a/b", "hf://a/b@../x"):
        with pytest.raises(BadReferenceError):
            parse_hub_url(bad)


def test_store_urls() -> None:
    assert parse_store_url("s3://bucket/models/") == "s3://bucket/models"
    assert parse_store_url("gs://bucket") == "gs://bucket"
    assert parse_store_url("/srv/models/") == "/srv/models"
    for bad in ("ftp://x", "s3://", "file://relative", "", "hf://a/b"):
        with pytest.raises(BadReferenceError):
            parse_store_url(bad)


def test_store_refs() -> None:
    ref = parse_store_ref("store://s3://b/prod#Qwen/Qwen3-0.6B@abc")
    assert ref == StoreRef("s3://b/prod", "Qwen/Qwen3-0.6B", "abc")
    assert parse_store_ref("store:///srv/models#m") == StoreRef("/srv/models", "m", "latest")
    for bad in ("s3://b#m", "store://s3://b", "store://s3://b#a/versions", "store://s3://b#m@"):
        with pytest.raises(BadReferenceError):
            parse_store_ref(bad)
