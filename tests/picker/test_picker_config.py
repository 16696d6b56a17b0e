"""Configuration: defaults that work, and errors naming the bad field."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from inferplane.configfile import ConfigError, load_model
from inferplane.picker.cli import add_parser
from inferplane.picker.config import PickerConfig


def load(tmp_path: Path, text: str) -> PickerConfig:
    path = tmp_path / "platform.yaml"
    path.write_text(text)
    return load_model(PickerConfig, path, section="picker")


def test_defaults_follow_the_gie_ports_and_profile() -> None:
    config = PickerConfig()
    assert (config.grpc_port, config.health_port, config.metrics_port) == (9002, 9003, 9090)
    assert (config.scrape_interval, config.staleness) == (0.05, 0.2)
    weights = {s.type: s.weight for s in config.profile.scorers}
    assert weights == {
        "queue-scorer": 2,
        "kv-cache-utilization-scorer": 2,
        "prefix-cache-scorer": 3,
        "prefill-backlog-scorer": 1,
    }
    assert [f.type for f in config.profile.filters] == ["hot-spot-filter"]
    assert config.profile.picker.type == "max-score-picker"
    assert config.saturation.parameters == {"queue_threshold": 5, "kv_cache_threshold": 0.8}


def test_full_section_loads(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """
picker:
  endpoints: ["10.0.0.1:8000", "[::1]:8001"]
  pool_name: qwen
  fallback_endpoints: 1
  objectives: {batch: -1}
  profile:
    filters: [{type: low-queue-filter, parameters: {threshold: 32}}]
    scorers:
      - {type: queue-scorer, weight: 1}
      - {type: prefix-cache-scorer, name: prefix, weight: 4, parameters: {block_size_tokens: 32}}
    picker: {type: weighted-random-picker}
other_component: {ignored: true}
""",
    )
    assert config.endpoints == ["10.0.0.1:8000", "[::1]:8001"]
    assert config.profile.scorers[1].build().block_bytes == 128


@pytest.mark.parametrize(
    ("yaml_text", "field", "words"),
    [
        ("endpoints: ['10.0.0.1:8000', 'model-server:8000']", "endpoints.1", "not an IP address"),
        ("endpoints: ['10.0.0.1:99999']", "endpoints.0", "port"),
        ("grpc_port: 70000", "grpc_port", "less than or equal"),
        ("scrape_intervall: 1", "scrape_intervall", "Extra inputs"),
        ("profile: {scorers: [{type: queue-scorer}, {type: magic-scorer}]}", "profile.scorers.1", "magic-scorer"),
        ("profile: {scorers: [{type: queue-scorer, weight: -1}]}", "profile.scorers.0.weight", "greater than"),
        ("profile: {picker: {type: queue-scorer}}", "profile.picker", "unknown picker type"),
        (
            "profile: {scorers: [{type: prefix-cache-scorer, parameters: {block_size_tokens: 0}}]}",
            "profile.scorers.0",
            "parameters.block_size_tokens",
        ),
        ("saturation: {type: utilization-detector, parameters: {queue_threshold: 0}}", "saturation", "queue_threshold"),
        ("staleness: 0.05\nscrape_interval: 0.1", "(top level)", "staleness"),
    ],
)
def test_errors_name_the_bad_field(tmp_path: Path, yaml_text: str, field: str, words: str) -> None:
    indented = "\n".join("  " + line for line in yaml_text.splitlines())
    with pytest.raises(ConfigError) as caught:
        load(tmp_path, f"picker:\n{indented}\n")
    message = str(caught.value)
    assert f"  {field}:" in message
    assert words in message


def test_cli_registers_picker_with_config_option() -> None:
    parser = argparse.ArgumentParser(prog="inferplane")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["picker", "--config", "x.yaml", "--endpoint", "10.0.0.1:8000"])
    assert args.command == "picker" and args.config == "x.yaml" and callable(args.func)


def test_cli_bad_config_raises_config_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("picker:\n  endpoints: [nowhere]\n")
    parser = argparse.ArgumentParser(prog="inferplane")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["picker", "--config", str(path)])
    with pytest.raises(ConfigError, match="endpoints.0"):
        args.func(args)
    args = parser.parse_args(["picker", "--endpoint", "bad"])
    with pytest.raises(ConfigError, match="endpoints.0"):
        args.func(args)


def test_engine_priority_adds_the_rank_aware_in_flight_scorer_unless_a_profile_is_set() -> None:
    scorers = [(s.type, s.weight) for s in PickerConfig(engine_priority=True).profile.scorers]
    assert scorers == [(s.type, s.weight) for s in PickerConfig().profile.scorers] + [("in-flight-scorer", 1.0)]
    own = PickerConfig(engine_priority=True, profile={"scorers": [{"type": "queue-scorer", "weight": 1}]})
    assert [s.type for s in own.profile.scorers] == ["queue-scorer"]
