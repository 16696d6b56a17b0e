"""A small synchronous client of the Batch API, for the CLI."""

from __future__ import annotations

from typing import Any

import httpx


class APIError(Exception):
    """An error answer (OpenAI error JSON) or an unreachable server; the message is for the user."""


class BatchClient:
    def __init__(self, base_url: str, timeout_s: float = 60.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, self.base_url + path, **kwargs)
        except httpx.HTTPError as exc:
            raise APIError(f"cannot reach the batch API at {self.base_url}: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:500]
            raise APIError(f"{response.status_code}: {message}")
        return response

    def upload(self, name: str, data: bytes) -> dict[str, Any]:
        return self._call("POST", "/files", files={"file": (name, data, "application/jsonl")},
                          data={"purpose": "batch"}).json()

    def create(self, file_id: str, endpoint: str, window: str, metadata: dict[str, str] | None) -> dict[str, Any]:
        return self._call("POST", "/batches", json={"input_file_id": file_id, "endpoint": endpoint,
                                                    "completion_window": window, "metadata": metadata}).json()

    def get(self, batch_id: str) -> dict[str, Any]:
        return self._call("GET", f"/batches/{batch_id}").json()

    def list(self, limit: int) -> list[dict[str, Any]]:
        return self._call("GET", "/batches", params={"limit": limit}).json()["data"]

    def cancel(self, batch_id: str) -> dict[str, Any]:
        return self._call("POST", f"/batches/{batch_id}/cancel").json()

    def content(self, file_id: str) -> bytes:
        return self._call("GET", f"/files/{file_id}/content").content
