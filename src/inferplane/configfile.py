"""Loading typed configuration from YAML with errors that name the bad field."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

ModelT = TypeVar("ModelT", bound=BaseModel)


class ConfigError(Exception):
    """A configuration file is missing, unreadable or invalid; the message is for the user."""


def format_validation_error(error: ValidationError, source: str) -> str:
    """One line per problem, each naming the dotted path of the bad field."""
    lines = [f"invalid configuration in {source}:"]
    for problem in error.errors():
        where = ".".join(str(part) for part in problem["loc"]) or "(top level)"
        lines.append(f"  {where}: {problem['msg']}")
    return "\n".join(lines)


def validate_model(model: type[ModelT], raw: dict, source: str) -> ModelT:
    """Validate ``raw`` as ``model``; a ConfigError names every bad field and the ``source``."""
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, source)) from None


def read_yaml(path: str | Path) -> dict:
    """A YAML file's top-level mapping, with user-facing errors."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"configuration file not found: {path}") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"configuration file {path} cannot be read: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"configuration file {path} must hold a mapping at the top level")
    return raw


def load_model(model: type[ModelT], path: str | Path | None, section: str | None = None) -> ModelT:
    """Validate ``model`` from a YAML file (or one top-level ``section`` of it); defaults when no file."""
    if path is None:
        return model()
    raw = read_yaml(path)
    if section is not None:
        raw = raw.get(section) or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"configuration file {path}: section '{section}' must be a mapping")
    return validate_model(model, raw, f"{path}" + (f" (section '{section}')" if section else ""))


#: ``(flag, type, help)`` for command-line flags that override the config field of the same name.
OverrideFlag = tuple[str, type, str]


def add_override_flags(parser: argparse.ArgumentParser, flags: Sequence[OverrideFlag]) -> None:
    """Add each flag with default ``None``, so only flags actually given override the config."""
    for flag, kind, text in flags:
        parser.add_argument(flag, type=kind, default=None, help=text)


def overrides_from_flags(args: argparse.Namespace, flags: Sequence[OverrideFlag]) -> dict[str, Any]:
    """The config fields the given flags set (``--max-num-seqs`` → ``max_num_seqs``)."""
    overrides: dict[str, Any] = {}
    for flag, _, _ in flags:
        name = flag.removeprefix("--").replace("-", "_")
        value = getattr(args, name, None)
        if value is not None:
            overrides[name] = value
    return overrides
