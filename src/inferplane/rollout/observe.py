"""Per-target numbers of a rollout, read from the picker's Prometheus metrics.

Series (GIE names, labels ``model_name`` = the model the client asked for, ``target_model_name`` =
the model after the rewrite): ``inference_objective_request_total`` (requests sent to a model
server), ``inference_objective_request_error_total{error_code}`` (failed requests: server errors,
and requests the picker refused, which never reach the request counter) and
``inference_objective_request_ttft_seconds`` (histogram).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field

import httpx
from prometheus_client.parser import text_string_to_metric_families

from inferplane.rollout.gate import TargetStats, histogram_quantile

REQUESTS = "inference_objective_request_total"
ERRORS = "inference_objective_request_error_total"
TTFT_BUCKET = "inference_objective_request_ttft_seconds_bucket"
#: Error code of failures the model server answered (counted in REQUESTS too).
SERVER_ERROR = "ModelServerError"


class MetricsUnavailable(Exception):
    """The picker's metrics could not be read; the message is for the user."""


@dataclass
class Counts:
    """Cumulative counters of one (model, target) pair."""

    scheduled: float = 0.0
    server_errors: float = 0.0
    refused: float = 0.0
    ttft_buckets: dict[float, float] = field(default_factory=dict)

    def minus(self, earlier: Counts) -> Counts:
        """The counts since ``earlier`` (everything, when a counter went down: the picker restarted)."""
        if self.scheduled < earlier.scheduled or self.refused < earlier.refused:
            return self
        return Counts(
            self.scheduled - earlier.scheduled,
            self.server_errors - earlier.server_errors,
            self.refused - earlier.refused,
            {le: count - earlier.ttft_buckets.get(le, 0.0) for le, count in self.ttft_buckets.items()},
        )

    def stats(self) -> TargetStats:
        buckets = list(self.ttft_buckets.items())
        samples = max((count for le, count in buckets if math.isinf(le)), default=0.0)
        return TargetStats(
            requests=self.scheduled + self.refused,
            errors=self.server_errors + self.refused,
            ttft_p90=histogram_quantile(0.9, buckets),
            ttft_samples=samples,
        )


#: (requested model, target model) -> counts
Snapshot = dict[tuple[str, str], Counts]


def parse_snapshot(text: str) -> Snapshot:
    """The rollout counters of a Prometheus text page."""
    snapshot: Snapshot = defaultdict(Counts)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            labels = sample.labels
            key = (labels.get("model_name", ""), labels.get("target_model_name", ""))
            if sample.name == REQUESTS:
                snapshot[key].scheduled += sample.value
            elif sample.name == ERRORS:
                if labels.get("error_code") == SERVER_ERROR:
                    snapshot[key].server_errors += sample.value
                else:
                    snapshot[key].refused += sample.value
            elif sample.name == TTFT_BUCKET:
                snapshot[key].ttft_buckets[float(labels["le"])] = sample.value
    return dict(snapshot)


def fetch_snapshot(metrics_url: str, timeout_s: float = 5.0) -> Snapshot:
    """Scrape the picker's ``/metrics``."""
    try:
        response = httpx.get(metrics_url, timeout=timeout_s)
        response.raise_for_status()
    except httpx.HTTPError as exc:
        raise MetricsUnavailable(f"cannot read the picker's metrics at {metrics_url}: {exc}") from None
    return parse_snapshot(response.text)


def target_stats(snapshot: Snapshot, model: str, target: str) -> TargetStats:
    return snapshot.get((model, target), Counts()).stats()


def window(before: Snapshot, after: Snapshot, model: str, target: str) -> TargetStats:
    """One target's numbers between two snapshots."""
    key = (model, target)
    return after.get(key, Counts()).minus(before.get(key, Counts())).stats()
