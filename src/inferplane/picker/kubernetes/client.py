"""A small async Kubernetes REST client on httpx: get, list and watch (JSON lines) of one collection."""

from __future__ import annotations

from collections.abc import AsyncIterator, Generator
from typing import Any

import httpx
import orjson

from inferplane.picker.kubernetes.cluster import ClusterConfig

WATCH_EVENT_TYPES = frozenset({"ADDED", "MODIFIED", "DELETED", "BOOKMARK"})


class ApiError(Exception):
    """The API server answered with an error status (HTTP status, or a watch ``ERROR`` event)."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}" if message else f"{code} {reason}")
        self.code = code
        self.reason = reason


class GoneError(ApiError):
    """410 Gone: the resourceVersion is too old (compacted); the caller must list again."""


def collection_path(group: str, version: str, plural: str, namespace: str) -> str:
    """``/api/v1/namespaces/ns/pods`` for the core group, ``/apis/group/version/namespaces/ns/plural`` else."""
    prefix = f"/api/{version}" if not group else f"/apis/{group}/{version}"
    return f"{prefix}/namespaces/{namespace}/{plural}"


class _BearerAuth(httpx.Auth):
    """``Authorization: Bearer`` from the cluster config, read per request so a rotated token is used."""

    def __init__(self, cluster: ClusterConfig) -> None:
        self.cluster = cluster

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        token = self.cluster.bearer_token()
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        yield request


def _error(response_code: int, body: bytes) -> ApiError:
    """An ApiError (GoneError for 410) from an HTTP error answer or a ``Status`` object."""
    reason, message, code = "", body.decode(errors="replace")[:500], response_code
    try:
        status = orjson.loads(body)
    except orjson.JSONDecodeError:
        status = None
    if isinstance(status, dict):
        reason, message = str(status.get("reason", "")), str(status.get("message", ""))
        code = int(status.get("code") or response_code)
    return (GoneError if code == 410 else ApiError)(code, reason, message)


class KubeClient:
    """Requests to one API server with the cluster's credentials; ``aclose()`` when done."""

    def __init__(self, cluster: ClusterConfig, request_timeout: float = 10.0) -> None:
        self.cluster = cluster
        self.request_timeout = request_timeout
        self._http = httpx.AsyncClient(
            base_url=cluster.server,
            verify=cluster.ssl_context(),
            auth=_BearerAuth(cluster),
            timeout=httpx.Timeout(request_timeout),
            headers={"Accept": "application/json", "User-Agent": "inferplane-picker"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    async def get(self, path: str, params: dict[str, str] | None = None) -> dict[str, Any]:
        """One object or list; raises ApiError on an error status."""
        response = await self._http.get(path, params=params)
        if response.status_code >= 400:
            raise _error(response.status_code, response.content)
        data = orjson.loads(response.content)
        if not isinstance(data, dict):
            raise ApiError(response.status_code, "BadResponse", f"GET {path}: expected a JSON object")
        return data

    async def list(
        self, path: str, label_selector: str | None = None, field_selector: str | None = None
    ) -> dict[str, Any]:
        """A consistent list (``items`` and ``metadata.resourceVersion``) of a collection."""
        return await self.get(path, _selectors(label_selector, field_selector))

    async def watch(
        self,
        path: str,
        resource_version: str,
        label_selector: str | None = None,
        field_selector: str | None = None,
        timeout_seconds: int = 300,
    ) -> AsyncIterator[dict[str, Any]]:
        """Events after ``resource_version`` (ADDED, MODIFIED, DELETED, BOOKMARK) until the server ends the watch.

        An ``ERROR`` event, or an error status, raises ApiError (GoneError for 410: list again).
        Bookmarks are requested, so the caller's resourceVersion stays fresh on a quiet collection.
        """
        params = _selectors(label_selector, field_selector)
        params.update(
            watch="1",
            resourceVersion=resource_version,
            allowWatchBookmarks="true",
            timeoutSeconds=str(timeout_seconds),
        )
        timeout = httpx.Timeout(self.request_timeout, read=timeout_seconds + self.request_timeout)
        async with self._http.stream("GET", path, params=params, timeout=timeout) as response:
            if response.status_code >= 400:
                raise _error(response.status_code, await response.aread())
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                event = orjson.loads(line)
                kind = event.get("type") if isinstance(event, dict) else None
                if kind == "ERROR":
                    status = event.get("object") or {}
                    raise _error(int(status.get("code") or 500), orjson.dumps(status))
                if kind not in WATCH_EVENT_TYPES or not isinstance(event.get("object"), dict):
                    raise ApiError(500, "BadWatchEvent", f"unexpected watch event {line[:200]!r}")
                yield event


def _selectors(label_selector: str | None, field_selector: str | None) -> dict[str, str]:
    params: dict[str, str] = {}
    if label_selector:
        params["labelSelector"] = label_selector
    if field_selector:
        params["fieldSelector"] = field_selector
    return params
