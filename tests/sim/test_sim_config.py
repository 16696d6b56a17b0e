from pathlib import Path

import pytest
from pydantic import ValidationError

from inferplane.configfile import ConfigError, load_model
from inferplane.sim.config import SimConfig


def test_defaults_imitate_an_8b_model_on_an_h100_in_real_time() -> None:
    config = SimConfig()
    assert (config.preset, config.time_scale, config.kv_events.enabled) == ("llama3-8b-h100", 1.0, False)


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        ({"time_scale": -1}, "time_scale"),
        ({"preset": "a100"}, "preset"),
        ({"cost": {"step_base_s": -0.1}}, "cost.step_base_s"),
        ({"cost": {"decode_cost": 1}}, "cost.decode_cost"),
        ({"output_length": {"min": 10, "max": 5}}, "output_length"),
        ({"kv_events": {"enabled": "maybe"}}, "kv_events.enabled"),
    ],
)
def test_errors_name_the_bad_field(raw: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as error:
        SimConfig.model_validate(raw)
    assert field in {".".join(str(part) for part in problem["loc"]) for problem in error.value.errors()}


def test_yaml_errors_point_at_the_field(tmp_path: Path) -> None:
    path = tmp_path / "sim.yaml"
    path.write_text("sim:\n  time_scale: fast\n")
    with pytest.raises(ConfigError, match="time_scale"):
        load_model(SimConfig, path, "sim")
