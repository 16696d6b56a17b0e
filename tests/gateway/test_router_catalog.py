"""The router's model → pool table: served models, and the names a pool's picker rewrites."""

from __future__ import annotations

from pathlib import Path

from platform_runner import free_port

from inferplane.gateway.router.catalog import ModelCatalog
from inferplane.gateway.router.config import RouterConfig

CANARY = {"name": "canary", "rules": [{"matches": [{"model": {"value": "app"}}],
                                        "targets": [{"modelRewrite": "base", "weight": 90},
                                                    {"modelRewrite": "base-lora", "weight": 10}]}]}


async def test_rewritten_names_route_to_the_pool_whose_picker_rewrites_them(tmp_path: Path) -> None:
    rewrites_file = tmp_path / "model-rewrites.yaml"
    nobody = f"127.0.0.1:{free_port()}"  # no server answers: the configured names stand
    config = RouterConfig(pools=[
        {"name": "embed", "kind": "models", "endpoints": [nobody], "models": ["minilm"]},
        {"name": "llm", "endpoints": [nobody], "models": ["base"], "model_rewrites": [CANARY],
         "model_rewrites_file": rewrites_file},
    ])
    catalog = ModelCatalog(config)
    try:
        assert catalog.pool_of("app") == "llm" and catalog.pool_of("minilm") == "embed"
        assert catalog.pool_of("rollout-name") is None
        # `inferplane rollout` writes a rewrite into the picker's file: the router follows on its next refresh
        rewrites_file.write_text("- name: rollout\n  rules:\n    - matches: [{model: {value: rollout-name}}]\n"
                                 "      targets: [{modelRewrite: base}]\n")
        await catalog.refresh()
        assert catalog.pool_of("rollout-name") == "llm"
        assert "app" not in {card["id"] for card in catalog.cards()}  # routable, not listed as a model
    finally:
        await catalog.close()
