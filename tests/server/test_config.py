"""``ServerConfig``: defaults, YAML loading, command-line overrides and errors naming the field."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pytest

from inferplane.configfile import ConfigError
from inferplane.server.cli import add_parser, overrides_from_args
from inferplane.server.config import ServerConfig, load_server_config


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers())
    return parser.parse_args(["serve", *argv])


def test_defaults_serve_smollm2_on_openvino() -> None:
    config = ServerConfig()
    assert config.engine == "openvino" and config.port == 8000 and config.host == "127.0.0.1"
    assert config.model is not None and config.model.endswith("SmolLM2-135M-Instruct.Q4_1.gguf")
    assert config.served_model_name == "SmolLM2-135M-Instruct" and config.max_model_len == 2048


def test_yaml_section_and_flags(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  port: 9100\n  max_num_seqs: 8\n  sim:\n    time_scale: 0.5\n")
    args = parse("--config", str(path), "--port", "9200", "--engine", "sim", "--sim-preset", "smollm2-135m-cpu2")
    config = load_server_config(args.config, overrides_from_args(args))
    assert config.port == 9200 and config.max_num_seqs == 8 and config.engine == "sim"
    assert config.sim.preset == "smollm2-135m-cpu2" and config.sim.time_scale == 0.5


def test_lora_flags_like_vllm(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("server:\n  engine: sim\n  lora_modules: [{name: a, path: /a}]\n  max_loras: 2\n")
    args = parse(
        "--config", str(path), "--lora-modules", "b=/b", '{"name": "c", "path": "/c"}', "--lora-modules", "d=/d",
        "--max-cpu-loras", "4", "--max-lora-rank", "64", "--allow-runtime-lora-updating",
    )
    config = load_server_config(args.config, overrides_from_args(args))
    assert [m.name for m in config.lora_modules] == ["b", "c", "d"]  # the flag replaces the file's list
    assert (config.max_loras, config.max_cpu_loras, config.max_lora_rank) == (2, 4, 64)
    assert config.allow_runtime_lora_updating and config.lora_enabled
    kept = load_server_config(path, overrides_from_args(parse("--port", "9000")))
    assert [(m.name, m.path) for m in kept.lora_modules] == [("a", "/a")]


def test_prefix_caching_flag() -> None:
    args = parse("--no-enable-prefix-caching")
    assert load_server_config(None, overrides_from_args(args)).enable_prefix_caching is False


@pytest.mark.parametrize(
    ("yaml_text", "needle"),
    [
        ("server:\n  port: -1\n", "port"),
        ("server:\n  engine: tensorrt\n", "engine"),
        ("server:\n  max_num_seqs: 0\n", "max_num_seqs"),
        ("server:\n  colour: blue\n", "colour"),
        ("server:\n  model: /no/such/model.gguf\n", "model"),
        ("server:\n  sim:\n    preset: nope\n", "sim.preset"),
        ("server:\n  max_num_seqs: 64\n  max_num_batched_tokens: 32\n", "max_num_batched_tokens"),
        ("server:\n  scheduling_policy: priority\n", "scheduling_policy"),
    ],
)
def test_errors_name_the_bad_field(tmp_path: Path, yaml_text: str, needle: str) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError) as info:
        load_server_config(path)
    assert needle in str(info.value)


def test_bad_flag_value_names_the_field() -> None:
    with pytest.raises(ConfigError) as info:
        load_server_config(None, {"max_model_len": 3})
    assert "max_model_len" in str(info.value) and "command-line" in str(info.value)


def test_transformers_engine_without_torch_names_the_missing_package(monkeypatch: pytest.MonkeyPatch) -> None:
    from inferplane.server.engines import create_engine

    monkeypatch.setitem(sys.modules, "torch", None)  # as if torch were not installed
    with pytest.raises(ConfigError) as info:
        create_engine(ServerConfig(engine="transformers", device="cuda"))
    assert "torch" in str(info.value)


def test_sim_engine_comes_from_the_registry() -> None:
    from inferplane.server.engine import Engine
    from inferplane.server.engines import create_engine

    engine = create_engine(ServerConfig(engine="sim", served_model_name="sim-model"))
    assert isinstance(engine, Engine) and engine.model_name == "sim-model"
