"""Model-name rewrites: weighted targets, rule precedence, the YAML shapes, the watched file."""

from __future__ import annotations

import os
import random
from collections import Counter
from pathlib import Path

import pytest

from inferplane.picker.metrics import PickerMetrics
from inferplane.picker.request import InferenceRequest
from inferplane.picker.rewrite import (
    ModelRewrite,
    ModelRewrites,
    RewriteFileSource,
    parse_rewrites,
    rewrites_from_rules,
)


def rewrite(name: str, models: list[str], targets: list[tuple[str, int | None]]) -> ModelRewrite:
    return ModelRewrite.model_validate(
        {
            "name": name,
            "rules": [
                {
                    "matches": [{"model": {"type": "Exact", "value": m}} for m in models],
                    "targets": [{"modelRewrite": t, **({} if w is None else {"weight": w})} for t, w in targets],
                }
            ],
        }
    )


def test_weights_are_followed_within_two_percent_over_10000_draws() -> None:
    table = ModelRewrites([rewrite("canary", ["llama"], [("llama-v1", 70), ("llama-v2", 20), ("llama-v3", 10)])],
                          rng=random.Random(42))
    draws = Counter(table.choose("llama")[1] for _ in range(10_000))  # type: ignore[index]
    for target, share in {"llama-v1": 0.70, "llama-v2": 0.20, "llama-v3": 0.10}.items():
        assert abs(draws[target] / 10_000 - share) <= 0.02, (target, draws)


def test_no_weights_means_equal_shares_and_zero_weight_is_never_chosen() -> None:
    table = ModelRewrites([rewrite("ab", ["m"], [("a", None), ("b", None)]),
                           rewrite("off", ["n"], [("on", 1), ("never", 0)])], rng=random.Random(7))
    draws = Counter(table.choose("m")[1] for _ in range(10_000))  # type: ignore[index]
    assert abs(draws["a"] / 10_000 - 0.5) <= 0.02
    assert {table.choose("n")[1] for _ in range(1000)} == {"on"}  # type: ignore[index]


def test_exact_rules_win_over_a_catch_all_and_unmatched_models_stay() -> None:
    catch_all = ModelRewrite.model_validate({"name": "all", "rules": [{"targets": [{"modelRewrite": "base"}]}]})
    table = ModelRewrites([catch_all, rewrite("exact", ["x"], [("x2", None)])])
    assert table.choose("x") == ("exact", "x2")
    assert table.choose("anything") == ("all", "base")
    assert ModelRewrites([rewrite("exact", ["x"], [("x2", None)])]).choose("y") is None


def test_apply_rewrites_the_body_and_counts_per_target() -> None:
    metrics = PickerMetrics()
    table = ModelRewrites([rewrite("canary", ["m"], [("m-new", 1)])], metrics=metrics)
    req = InferenceRequest("r", model="m", requested_model="m", body={"model": "m", "prompt": "x"})
    assert table.apply(req)
    assert req.model == "m-new" and req.body == {"model": "m-new", "prompt": "x"} and req.body_changed
    assert metrics.registry.get_sample_value(
        "inference_extension_model_rewrite_decisions_total",
        {"model_rewrite_name": "canary", "model_name": "m", "target_model": "m-new"},
    ) == 1


def test_rule_validation_names_the_problem() -> None:
    with pytest.raises(ValueError, match="set weight on every target or on none"):
        rewrite("r", ["m"], [("a", 1), ("b", None)])
    with pytest.raises(ValueError, match="at least one weight must be greater than 0"):
        rewrite("r", ["m"], [("a", 0)])
    with pytest.raises(ValueError, match="Exact"):
        ModelRewrite.model_validate({"rules": [{"matches": [{"model": {"type": "Prefix", "value": "m"}}],
                                                "targets": [{"modelRewrite": "a"}]}]})


RESOURCES = """\
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: canary}
spec:
  poolRef: {name: pool}
  rules:
    - matches: [{model: {type: Exact, value: llama}}]
      targets: [{modelRewrite: llama-v2, weight: 90}, {modelRewrite: llama-v3, weight: 10}]
---
apiVersion: inference.networking.x-k8s.io/v1alpha2
kind: InferenceModelRewrite
metadata: {name: alias}
spec:
  rules: [{matches: [{model: {value: qwen}}], targets: [{modelRewrite: qwen-7b}]}]
"""


def test_parse_accepts_resources_and_plain_lists() -> None:
    parsed = parse_rewrites(RESOURCES)
    assert [r.name for r in parsed] == ["canary", "alias"]
    assert parsed[0].rules[0].targets[1].model_rewrite == "llama-v3"
    plain = parse_rewrites("- name: a\n  rules: [{matches: [{model: {value: m}}], targets: [{model_rewrite: n}]}]\n")
    assert plain[0].rules[0].targets[0].model_rewrite == "n"
    with pytest.raises(ValueError, match="rewrite 'bad'"):
        parse_rewrites("- name: bad\n  rules: []\n")
    with pytest.raises(ValueError, match="kind 'Pod'"):
        parse_rewrites("kind: Pod\nspec: {}\n")


def test_rules_from_a_cluster_watch_skip_invalid_ones() -> None:
    rewrites = rewrites_from_rules([{"matches": [{"model": {"value": "m"}}], "targets": [{"modelRewrite": "n"}]},
                                    {"targets": []}])
    assert len(rewrites) == 1 and len(rewrites[0].rules) == 1


def test_rewrites_file_changes_apply_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "rewrites.yaml"
    table = ModelRewrites()
    source = RewriteFileSource(table, path)
    assert not source.refresh() and table.choose("qwen") is None  # no file yet: nothing
    path.write_text(RESOURCES)
    assert source.refresh() and table.choose("qwen") == ("alias", "qwen-7b")
    path.write_text("{{ not yaml")
    os.utime(path, (1, 1))
    assert not source.refresh() and table.choose("qwen") == ("alias", "qwen-7b")  # last good rules stay
    path.write_text(RESOURCES.replace("qwen-7b", "qwen-14b"))
    assert source.refresh() and table.choose("qwen") == ("alias", "qwen-14b")
    path.unlink()
    assert source.refresh() and table.choose("qwen") is None


def test_sources_merge_and_replace_independently() -> None:
    table = ModelRewrites([rewrite("cfg", ["a"], [("a1", None)])])
    table.set_source("kubernetes", [rewrite("k8s", ["a", "b"], [("x", None)])])
    assert table.choose("a") == ("cfg", "a1") and table.choose("b") == ("k8s", "x")
    table.set_source("kubernetes", [])
    assert table.choose("b") is None
