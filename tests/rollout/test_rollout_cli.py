"""``inferplane rollout`` on a rewrites file, as a user runs it (the picker side is in the e2e test)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from inferplane.cli import main
from inferplane.picker.rewrite import parse_rewrites


def rollout(*argv: str) -> int:
    return main(["rollout", *argv])


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory as ``inferplane up`` leaves it: picker.yaml naming the rewrites file."""
    (tmp_path / "picker.yaml").write_text(yaml.safe_dump({"picker": {
        "host": "0.0.0.0", "metrics_port": 1, "pool_name": "pool-a",
        "model_rewrites_file": str(tmp_path / "model-rewrites.yaml")}}))
    return tmp_path


def targets(run_dir: Path) -> list[tuple[str, int | None]]:
    rules = parse_rewrites((run_dir / "model-rewrites.yaml").read_text())[0].rules
    return [(t.model_rewrite, t.weight) for t in rules[0].targets]


def test_manual_rollout(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    where = ["--run-dir", str(run_dir)]
    assert rollout("start", "llama", "--canary", "llama-v2", "--stable", "llama-v1", "--weight", "10", *where) == 0
    assert capsys.readouterr().out.strip() == "llama: progressing: llama-v1 90%, llama-v2 10%"
    assert targets(run_dir) == [("llama-v1", 90), ("llama-v2", 10)]
    assert rollout("set-weight", "llama", "60", *where) == 0
    assert targets(run_dir) == [("llama-v1", 40), ("llama-v2", 60)]
    assert rollout("rollback", "llama", *where) == 0
    assert targets(run_dir) == [("llama-v1", 100)]
    assert rollout("set-weight", "llama", "20", *where) == 0
    assert rollout("promote", "llama", *where) == 0
    assert targets(run_dir) == [("llama-v2", 100)]
    capsys.readouterr()
    # status: the picker (port 1) is not there, so weights only, and the reason on stderr
    assert rollout("status", "--json", *where) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rollouts"][0]["phase"] == "promoted"
    assert report["rollouts"][0]["versions"] == [{"role": "stable", "model": "llama-v2", "weight": 100}]
    assert "127.0.0.1:1" in report["metrics_error"]
    assert rollout("status", *where) == 0
    out, err = capsys.readouterr()
    assert [line.split() for line in out.splitlines()] == [["llama:", "promoted", "(promoted)"],
                                                          ["stable", "llama-v2", "100%"]]
    assert "no request numbers" in err


def test_kubernetes_manifest(capsys: pytest.CaptureFixture[str]) -> None:
    assert rollout("start", "llama", "--canary", "llama-v2", "--weight", "5", "--kubernetes",
                   "--pool", "vllm-pool", "--namespace", "serving") == 0
    resource = yaml.safe_load(capsys.readouterr().out)
    assert resource["kind"] == "InferenceModelRewrite"
    assert resource["metadata"]["namespace"] == "serving"
    assert resource["spec"]["poolRef"] == {"name": "vllm-pool"}
    assert resource["spec"]["rules"][0]["targets"] == [{"modelRewrite": "llama", "weight": 95},
                                                       {"modelRewrite": "llama-v2", "weight": 5}]


def test_user_errors_are_messages(run_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert rollout("promote", "llama", "--run-dir", str(run_dir)) == 2
    assert "no rollout of model 'llama'" in capsys.readouterr().err
    assert rollout("status") == 2
    assert "--run-dir" in capsys.readouterr().err
    (run_dir / "bare.yaml").write_text("picker: {}\n")
    assert rollout("status", "--picker-config", str(run_dir / "bare.yaml")) == 2
    assert "no model_rewrites_file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        rollout("start", "llama", "--canary", "v2", "--steps", "50,10")
    assert "increasing percentages" in capsys.readouterr().err
    # --steps fails before touching the weights when the picker's metrics cannot be read
    assert rollout("start", "llama", "--canary", "v2", "--steps", "10,100", "--run-dir", str(run_dir)) == 2
    assert "cannot read the picker's metrics" in capsys.readouterr().err
    assert not (run_dir / "model-rewrites.yaml").exists()
