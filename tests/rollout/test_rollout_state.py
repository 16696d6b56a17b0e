"""Rollouts as InferenceModelRewrite resources in the picker's rewrites file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from inferplane.picker.rewrite import ModelRewrites, parse_rewrites
from inferplane.rollout import actions
from inferplane.rollout.state import Phase, RewritesFile, Rollout, RolloutError, to_resource


def test_the_picker_applies_the_weights(tmp_path: Path) -> None:
    file = RewritesFile(tmp_path / "rewrites.yaml")
    file.save(actions.start(None, "llama", "llama-v2", 25, stable="llama-v1"))
    rewrites = ModelRewrites(parse_rewrites(file.path.read_text()))
    import random

    rewrites.rng = random.Random(7)
    picks = [rewrites.choose("llama")[1] for _ in range(4000)]
    assert set(picks) == {"llama-v1", "llama-v2"}
    assert 0.2 < picks.count("llama-v2") / len(picks) < 0.3
    assert rewrites.choose("other") is None


def test_round_trip_and_other_documents_kept(tmp_path: Path) -> None:
    path = tmp_path / "rewrites.yaml"
    hand_written = {"name": "mine", "rules": [{"matches": [{"model": {"value": "a"}}],
                                               "targets": [{"modelRewrite": "b"}]}]}
    path.write_text(yaml.safe_dump([hand_written]))
    file = RewritesFile(path, pool="pool-1")
    first = actions.start(None, "llama", "llama-v2", 10)
    file.save(first)
    file.save(actions.set_weight(first, 40))
    assert file.get("llama").weight == 40
    assert file.get("llama").stable == "llama"  # no --stable: the model itself
    parsed = parse_rewrites(path.read_text())
    assert [r.name for r in parsed] == ["mine", "rollout-llama"]  # the hand-written list came first and stays
    documents = [d for d in yaml.safe_load_all(path.read_text())]
    assert documents[1]["spec"]["poolRef"] == {"name": "pool-1"}


def test_promote_makes_the_canary_stable(tmp_path: Path) -> None:
    file = RewritesFile(tmp_path / "rewrites.yaml")
    rollout = actions.start(None, "llama", "llama-v2", 50, stable="llama-v1")
    promoted = actions.promote(rollout)
    file.save(promoted)
    assert file.get("llama").stable == "llama-v2"
    assert file.get("llama").phase == Phase.PROMOTED
    rules = parse_rewrites(file.path.read_text())[0].rules
    assert [(t.model_rewrite, t.weight) for t in rules[0].targets] == [("llama-v2", 100)]
    # the next rollout starts from the promoted version
    nxt = actions.start(file.get("llama"), "llama", "llama-v3", 10)
    assert nxt.stable == "llama-v2"


def test_rollback_sends_everything_to_stable() -> None:
    rolled = actions.rollback(actions.start(None, "m", "m-v2", 30, stable="m-v1"))
    assert rolled.phase == Phase.ROLLED_BACK
    assert to_resource(rolled)["spec"]["rules"][0]["targets"] == [{"modelRewrite": "m-v1", "weight": 100}]
    assert rolled.weights() == {"m-v1": 100, "m-v2": 0}


def test_refusals() -> None:
    running = actions.start(None, "m", "m-v2", 30, stable="m-v1")
    with pytest.raises(RolloutError, match="in progress"):
        actions.start(running, "m", "m-v3", 10)
    with pytest.raises(RolloutError, match="already the stable"):
        actions.start(None, "m", "m-v1", 10, stable="m-v1")
    with pytest.raises(RolloutError, match="no canary"):
        actions.promote(actions.promote(running))
    with pytest.raises(RolloutError, match="0 to 100"):
        actions.set_weight(running, 101)


def test_missing_rollout_is_named(tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="no rollout of model 'x'"):
        RewritesFile(tmp_path / "none.yaml").get("x")


def test_resource_is_a_valid_crd_shape() -> None:
    resource = to_resource(Rollout(model="Qwen/Qwen3", stable="v1", canary="v2", weight=10), "pool", "ns")
    assert resource["apiVersion"] == "inference.networking.x-k8s.io/v1alpha2"
    assert resource["metadata"]["name"] == "rollout-qwen-qwen3"
    assert resource["metadata"]["namespace"] == "ns"
    assert resource["spec"]["rules"][0]["matches"] == [{"model": {"type": "Exact", "value": "Qwen/Qwen3"}}]
