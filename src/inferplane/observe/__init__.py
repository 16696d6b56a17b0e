"""Observability: Prometheus for ``inferplane up --observe``, OpenTelemetry tracing, JSON logs, GPU metrics.

Each module has one job: :mod:`.config` (typed settings), :mod:`.logs` (JSON lines with the request
id), :mod:`.tracing` (W3C trace context, GenAI spans, OTLP export), :mod:`.prometheus` (the scrape
config and the Prometheus child process), :mod:`.gpu` (accelerator gauges), :mod:`.batch_metrics`
(the Batch API's ``/metrics``).
"""
