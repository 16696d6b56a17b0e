"""Reading the components the console shows: the picker's debug views, the Batch API, Envoy's admin stats.

Each read returns its document or an error message; a component that is down shows as such in
the page instead of breaking it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx

from inferplane.console.config import ConsoleConfig

#: Envoy's listener counters (``stat_prefix: inference_gateway``: every route, the console's own
#: polls included) and the requests sent to the pool's clusters (inference only).
GATEWAY_STATS = (r"^(http\.inference_gateway\.downstream_rq_(total|active|[2345]xx)"
                 r"|cluster\.(inference_pool(_[^.]+)?|original_destination_cluster)\.upstream_rq_total)$")
POOL_REQUESTS = "cluster.inference_pool.upstream_rq_total"


@dataclass(slots=True)
class Reading:
    """One read of one source: the JSON document, or why there is none."""

    data: Any = None
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


class Sources:
    """HTTP reads of every configured source, sharing one client."""

    def __init__(self, config: ConsoleConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.client = client or httpx.AsyncClient(timeout=config.timeout_s)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def _json(self, url: str, params: dict[str, Any] | None = None) -> Reading:
        try:
            response = await self.client.get(url, params=params)
        except httpx.HTTPError as exc:
            return Reading(error=f"{url}: {type(exc).__name__} {exc}".strip())
        if response.status_code != 200:
            return Reading(error=f"{url}: HTTP {response.status_code}")
        try:
            return Reading(response.json())
        except ValueError:
            return Reading(error=f"{url}: the answer is not JSON")

    async def picker_state(self) -> Reading:
        return await self._json(f"{self.config.picker_url}/debug/state")

    async def decisions(self) -> Reading:
        return await self._json(f"{self.config.picker_url}/debug/decisions", {"limit": self.config.decisions})

    async def batches(self) -> Reading:
        if self.config.batch_url is None:
            return Reading(error="no Batch API configured")
        reading = await self._json(f"{self.config.batch_url}/v1/batches", {"limit": self.config.batches})
        if reading.ok:
            reading.data = [_batch_row(b) for b in (reading.data or {}).get("data", [])]
        return reading

    async def gateway(self) -> Reading:
        """Envoy's counters as ``{name: value}``: ``downstream_rq_total``, ``downstream_rq_5xx``… of the listener,
        ``cluster.inference_pool.upstream_rq_total`` of the pool (with several pools, the sum of their
        ``cluster.inference_pool_<name>`` clusters, which are listed too)."""
        if self.config.envoy_admin_url is None:
            return Reading(error="no Envoy admin configured")
        reading = await self._json(f"{self.config.envoy_admin_url}/stats",
                                   {"format": "json", "filter": GATEWAY_STATS})
        if reading.ok:
            stats = (reading.data or {}).get("stats", [])
            reading.data = {
                s["name"].removeprefix("http.inference_gateway."): s["value"]
                for s in stats
                if isinstance(s, dict) and "name" in s and "value" in s
            }
            pools = [value for name, value in reading.data.items()
                     if name.startswith("cluster.inference_pool_") and name.endswith(".upstream_rq_total")]
            if pools and POOL_REQUESTS not in reading.data:  # several pools (`up` with `pools:`): their sum
                reading.data[POOL_REQUESTS] = sum(pools)
        return reading


def _batch_row(batch: dict[str, Any]) -> dict[str, Any]:
    """The fields of an OpenAI batch object the console shows."""
    counts = batch.get("request_counts") or {}
    return {
        "id": batch.get("id", ""),
        "status": batch.get("status", ""),
        "endpoint": batch.get("endpoint", ""),
        "created_at": batch.get("created_at"),
        "total": counts.get("total", 0),
        "completed": counts.get("completed", 0),
        "failed": counts.get("failed", 0),
    }
