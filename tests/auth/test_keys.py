"""API keys: created once, stored hashed, listed without secrets, revoked at once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from inferplane.auth.keys import KeyStore, create_key, hash_key, read_keys, revoke_key
from inferplane.cli import main


def test_create_prints_the_key_once_and_stores_only_its_hash(tmp_path: Path, capsys) -> None:
    keys_file = tmp_path / "keys.yaml"
    assert main(["keys", "create", "--keys-file", str(keys_file), "--tenant", "acme", "--models", "m1,m2",
                 "--rpm", "60", "--tpm", "1000"]) == 0
    key = capsys.readouterr().out.strip()
    text = keys_file.read_text()
    assert key.startswith("ipk_") and key not in text
    record = yaml.safe_load(text)["keys"][0]
    assert record["hash"] == hash_key(key) and record["hash"].startswith("sha256:")
    assert key.startswith(f"ipk_{record['id']}_")
    assert (record["tenant"], record["models"], record["rpm"], record["tpm"]) == ("acme", ["m1", "m2"], 60, 1000)
    assert keys_file.stat().st_mode & 0o077 == 0  # owner only


def test_list_shows_ids_and_tenants_never_secrets(tmp_path: Path, capsys) -> None:
    keys_file = tmp_path / "keys.yaml"
    _, key = create_key(keys_file, "acme")
    create_key(keys_file, "globex", ["m1"])
    assert main(["keys", "list", "--keys-file", str(keys_file), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert sorted(k["tenant"] for k in listed) == ["acme", "globex"]
    assert all("hash" not in k for k in listed)
    assert main(["keys", "list", "--keys-file", str(keys_file)]) == 0
    table = capsys.readouterr().out
    assert "acme" in table and "globex" in table and key not in table


def test_keys_file_comes_from_the_auth_section_of_a_config(tmp_path: Path, capsys) -> None:
    config = tmp_path / "inferplane.yaml"
    config.write_text(yaml.safe_dump({"auth": {"keys_file": str(tmp_path / "k.yaml")}}))
    assert main(["keys", "create", "--config", str(config), "--tenant", "t"]) == 0
    assert read_keys(tmp_path / "k.yaml").keys[0].tenant == "t"


def test_no_keys_file_is_a_cli_error(tmp_path: Path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("INFERPLANE_KEYS_FILE", raising=False)
    assert main(["keys", "list"]) == 2
    assert "no keys file" in capsys.readouterr().err


def test_lookup_and_revocation_apply_without_restart(tmp_path: Path, capsys) -> None:
    keys_file = tmp_path / "keys.yaml"
    record, key = create_key(keys_file, "acme")
    store = KeyStore(keys_file)
    assert store.lookup(key).tenant == "acme"
    assert store.lookup(key[:-1] + ("A" if key[-1] != "A" else "B")) is None  # same id, wrong secret
    assert store.lookup("ipk_nothere_secret") is None and store.lookup("garbage") is None
    assert main(["keys", "revoke", "--keys-file", str(keys_file), record.id]) == 0
    assert store.lookup(key) is None
    assert main(["keys", "revoke", "--keys-file", str(keys_file), record.id]) == 1
    assert "no active key" in capsys.readouterr().err
    assert main(["keys", "list", "--keys-file", str(keys_file), "--all", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["revoked_at"]


def test_a_bad_limit_names_the_field(tmp_path: Path, capsys) -> None:
    assert main(["keys", "create", "--keys-file", str(tmp_path / "k.yaml"), "--tenant", "t", "--rpm", "0"]) == 2
    assert "rpm" in capsys.readouterr().err


def test_a_broken_keys_file_names_the_field(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.yaml"
    keys_file.write_text(yaml.safe_dump({"keys": [{"id": "x", "hash": "sha256:0", "tenant": ""}]}))
    with pytest.raises(Exception, match="keys.0.tenant"):
        revoke_key(keys_file, "x")
