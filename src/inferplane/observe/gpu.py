"""Accelerator gauges for GPU model servers (torch.cuda), read at scrape time.

Exported only when torch is installed and sees a CUDA device; utilisation needs NVML (``pynvml``)
and is left out without it. Memory is the whole device's, as ``cudaMemGetInfo`` reports it.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


def wants_gpu_metrics(engine: str, device: str) -> bool:
    """Whether a server with this engine and device may run on a CUDA GPU (torch is not imported otherwise)."""
    on_gpu = device.lower().startswith(("cuda", "gpu"))
    return on_gpu and importlib.util.find_spec("torch") is not None


def cuda_devices() -> Any | None:
    """``torch.cuda`` when a CUDA device is usable, else ``None``."""
    try:
        import torch
    except ImportError:
        return None
    return torch.cuda if torch.cuda.is_available() and torch.cuda.device_count() > 0 else None


class GpuCollector(Collector):
    """``inferplane_gpu_utilization``, ``inferplane_gpu_memory_used_bytes``, ``inferplane_gpu_memory_total_bytes``."""

    def __init__(self, cuda: Any) -> None:
        self.cuda = cuda

    def collect(self) -> Iterator[Metric]:
        labels = ["gpu", "name"]
        used = GaugeMetricFamily("inferplane_gpu_memory_used_bytes", "Device memory in use.", labels=labels)
        total = GaugeMetricFamily("inferplane_gpu_memory_total_bytes", "Device memory.", labels=labels)
        util = GaugeMetricFamily("inferplane_gpu_utilization",
                                 "Share of the last sample period a kernel ran (0-1; NVML).", labels=labels)
        have_util = False
        for index in range(self.cuda.device_count()):
            name = self.cuda.get_device_name(index)
            free, size = self.cuda.mem_get_info(index)
            used.add_metric([str(index), name], size - free)
            total.add_metric([str(index), name], size)
            try:
                util.add_metric([str(index), name], self.cuda.utilization(index) / 100.0)
                have_util = True
            except Exception:  # noqa: BLE001, S110 - no NVML (pynvml missing, or its own NVMLError): no utilisation
                pass
        yield used
        yield total
        if have_util:
            yield util
