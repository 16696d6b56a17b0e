"""The Batch API's ``/metrics``: batches by status and per-batch progress, read from the store at scrape time."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import generate_latest
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
STATUSES = ("validating", "failed", "in_progress", "finalizing", "completed", "expired", "cancelling", "cancelled")


async def collect(store: Any) -> list[Metric]:
    """The batch metric families, from the database."""
    batches = GaugeMetricFamily("inferplane_batch_batches", "Batches by status.", labels=["status"])
    by_status = {status: 0 for status in STATUSES}
    for status, count in await store.db.fetch("SELECT status, COUNT(*) FROM batches GROUP BY status"):
        by_status[status] = int(count)
    for status, count in by_status.items():
        batches.add_metric([status], count)
    results = CounterMetricFamily("inferplane_batch_request_results", "Batch requests finished, by outcome.",
                                  labels=["outcome"])
    done = {"completed": 0, "failed": 0}
    pending = 0
    for state, is_error, count in await store.db.fetch(
            "SELECT state, is_error, COUNT(*) FROM requests GROUP BY state, is_error"):
        if state == "done":
            done["failed" if int(is_error) else "completed"] += int(count)
        else:
            pending += int(count)
    for outcome, count in done.items():
        results.add_metric([outcome], count)
    pending_gauge = GaugeMetricFamily("inferplane_batch_pending_requests", "Batch requests not yet answered.",
                                      value=pending)
    progress = GaugeMetricFamily("inferplane_batch_requests",
                                 "Requests of each active batch: total, completed, failed.",
                                 labels=["batch_id", "state"])
    for batch_id, _status in await store.active_batch_ids():
        counts = await store.counts(batch_id)
        for state in ("total", "completed", "failed"):
            progress.add_metric([batch_id, state], counts[state])
    return [batches, results, pending_gauge, progress]


class _Families:
    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> list[Metric]:
        return self.families


def metrics_route(store: Callable[[], Any]) -> Route:
    """``GET /metrics`` for the Batch API; ``store()`` returns the open store (None before start-up)."""

    async def metrics(request: Request) -> Response:
        current = store()
        families = await collect(current) if current is not None else []
        return Response(generate_latest(_Families(families)), media_type=CONTENT_TYPE)  # type: ignore[arg-type]

    return Route("/metrics", metrics, methods=["GET"])
