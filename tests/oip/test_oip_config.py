"""Model and server configuration: errors name the bad field."""

from pathlib import Path

import pytest
import yaml

from inferplane.configfile import ConfigError
from inferplane.oip.config import (
    DynamicBatching,
    VersionPolicy,
    load_model_config,
    load_oip_config,
)


def write(tmp_path: Path, config: dict) -> Path:
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "m"


def test_bad_field_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_model_config(write(tmp_path, {"runtime": "sklearn", "max_batch_size": -1}))
    assert "max_batch_size" in str(info.value)


def test_unknown_runtime_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_model_config(write(tmp_path, {"runtime": "tensorflow"}))
    assert "runtime" in str(info.value)


def test_dynamic_batching_needs_a_batch_size(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_model_config(write(tmp_path, {"runtime": "onnx", "dynamic_batching": {}}))
    assert "max_batch_size" in str(info.value)


def test_preferred_sizes_fit_max_batch(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="preferred_batch_sizes"):
        load_model_config(write(tmp_path, {"runtime": "onnx", "max_batch_size": 8, "dynamic_batching": {"preferred_batch_sizes": [16]}}))


def test_version_policies() -> None:
    assert VersionPolicy().select([3, 1, 2]) == [3]
    assert VersionPolicy.model_validate({"latest": {"num_versions": 2}}).select([3, 1, 2]) == [2, 3]
    assert VersionPolicy.model_validate({"specific": {"versions": [1, 3]}}).select([1, 2, 3]) == [1, 3]
    assert VersionPolicy.model_validate({"all": {}}).select([2, 1]) == [1, 2]


def test_priority_levels_map_out_of_range_to_default() -> None:
    batching = DynamicBatching(priority_levels=3, default_priority_level=2)
    assert batching.level_of(1) == 1
    assert batching.level_of(0) == 2
    assert batching.level_of(9) == 2


def test_server_config_needs_a_repository(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="repository"):
        load_oip_config(None, {})
    with pytest.raises(ConfigError, match="repository"):
        load_oip_config(None, {"repository": str(tmp_path / "missing")})


def test_server_config_section_oip(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump({"oip": {"repository": str(tmp_path), "port": 9000, "grpc_port": "x"}}))
    with pytest.raises(ConfigError) as info:
        load_oip_config(str(path), {})
    assert "grpc_port" in str(info.value)
    path.write_text(yaml.safe_dump({"oip": {"repository": str(tmp_path), "port": 9000}}))
    assert load_oip_config(str(path), {"grpc_port": 9001}).grpc_port == 9001
