"""Where the pool's endpoints come from: the static list plus an ``endpoints_file`` re-read on change."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path

from inferplane.picker.addresses import parse_address_list
from inferplane.picker.endpoints import Datastore

log = logging.getLogger(__name__)


class EndpointSource:
    """Feeds the datastore; calls ``on_change(removed_addresses)`` after the address set changed."""

    def __init__(
        self,
        datastore: Datastore,
        static: list[str],
        file: Path | None = None,
        poll_interval: float = 1.0,
        on_change: Callable[[list[str]], None] | None = None,
    ) -> None:
        self.datastore = datastore
        self.static = list(static)
        self.file = file
        self.poll_interval = poll_interval
        self.on_change = on_change
        self._file_state: tuple[float, int] | None = None
        self._file_addresses: list[str] = []
        self._warned_missing = False
        #: Addresses from a discovery backend (Kubernetes pods), applied with the static list and the file.
        self._discovered: list[str] = []

    def refresh(self) -> bool:
        """Re-read the file if it changed; apply the union to the datastore. True when something changed."""
        if self.file is not None:
            try:
                stat = self.file.stat()
                state = (stat.st_mtime, stat.st_size)
                if state != self._file_state:
                    self._file_addresses = parse_address_list(self.file.read_text())
                    self._file_state = state
            except FileNotFoundError:
                if self._file_state is not None or not self._warned_missing:
                    log.warning("endpoints file %s not found; using only the static endpoints", self.file)
                    self._warned_missing = True
                self._file_state, self._file_addresses = None, []
            except (OSError, ValueError) as exc:
                log.warning("endpoints file %s not applied: %s", self.file, exc)  # keep the last good list
        added, removed = self.datastore.set_addresses([*self.static, *self._file_addresses, *self._discovered])
        if added or removed:
            log.info("endpoints: +%s -%s", [ep.address for ep in added], [ep.address for ep in removed])
            if self.on_change is not None:
                self.on_change([ep.address for ep in removed])
        return bool(added or removed)

    def set_discovered(self, addresses: list[str]) -> bool:
        """Replace the discovered addresses (Kubernetes watch) and apply; True when the pool changed."""
        self._discovered = list(addresses)
        return self.refresh()

    async def watch(self) -> None:
        """Poll the file until cancelled."""
        while True:
            await asyncio.sleep(self.poll_interval)
            self.refresh()
