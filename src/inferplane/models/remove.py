"""``rm``: delete a stored version unless it is in use."""

from __future__ import annotations

from inferplane.models.errors import VersionInUseError
from inferplane.models.leases import clear_leases, live_leases
from inferplane.models.store import Store
from inferplane.models.urls import validate_name, validate_version


def remove_version(store: Store, name: str, version: str, *, force: bool = False) -> None:
    """Delete ``name@version``; refuses while a server holds a live lease or ``latest`` points to it.

    ``force`` deletes anyway (and drops the ``latest`` pointer if it pointed there).
    """
    validate_name(name)
    validate_version(version)
    store.read_manifest(name, version)  # NotFoundError for an unknown version
    if not force:
        holders = live_leases(store, name, version)
        if holders:
            who = ", ".join(f"{h.holder} (until {h.expires:%Y-%m-%d %H:%M:%SZ})" for h in holders)
            raise VersionInUseError(f"{name}@{version} is in use by {len(holders)} server(s): {who}")
        if store.latest(name) == version:
            raise VersionInUseError(
                f"{name}@{version} is what 'latest' points to; pull or keep another version first, "
                "or pass --force"
            )
    if store.latest(name) == version:
        store.clear_latest(name)
    store.delete_version(name, version)
    clear_leases(store, name, version)
