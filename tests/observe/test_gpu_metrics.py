"""GPU gauges: exported only for GPU servers that torch sees; the exposition format of the gauges.

No GPU on the CI machine: the collector is fed a stand-in for ``torch.cuda`` (device count, name,
``mem_get_info``, ``utilization``) to check what Prometheus would read.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest

from inferplane.observe.gpu import GpuCollector, cuda_devices, wants_gpu_metrics


class _FakeCuda:
    def __init__(self, nvml: bool = True) -> None:
        self.nvml = nvml

    def device_count(self) -> int:
        return 2

    def get_device_name(self, index: int) -> str:
        return "NVIDIA H100 80GB HBM3"

    def mem_get_info(self, index: int) -> tuple[int, int]:
        return (60 << 30, 80 << 30)

    def utilization(self, index: int) -> int:
        if not self.nvml:
            raise ModuleNotFoundError("pynvml")
        return 40 + index


def test_cpu_servers_never_look_for_a_gpu() -> None:
    assert not wants_gpu_metrics("openvino", "CPU")
    assert not wants_gpu_metrics("sim", "CPU")


def test_no_cuda_device_here_means_no_gauges() -> None:
    assert cuda_devices() is None  # CI machines have no GPU; on a GPU server this is torch.cuda


def test_gauges_per_device() -> None:
    registry = CollectorRegistry()
    registry.register(GpuCollector(_FakeCuda()))
    assert registry.get_sample_value("inferplane_gpu_memory_used_bytes", {"gpu": "1", "name": "NVIDIA H100 80GB HBM3"}) == 20 << 30
    assert registry.get_sample_value("inferplane_gpu_memory_total_bytes", {"gpu": "0", "name": "NVIDIA H100 80GB HBM3"}) == 80 << 30
    assert registry.get_sample_value("inferplane_gpu_utilization", {"gpu": "1", "name": "NVIDIA H100 80GB HBM3"}) == 0.41


def test_without_nvml_utilisation_is_left_out() -> None:
    registry = CollectorRegistry()
    registry.register(GpuCollector(_FakeCuda(nvml=False)))
    text = generate_latest(registry).decode()
    assert "inferplane_gpu_memory_used_bytes" in text and "inferplane_gpu_utilization" not in text
