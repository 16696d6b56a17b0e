"""``inferplane simulate``: output files, capacity mode, and errors that name the bad argument."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from inferplane.configfile import ConfigError
from inferplane.sim.cluster import cli

SMALL = ["--preset", "llama3-8b-h100", "--replicas", "2", "--system-len", "200", "--question-len", "20",
         "--output-len", "5", "--rate", "20", "--requests", "40"]  # fmt: skip


def simulate(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="inferplane")
    cli.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["simulate", *argv])
    return int(args.func(args))


def test_writes_json_and_markdown(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate(*SMALL, "--compare-profiles", "round-robin,default", "--out", str(tmp_path)) == 0
    result = json.loads((tmp_path / "simulate.json").read_text())
    assert [run["router"] for run in result["runs"]] == ["round-robin", "default"]
    assert all(run["completed"] == 40 for run in result["runs"])
    table = (tmp_path / "simulate.md").read_text()
    assert "| round-robin | 2 | 40/40 |" in table and "| default | 2 | 40/40 |" in table
    assert capsys.readouterr().out == table


def test_profile_from_a_picker_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "queue-only.yaml"
    profile.write_text("picker:\n  profile:\n    scorers:\n      - {type: queue-scorer, weight: 1}\n")
    assert simulate(*SMALL, "--profile", str(profile), "--json") == 0
    assert json.loads(capsys.readouterr().out)["runs"][0]["router"] == "queue-only"


def test_replica_config_from_an_inferplane_serve_yaml(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "replica.yaml"
    config.write_text(
        "server:\n  engine: sim\n  served_model_name: m\n  num_blocks: 100\n  max_model_len: 1024\n"
        "  sim: {preset: qwen3-32b-tp2-h100, time_scale: 20}\n"
    )
    assert simulate(*SMALL[2:], "--replica-config", str(config), "--profile", "round-robin", "--json") == 0
    run = json.loads(capsys.readouterr().out)
    assert run["config"]["replica"]["num_blocks"] == 100 and run["config"]["replica"]["time_scale"] == 20
    # time_scale 20: a step of the 32B preset (>= 15 ms) takes >= 0.3 s
    assert run["runs"][0]["itl_s"]["p50"] >= 0.3


def test_find_replicas_prints_the_answer(capsys: pytest.CaptureFixture[str]) -> None:
    assert simulate(*SMALL, "--find-replicas", "--slo-ttft-p90", "5", "--max-replicas", "4") == 0
    captured = capsys.readouterr()
    assert captured.out.startswith("1 replicas meet the SLO with profile default")
    assert "1 replicas: TTFT p90" in captured.err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--rate", "-3"], "argument --rate: rates must be positive"),
        (["--rate", "fast"], "argument --rate: 'fast' is not a rate"),
        (["--replicas", "0"], "argument --replicas: must be positive"),
        (["--rate", "5", "--workload", "bursty"], "argument --workload: unknown workload 'bursty'"),
        (["--workload", "trace:/nonexistent.jsonl"], "argument --workload: trace file /nonexistent.jsonl not found"),
        (["--workload", "shared-prefix"], "argument --rate: required"),
        (["--rate", "5", "--preset", "gpt-9"], "argument --preset: unknown preset 'gpt-9'"),
        (["--rate", "5", "--profile", "smart"], "argument --profile: unknown profile 'smart'"),
        (["--rate", "5", "--find-replicas"], "argument --find-replicas: needs an SLO"),
        (["--rate", "5", "--workload", "random", "--groups", "3"], "argument --groups: not used by the random"),
        (["--rate", "5,10", "--duration", "3"], "argument --duration: use --stage-duration"),
    ],
)
def test_errors_name_the_bad_argument(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        simulate(*argv)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_bad_replica_config_field_is_named(tmp_path: Path) -> None:
    config = tmp_path / "replica.yaml"
    config.write_text("replica:\n  preset: llama3-8b-h100\n  num_blocks: -4\n")
    with pytest.raises(ConfigError, match=r"num_blocks: Input should be greater than or equal to 1"):
        simulate(*SMALL, "--replica-config", str(config))


def test_bad_profile_yaml_field_is_named(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    profile = tmp_path / "p.yaml"
    profile.write_text("scorers:\n  - {type: queue-scorer, weight: -1}\n")
    with pytest.raises(SystemExit):
        simulate(*SMALL, "--profile", str(profile))
    assert "scorers.0.weight" in capsys.readouterr().err


def test_progress_callback_sees_the_run_advance() -> None:
    from inferplane.sim.cluster.capacity import simulate as run_once
    from inferplane.sim.cluster.config import ClusterConfig

    seen: list[tuple[float, int, int]] = []
    config = ClusterConfig.model_validate(
        {"replicas": 2, "workload": {"kind": "random", "input_len": 50, "output_len": 5, "arrivals": {"rate": 5, "duration": 4}}}
    )
    run_once(config, "round-robin", lambda t, sent, done: seen.append((t, sent, done)))
    assert len(seen) >= 4 and seen[-1][1] >= seen[0][1]
    assert all(done <= sent for _, sent, done in seen)
