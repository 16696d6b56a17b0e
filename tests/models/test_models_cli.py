"""``inferplane models``: what a user types and sees."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from models_support import make_version, subprocess_env

from inferplane.models.cli import main
from inferplane.models.leases import acquire_lease
from inferplane.models.store import Store

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "inferplane.models.cli", *args], capture_output=True,
                          text=True, env=subprocess_env(**env), timeout=120)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["pull", "Qwen/Qwen3-0.6B", "--to", "/tmp/x"], "invalid source 'Qwen/Qwen3-0.6B': expected hf://ORG/NAME"),
        (["pull", "hf://a/b", "--to", "ftp://host/x"], "unsupported scheme 'ftp://'"),
        (["pull", "hf://a/b"], "no store given"),
        (["inspect", "bad name!", "--store", "/tmp/x"], "invalid model name 'bad name!'"),
    ],
)
def test_bad_input_is_a_message_and_exit_2(args: list[str], message: str) -> None:
    done = run_cli(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr and done.stdout == ""


def test_unreachable_hub_is_a_message_and_exit_1(tmp_path: Path) -> None:
    done = run_cli("pull", "hf://a/b", "--to", str(tmp_path / "store"))
    assert done.returncode == 1
    assert done.stderr.startswith("inferplane models pull: cannot reach the hub at http://127.0.0.1:9")
    assert "Traceback" not in done.stderr


def test_pull_list_inspect_fetch(hub, store_dir: Path, tmp_path: Path, capsys) -> None:
    assert main(["pull", "hf://tiny/model", "--to", str(store_dir), "--ignore", "onnx/*", "-q"]) == 0
    out = capsys.readouterr().out
    version = (store_dir / "tiny/model/latest").read_text().strip()
    assert out.startswith(f"pulled tiny/model@{version} (latest): 4 files")

    assert main(["list", "--store", str(store_dir)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["NAME", "VERSION", "LATEST", "FILES", "SIZE", "CREATED", "IN", "USE", "SOURCE"]
    assert lines[1].split()[:4] == ["tiny/model", version, "*", "4"]

    assert main(["inspect", "tiny/model", "--store", str(store_dir), "--json"]) == 0
    manifest = json.loads(capsys.readouterr().out)
    assert manifest["version"] == version and manifest["ignore_patterns"] == ["onnx/*"]
    assert [f["path"] for f in manifest["files"]] == ["README.md", "config.json", "model.safetensors",
                                                      "tokenizer.json"]

    assert main(["fetch", "tiny/model", "--store", str(store_dir), "--cache-dir", str(tmp_path / "c")]) == 0
    fetched = Path(capsys.readouterr().out.strip())
    assert (fetched / "config.json").read_bytes() == b'{"model_type": "llama"}'


def test_rm_in_use_and_unknown(store_dir: Path, capsys) -> None:
    store = Store(str(store_dir))
    make_version(store, "org/m", "v1", {"w": b"1"})
    make_version(store, "org/m", "v2", {"w": b"2"})
    store.set_latest("org/m", "v2")
    acquire_lease(store, "org/m", "v1", holder="replica-7")

    assert main(["rm", "org/m@v1", "--store", str(store_dir)]) == 1
    assert "inferplane models rm: org/m@v1 is in use by 1 server(s): replica-7" in capsys.readouterr().err
    assert main(["rm", "org/m", "--store", str(store_dir)]) == 2
    assert "rm needs an explicit version" in capsys.readouterr().err
    assert main(["rm", "org/m@v9", "--store", str(store_dir)]) == 1
    assert "org/m@v9 is not in store" in capsys.readouterr().err
    assert main(["rm", "org/m@v1", "--store", str(store_dir), "--force"]) == 0
    assert capsys.readouterr().out == "removed org/m@v1\n"
    assert store.versions("org/m") == ["v2"]


def test_list_on_missing_or_empty_store(tmp_path: Path, capsys) -> None:
    assert main(["list", "--store", str(tmp_path / "nowhere")]) == 1
    assert "store " in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["list", "--store", str(tmp_path / "empty")]) == 0
    assert capsys.readouterr().out == f"no models in {tmp_path / 'empty'}\n"
