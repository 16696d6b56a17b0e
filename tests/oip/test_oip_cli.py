"""The ``serve-models`` subcommand: flags become configuration; bad configuration is a clear error."""

import argparse
from pathlib import Path

import pytest

from inferplane.configfile import ConfigError
from inferplane.cli import main
from inferplane.oip.cli import add_parser, overrides_from_args
from inferplane.oip.config import load_oip_config


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_flags_override_configuration(tmp_path: Path) -> None:
    args = parse(["oip", "--repository", str(tmp_path), "--port", "9100", "--grpc-port", "9101", "--load-model", "a", "--load-model", "b"])
    config = load_oip_config(None, overrides_from_args(args))
    assert (config.port, config.grpc_port, config.load_models) == (9100, 9101, ["a", "b"])
    assert parse(["serve-models", "--repository", str(tmp_path)]).func is args.func


def test_missing_repository_is_a_configuration_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve-models", "--repository", str(tmp_path / "nope")]) == 2
    assert "repository" in capsys.readouterr().err
    with pytest.raises(ConfigError):
        load_oip_config(None, {"repository": str(tmp_path), "port": 70000})
