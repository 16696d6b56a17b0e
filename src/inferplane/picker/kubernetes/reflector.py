"""List-then-watch of one collection into a local cache, surviving dropped watches, 410 Gone and errors."""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from inferplane.picker.kubernetes.client import ApiError, GoneError, KubeClient

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class WatchSettings:
    """Timing of every reflector: server-side watch timeout, exponential backoff bounds."""

    watch_timeout: int = 300
    backoff_initial: float = 0.5
    backoff_max: float = 30.0


DEFAULT_WATCH = WatchSettings()


class Reflector:
    """Keeps ``items`` (name → object) equal to a namespaced collection on the API server.

    Lists once, then watches from the list's resourceVersion. A watch that ends or drops is resumed
    from the last resourceVersion seen (events, and bookmarks on a quiet collection), so the server
    replays whatever happened meanwhile: nothing is lost. 410 Gone (that version was compacted) means
    list again at once. Other errors (network, 5xx, 403, 404 while a CRD is missing) are retried with
    exponential, jittered backoff. ``on_change(self)`` runs after each list and each changing event.
    """

    def __init__(
        self,
        client: KubeClient,
        path: str,
        on_change: Callable[[Reflector], None],
        settings: WatchSettings = DEFAULT_WATCH,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        self.client = client
        self.path = path
        self.on_change = on_change
        self.settings = settings
        self.label_selector = label_selector
        self.field_selector = field_selector
        self.items: dict[str, dict[str, Any]] = {}
        self.resource_version: str | None = None
        #: Set after the first successful list.
        self.synced = asyncio.Event()
        #: How many lists and watch requests were made (observability; tests check relists).
        self.lists = 0
        self.watches = 0
        self._failures = 0
        self._fresh_list = False  # no event since the last list

    def describe(self) -> str:
        selector = self.label_selector or self.field_selector
        return f"{self.path}" + (f" ({selector})" if selector else "")

    async def run(self) -> None:
        """Until cancelled."""
        delay = self.settings.backoff_initial
        while True:
            try:
                if self.resource_version is None:
                    await self._list()
                started, events = time.monotonic(), await self._watch()
                if events == 0 and time.monotonic() - started < 1.0:
                    # The server closed an idle watch at once: do not spin.
                    await asyncio.sleep(self._jitter(delay))
                    delay = min(delay * 2, self.settings.backoff_max)
                else:
                    delay = self.settings.backoff_initial
            except GoneError:
                log.info("%s: resourceVersion %s expired (410 Gone); listing again", self.describe(),
                         self.resource_version)
                if self._fresh_list:  # even the version just listed is gone: do not spin on list + 410
                    await asyncio.sleep(self._jitter(delay))
                    delay = min(delay * 2, self.settings.backoff_max)
                self.resource_version = None
            except Exception as exc:  # network, API status, bad JSON, a malformed object: retry, never die
                self._failures += 1
                level = logging.WARNING if self._failures == 1 or self._failures % 10 == 0 else logging.DEBUG
                expected = isinstance(exc, (ApiError, httpx.HTTPError, ValueError))
                log.log(level, "%s: %s: %s (retry in ~%.1fs)", self.describe(), type(exc).__name__, exc, delay,
                        exc_info=not expected)
                await asyncio.sleep(self._jitter(delay))
                delay = min(delay * 2, self.settings.backoff_max)

    async def _list(self) -> None:
        self.lists += 1
        data = await self.client.list(self.path, self.label_selector, self.field_selector)
        items = data.get("items") or []
        self.items = {item["metadata"]["name"]: item for item in items}
        self.resource_version = str((data.get("metadata") or {}).get("resourceVersion") or "") or None
        if self.resource_version is None:
            raise ApiError(500, "BadResponse", f"list of {self.path} has no metadata.resourceVersion")
        self._recovered()
        self._fresh_list = True
        self.synced.set()
        self._notify()

    async def _watch(self) -> int:
        """Apply events until the server ends the watch; returns how many arrived."""
        assert self.resource_version is not None
        self.watches += 1
        count = 0
        async for event in self.client.watch(
            self.path,
            self.resource_version,
            self.label_selector,
            self.field_selector,
            self.settings.watch_timeout,
        ):
            count += 1
            self._fresh_list = False
            self._recovered()
            self._apply(event["type"], event["object"])
        return count

    def _apply(self, kind: str, obj: dict[str, Any]) -> None:
        metadata = obj.get("metadata") or {}
        version = metadata.get("resourceVersion")
        if version:
            self.resource_version = str(version)
        if kind == "BOOKMARK":
            return
        name = metadata.get("name")
        if not name:
            return
        if kind == "DELETED":
            if self.items.pop(name, None) is None:
                return
        else:
            self.items[name] = obj
        self._notify()

    def _notify(self) -> None:
        """Run ``on_change``; a failing consumer is logged, and must not stop the watch."""
        try:
            self.on_change(self)
        except Exception:
            log.exception("%s: change handler failed", self.describe())

    def _recovered(self) -> None:
        if self._failures:
            log.info("%s: watching again after %d failure(s)", self.describe(), self._failures)
            self._failures = 0

    @staticmethod
    def _jitter(delay: float) -> float:
        return delay * random.uniform(0.5, 1.0)
