"""Leases: how a server marks a stored version "in use" so ``models rm`` refuses to delete it.

A server that loads ``NAME@VERSION`` writes ``NAME/leases/VERSION/HOLDER.json`` in the store with
an expiry time, renews it every third of its time-to-live while the model stays loaded, and
deletes it on shutdown. A lease whose expiry has passed (a crashed server) no longer counts.
"""

from __future__ import annotations

import json
import os
import socket
import threading
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from inferplane.models.store import Store
from inferplane.models.urls import validate_name, validate_version

DEFAULT_TTL_S = 120.0


@dataclass(frozen=True)
class LeaseInfo:
    """A lease as read from the store."""

    holder: str
    expires: datetime
    host: str = ""
    pid: int = 0

    def live(self, now: datetime | None = None) -> bool:
        return self.expires > (now or datetime.now(timezone.utc))


def _lease_dir(store: Store, name: str, version: str) -> str:
    return store.path(validate_name(name), "leases", validate_version(version))


def read_leases(store: Store, name: str, version: str) -> list[LeaseInfo]:
    """Every lease file of a version, live or expired; unreadable files count as expired."""
    store.fs.invalidate_cache()
    leases = []
    for path in store.fs.glob(f"{_lease_dir(store, name, version)}/*.json"):
        holder = path.rstrip("/").rsplit("/", 1)[-1][: -len(".json")]
        try:
            raw = json.loads(store.fs.cat_file(path))
            leases.append(
                LeaseInfo(
                    holder=holder,
                    expires=datetime.fromisoformat(raw["expires"]),
                    host=str(raw.get("host", "")),
                    pid=int(raw.get("pid", 0)),
                )
            )
        except (FileNotFoundError, ValueError, KeyError, TypeError):
            leases.append(LeaseInfo(holder=holder, expires=datetime.min.replace(tzinfo=timezone.utc)))
    return leases


def live_leases(store: Store, name: str, version: str) -> list[LeaseInfo]:
    now = datetime.now(timezone.utc)
    return [lease for lease in read_leases(store, name, version) if lease.live(now)]


def clear_leases(store: Store, name: str, version: str) -> None:
    try:
        store.fs.rm(_lease_dir(store, name, version), recursive=True)
    except FileNotFoundError:
        pass


@dataclass
class Lease:
    """A lease held by this process; ``start()`` keeps it renewed from a daemon thread."""

    store: Store
    name: str
    version: str
    ttl_s: float = DEFAULT_TTL_S
    holder: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")
    _stop: threading.Event = field(default_factory=threading.Event, repr=False)
    _thread: threading.Thread | None = field(default=None, repr=False)

    @property
    def path(self) -> str:
        return f"{_lease_dir(self.store, self.name, self.version)}/{self.holder}.json"

    def renew(self) -> None:
        """Write (or rewrite) the lease with a fresh expiry, atomically: a reader never sees a partial
        file, which would count as expired."""
        expires = datetime.now(timezone.utc) + timedelta(seconds=self.ttl_s)
        body = {"holder": self.holder, "host": socket.gethostname(), "pid": os.getpid(),
                "expires": expires.isoformat()}
        self.store.write_atomic(self.path, json.dumps(body).encode())

    def start(self) -> "Lease":
        """Renew every ``ttl_s / 3`` seconds until ``release()``."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._keep, name=f"lease-{self.name}", daemon=True)
            self._thread.start()
        return self

    def _keep(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            try:
                self.renew()
            except Exception:  # a transient store error must not kill the server; retry next tick
                pass

    def release(self) -> None:
        """Stop renewing and delete the lease file."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.fs.rm_file(self.path)
        except FileNotFoundError:
            pass

    def __enter__(self) -> "Lease":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def acquire_lease(store: Store, name: str, version: str, ttl_s: float = DEFAULT_TTL_S,
                  holder: str | None = None) -> Lease:
    """Write a lease on ``name@version`` (a concrete version) and return it, not yet auto-renewing."""
    lease = Lease(store=store, name=name, version=version, ttl_s=ttl_s)
    if holder:
        lease.holder = validate_version(holder)
    lease.renew()
    return lease
