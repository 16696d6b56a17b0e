"""Objectives: names and priorities from YAML (two forms), chosen per request by header, with a default."""

from __future__ import annotations

from pathlib import Path

import pytest

from inferplane.configfile import ConfigError, load_model
from inferplane.picker.config import PickerConfig
from inferplane.picker.objectives import Objectives
from inferplane.picker.request import from_headers


def test_yaml_accepts_the_short_and_the_long_form(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("picker:\n  objectives: {batch: -1, chat: {priority: 10}}\n  default_objective: chat\n")
    config = load_model(PickerConfig, path, section="picker")
    objectives = Objectives(config.objectives, config.default_objective)
    assert objectives.names() == {"batch": -1, "chat": 10}
    assert objectives.default.name == "chat"


def test_unknown_default_objective_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text("picker:\n  objectives: {batch: -1}\n  default_objective: chat\n")
    with pytest.raises(ConfigError, match="default_objective 'chat' is not one of the objectives"):
        load_model(PickerConfig, path, section="picker")
    path.write_text("picker:\n  objectives: {batch: {priority: high}}\n")
    with pytest.raises(ConfigError, match="objectives.batch"):
        load_model(PickerConfig, path, section="picker")


def test_header_chooses_the_objective_both_spellings_and_default() -> None:
    objectives = Objectives({"batch": -1, "chat": 10}, default="chat")
    assert from_headers({"x-llm-d-inference-objective": "batch"}, objectives).priority == -1
    older = from_headers({"x-gateway-inference-objective": "batch"}, objectives)
    assert (older.objective, older.priority, older.sheddable) == ("batch", -1, True)
    both = {"x-llm-d-inference-objective": "chat", "x-gateway-inference-objective": "batch"}
    assert from_headers(both, objectives).objective == "chat"  # the llm-d header wins
    assert from_headers({}, objectives).objective == "chat"
    assert from_headers({"x-llm-d-inference-objective": "nope"}, objectives).priority == 10
    plain = from_headers({"x-llm-d-inference-objective": "nope"}, Objectives({"batch": -1}))
    assert (plain.objective, plain.priority) == ("", 0)


def test_a_later_source_overrides_by_name() -> None:
    objectives = Objectives({"batch": -1})
    objectives.set_source("kubernetes", {"batch": 5, "gold": 100})
    assert objectives.names() == {"batch": 5, "gold": 100}
    objectives.set_source("kubernetes", {})
    assert objectives.names() == {"batch": -1}
