"""The Grafana dashboards shipped in ``deploy/grafana/`` (pool, picker, jobs), generated from one table.

Run ``python -m inferplane.observe.dashboards deploy/grafana`` after changing a panel; a test checks
the committed files are current and evaluates every expression against a running Prometheus.
Metric names are the ones the components export (vLLM names on model servers, GIE names on the
picker, ``inferplane_*`` for jobs, Envoy's ``envoy_*``).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RATE = "$__rate_interval"
GATEWAY = 'envoy_http_conn_manager_prefix="inference_gateway"'


@dataclass
class Panel:
    """One time-series (or stat) panel: a title, a unit and its PromQL targets as (legend, expr)."""

    title: str
    targets: list[tuple[str, str]]
    unit: str = "short"
    kind: str = "timeseries"
    description: str = ""


@dataclass
class Dashboard:
    uid: str
    title: str
    description: str
    rows: list[tuple[str, list[Panel]]] = field(default_factory=list)


def quantiles(metric: str, by: str = "", scale: str = "") -> list[tuple[str, str]]:
    """p50 / p90 / p99 of a histogram, summed over every series (or per ``by`` label)."""
    labels = f"le{', ' + by if by else ''}"
    legend_suffix = f" {{{{{by}}}}}" if by else ""
    return [(f"p{int(q * 100)}{legend_suffix}",
             f"histogram_quantile({q}, sum by ({labels}) (rate({metric}_bucket[{RATE}]))){scale}")
            for q in (0.5, 0.9, 0.99)]


def rate(metric: str, by: str = "", selector: str = "") -> str:
    grouping = f"sum by ({by}) " if by else "sum "
    return f"{grouping}(rate({metric}{{{selector}}}[{RATE}]))" if selector else f"{grouping}(rate({metric}[{RATE}]))"


POOL = Dashboard(
    "inferplane-pool", "inferplane / pool",
    "Traffic, latency, errors and load of the model servers behind the gateway.",
    [
        ("Traffic", [
            Panel("Gateway requests per second", [("requests/s", rate("envoy_http_downstream_rq_total", selector=GATEWAY))], "reqps"),
            Panel("Gateway responses by class", [("{{envoy_response_code_class}}xx", rate(
                "envoy_http_downstream_rq_xx", "envoy_response_code_class", GATEWAY))], "reqps"),
            Panel("Gateway error rate (5xx share)", [("5xx share", (
                f'sum(rate(envoy_http_downstream_rq_xx{{{GATEWAY}, envoy_response_code_class="5"}}[{RATE}])) / '
                f"clamp_min(sum(rate(envoy_http_downstream_rq_total{{{GATEWAY}}}[{RATE}])), 1e-9)"))], "percentunit"),
            Panel("Finished requests per endpoint", [("{{instance}}", rate("vllm:request_success_total", "instance"))], "reqps"),
            Panel("Finish reasons", [("{{finished_reason}}", rate("vllm:request_success_total", "finished_reason"))], "reqps"),
            Panel("Picker errors by code", [("{{error_code}}", rate("inference_objective_request_error_total", "error_code"))], "reqps"),
        ]),
        ("Latency", [
            Panel("Time to first token", quantiles("vllm:time_to_first_token_seconds"), "s"),
            Panel("End-to-end request latency (server)", quantiles("vllm:e2e_request_latency_seconds"), "s"),
            Panel("Inter-token latency", quantiles("vllm:inter_token_latency_seconds"), "s"),
            Panel("Gateway request time", quantiles("envoy_http_downstream_rq_time", scale=" / 1000"), "s",
                  description="Envoy's downstream request time (milliseconds in Envoy, shown in seconds)."),
        ]),
        ("Load per endpoint", [
            Panel("KV-cache use", [("{{instance}}", "max by (instance) (vllm:kv_cache_usage_perc)")], "percentunit"),
            Panel("Waiting requests (queue)", [("{{instance}}", "sum by (instance) (vllm:num_requests_waiting)")]),
            Panel("Running requests", [("{{instance}}", "sum by (instance) (vllm:num_requests_running)")]),
            Panel("Output tokens per second", [("{{instance}}", rate("vllm:generation_tokens_total", "instance"))]),
            Panel("Prompt tokens per second", [("{{instance}}", rate("vllm:prompt_tokens_total", "instance"))]),
            Panel("Prefix-cache hit rate", [("{{instance}}", (
                f"sum by (instance) (rate(vllm:prefix_cache_hits_total[{RATE}])) / "
                f"clamp_min(sum by (instance) (rate(vllm:prefix_cache_queries_total[{RATE}])), 1)"))], "percentunit"),
            Panel("Ready endpoints", [("{{name}}", "inference_pool_ready_pods")], kind="stat"),
        ]),
        ("Accelerators (GPU servers only)", [
            Panel("GPU utilisation", [("{{instance}} gpu {{gpu}}", "inferplane_gpu_utilization")], "percentunit"),
            Panel("GPU memory used", [("{{instance}} gpu {{gpu}}", (
                "inferplane_gpu_memory_used_bytes / inferplane_gpu_memory_total_bytes"))], "percentunit"),
        ]),
    ],
)

PICKER = Dashboard(
    "inferplane-picker", "inferplane / endpoint picker",
    "Scheduling decisions and latency, flow control and pool saturation of the endpoint picker.",
    [
        ("Decisions", [
            Panel("Scheduling decisions per second", [("decisions/s", rate("inference_extension_scheduler_e2e_duration_seconds_count"))], "ops"),
            Panel("Requests per model", [("{{model_name}} → {{target_model_name}}", rate(
                "inference_objective_request_total", "model_name, target_model_name"))], "reqps"),
            Panel("Requests per objective and tenant", [("{{objective}} / {{fairness_id}}", rate(
                "inferplane_picker_objective_requests_total", "objective, fairness_id"))], "reqps"),
            Panel("Tokens per objective and tenant", [("{{objective}} / {{fairness_id}} {{direction}}", rate(
                "inferplane_picker_objective_tokens_total", "objective, fairness_id, direction"))]),
            Panel("Requests in flight", [("{{model_name}}", "sum by (model_name) (inference_objective_running_requests)")]),
        ]),
        ("Latency", [
            Panel("Scheduling latency", quantiles("inference_extension_scheduler_e2e_duration_seconds"), "s"),
            Panel("Plugin latency (p99)", [("{{plugin_type}} {{plugin_name}}", (
                "histogram_quantile(0.99, sum by (le, plugin_type, plugin_name) "
                f"(rate(inference_extension_plugin_duration_seconds_bucket[{RATE}])))"))], "s"),
            Panel("Request duration through the picker", quantiles("inference_objective_request_duration_seconds"), "s"),
            Panel("Input tokens per request", quantiles("inference_objective_input_tokens")),
            Panel("Output tokens per request", quantiles("inference_objective_output_tokens")),
        ]),
        ("Flow control and saturation", [
            Panel("Pool saturation", [("{{inference_pool}}", "inference_extension_flow_control_pool_saturation")], "percentunit"),
            Panel("Pool average KV-cache use", [("{{name}}", "inference_pool_average_kv_cache_utilization")], "percentunit"),
            Panel("Pool average queue", [("{{name}}", "inference_pool_average_queue_size")]),
            Panel("Queue per endpoint", [("{{model_server_pod}}", "inference_pool_per_pod_queue_size")]),
            Panel("Flow-control queue size per band", [("priority {{priority}}", (
                "sum by (priority) (inference_extension_flow_control_queue_size)"))]),
            Panel("Flow-control queue bytes per band", [("priority {{priority}}", (
                "sum by (priority) (inference_extension_flow_control_queue_bytes)"))], "bytes"),
            Panel("Time queued (p99) by outcome", [("{{outcome}}", (
                "histogram_quantile(0.99, sum by (le, outcome) "
                f"(rate(inference_extension_flow_control_request_queue_duration_seconds_bucket[{RATE}])))"))], "s"),
            Panel("Sheddings and drops", [("{{reason}} (priority {{priority}})", rate(
                "inferplane_picker_dropped_requests_total", "reason, priority"))], "reqps"),
            Panel("Model rewrites", [("{{model_name}} → {{target_model}}", rate(
                "inference_extension_model_rewrite_decisions_total", "model_name, target_model"))], "reqps"),
        ]),
    ],
)

JOBS = Dashboard(
    "inferplane-jobs", "inferplane / batch and async jobs",
    "Batch API progress and the async processor's backlog, age and outcomes.",
    [
        ("Batch API", [
            Panel("Batches by status", [("{{status}}", "sum by (status) (inferplane_batch_batches)")]),
            Panel("Batch progress (active batches)", [("{{batch_id}}", (
                'sum by (batch_id) (inferplane_batch_requests{state=~"completed|failed"}) / '
                'clamp_min(sum by (batch_id) (inferplane_batch_requests{state="total"}), 1)'))], "percentunit"),
            Panel("Batch requests answered per second", [("{{outcome}}", rate("inferplane_batch_request_results_total", "outcome"))], "reqps"),
            Panel("Batch requests pending", [("pending", "sum(inferplane_batch_pending_requests)")]),
            Panel("Batch traffic at the picker", [("{{objective}}", rate(
                "inferplane_picker_objective_requests_total", "objective", 'objective="batch"'))], "reqps"),
        ]),
        ("Async processor", [
            Panel("Async backlog", [("backlog", "sum(inferplane_async_backlog_messages)"),
                                   ("delivered, not acknowledged", "sum(inferplane_async_pending_messages)")]),
            Panel("Oldest message age", [("oldest", "max(inferplane_async_oldest_message_age_seconds)")], "s"),
            Panel("Messages in flight", [("{{instance}}", "sum by (instance) (inferplane_async_in_flight_messages)")]),
            Panel("Spare-capacity gate open", [("{{instance}}", "max by (instance) (inferplane_async_gate_open)")]),
            Panel("Async outcomes", [("{{outcome}}", rate("inferplane_async_results_total", "outcome"))], "ops"),
            Panel("Async retries", [("{{reason}}", rate("inferplane_async_retries_total", "reason"))], "ops"),
        ]),
    ],
)

DASHBOARDS = {"pool": POOL, "picker": PICKER, "jobs": JOBS}


def render(dashboard: Dashboard) -> dict[str, Any]:
    """The importable Grafana dashboard JSON (datasource chosen by the ``datasource`` variable)."""
    datasource = {"type": "prometheus", "uid": "${datasource}"}
    panels: list[dict[str, Any]] = []
    y = 0
    next_id = 1
    for row_title, row_panels in dashboard.rows:
        panels.append({"type": "row", "title": row_title, "id": next_id, "collapsed": False,
                       "gridPos": {"h": 1, "w": 24, "x": 0, "y": y}, "panels": []})
        next_id += 1
        y += 1
        for i, panel in enumerate(row_panels):
            panels.append({
                "type": panel.kind,
                "title": panel.title,
                "description": panel.description,
                "id": next_id,
                "datasource": datasource,
                "gridPos": {"h": 8, "w": 8, "x": (i % 3) * 8, "y": y + (i // 3) * 8},
                "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
                "options": {"legend": {"displayMode": "list", "placement": "bottom"}} if panel.kind == "timeseries"
                else {"reduceOptions": {"calcs": ["lastNotNull"]}},
                "targets": [{"refId": chr(ord("A") + j), "datasource": datasource, "expr": expr,
                             "legendFormat": legend} for j, (legend, expr) in enumerate(panel.targets)],
            })
            next_id += 1
        y += ((len(row_panels) + 2) // 3) * 8
    return {
        "uid": dashboard.uid,
        "title": dashboard.title,
        "description": dashboard.description,
        "tags": ["inferplane"],
        "timezone": "browser",
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "refresh": "10s",
        "time": {"from": "now-30m", "to": "now"},
        "templating": {"list": [{"name": "datasource", "label": "Prometheus", "type": "datasource",
                                 "query": "prometheus", "current": {}, "hide": 0}]},
        "annotations": {"list": []},
        "panels": panels,
    }


def expressions(document: dict[str, Any]) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every target of a rendered dashboard."""
    return [(panel["title"], target["expr"]) for panel in document["panels"] for target in panel.get("targets", [])]


def write_all(directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for name, dashboard in DASHBOARDS.items():
        path = directory / f"{name}.json"
        path.write_text(json.dumps(render(dashboard), indent=2) + "\n")
        paths.append(path)
    return paths


if __name__ == "__main__":
    for written in write_all(Path(sys.argv[1] if len(sys.argv) > 1 else "deploy/grafana")):
        print(written)
