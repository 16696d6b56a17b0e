"""``inferplane up`` picks the picker's profile by the replicas' engine unless the configuration names one."""

from __future__ import annotations

from pathlib import Path

from inferplane.up import PlatformConfig, plan


def scorer_types(config: PlatformConfig, tmp_path: Path) -> list[str]:
    return [spec.type for spec in plan(config, tmp_path).picker.profile.scorers]


def test_cpu_replicas_add_the_in_flight_count(tmp_path: Path) -> None:
    assert "in-flight-scorer" in scorer_types(PlatformConfig(), tmp_path)


def test_simulated_gpu_replicas_keep_the_general_default(tmp_path: Path) -> None:
    assert "in-flight-scorer" not in scorer_types(PlatformConfig(server={"engine": "sim"}), tmp_path)


def test_a_configured_profile_wins(tmp_path: Path) -> None:
    config = PlatformConfig(picker={"profile": {"scorers": [{"type": "queue-scorer", "weight": 1}]}})
    assert scorer_types(config, tmp_path) == ["queue-scorer"]
