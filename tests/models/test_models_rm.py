"""``rm`` refuses to delete a version in use; servers mark use with leases."""

from __future__ import annotations

import json
import threading
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from models_support import make_version

from inferplane.models.errors import NotFoundError, VersionInUseError
from inferplane.models.leases import acquire_lease, live_leases
from inferplane.models.loader import load_model
from inferplane.models.remove import remove_version
from inferplane.models.store import Store


@pytest.fixture
def store(store_dir: Path) -> Store:
    store = Store(str(store_dir))
    make_version(store, "org/m", "v1", {"w.bin": b"one"})
    make_version(store, "org/m", "v2", {"w.bin": b"two"})
    store.set_latest("org/m", "v2")
    return store


def test_rm_refuses_a_leased_version_until_the_lease_is_released(store: Store) -> None:
    lease = acquire_lease(store, "org/m", "v1", holder="pod-a")
    with pytest.raises(VersionInUseError, match=r"org/m@v1 is in use by 1 server\(s\): pod-a"):
        remove_version(store, "org/m", "v1")
    assert store.versions("org/m") == ["v1", "v2"]
    lease.release()
    remove_version(store, "org/m", "v1")
    assert store.versions("org/m") == ["v2"]
    assert not (Path(store.root) / "org/m/leases/v1").exists()


def test_expired_lease_does_not_block(store: Store, store_dir: Path) -> None:
    stale = store_dir / "org/m/leases/v1/crashed-pod.json"
    stale.parent.mkdir(parents=True)
    past = datetime.now(timezone.utc) - timedelta(seconds=1)
    stale.write_text(json.dumps({"holder": "crashed-pod", "expires": past.isoformat()}))
    assert live_leases(store, "org/m", "v1") == []
    remove_version(store, "org/m", "v1")
    assert store.versions("org/m") == ["v2"]


def test_rm_refuses_latest_unless_forced(store: Store) -> None:
    with pytest.raises(VersionInUseError, match="'latest' points to"):
        remove_version(store, "org/m", "v2")
    acquire_lease(store, "org/m", "v2")
    remove_version(store, "org/m", "v2", force=True)
    assert store.latest("org/m") is None and store.versions("org/m") == ["v1"]
    with pytest.raises(NotFoundError):
        remove_version(store, "org/m", "v2")


def test_load_model_holds_a_renewed_lease(store: Store, store_dir: Path, tmp_path: Path) -> None:
    loaded = load_model(f"store://{store_dir}#org/m", tmp_path / "cache", lease_ttl_s=1.5)
    assert (loaded.path / "w.bin").read_bytes() == b"two"
    assert loaded.manifest.version == "v2"
    time.sleep(2.0)  # longer than the TTL: only renewal keeps it live
    assert [lease.holder for lease in live_leases(store, "org/m", "v2")] == [loaded.lease.holder]
    with pytest.raises(VersionInUseError, match="in use"):
        remove_version(store, "org/m", "v2", force=False)
    loaded.release()
    assert live_leases(store, "org/m", "v2") == []


def test_a_lease_being_renewed_never_reads_as_expired(store: Store) -> None:
    # Renewal rewrites the lease file; a reader at that moment (``models rm``) must still see it live.
    lease = acquire_lease(store, "org/m", "v1", holder="pod-a")
    stop = threading.Event()

    def renew_again_and_again() -> None:
        while not stop.is_set():
            lease.renew()

    renewer = threading.Thread(target=renew_again_and_again)
    renewer.start()
    try:
        seen = [len(live_leases(store, "org/m", "v1")) for _ in range(300)]
    finally:
        stop.set()
        renewer.join()
    assert set(seen) == {1}
    lease.release()
