"""``inferplane up`` with ``pools``: the planned ports, pickers, router and gateway, and the validation errors."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from inferplane.configfile import ConfigError
from inferplane.observe.up_prometheus import scrape_jobs
from inferplane.up import PlatformConfig, plan, platform_config_from_args


def _repository(tmp_path: Path) -> Path:
    for name in ("fraud", "minilm"):
        (tmp_path / "repo" / name).mkdir(parents=True)
        (tmp_path / "repo" / name / "config.yaml").write_text("runtime: sklearn\n")
    (tmp_path / "repo" / "not-a-model").mkdir()
    return tmp_path / "repo"


def _two_pools(tmp_path: Path, **extra) -> PlatformConfig:
    return PlatformConfig.model_validate({
        "pools": [
            {"name": "chat", "replicas": 2, "server": {"engine": "sim"}},
            {"name": "classic", "kind": "models", "replicas": 2, "server": {"repository": str(_repository(tmp_path))}},
        ],
        **extra,
    })


def _config_error(tmp_path: Path, raw: dict) -> str:
    path = tmp_path / "up.yaml"
    import yaml

    path.write_text(yaml.safe_dump(raw))
    args = argparse.Namespace(config=str(path), replicas=None, port=None, engine=None, failure_mode=None,
                              observe=False, log_format=None)
    with pytest.raises(ConfigError) as caught:
        plan(platform_config_from_args(args), tmp_path, str(path))
    return str(caught.value)


def test_two_pools_get_their_own_ports_pickers_and_profiles(tmp_path: Path) -> None:
    the_plan = plan(_two_pools(tmp_path), tmp_path)
    chat, classic = the_plan.pools
    assert [s.port for s in chat.servers] == [8000, 8001]
    assert [(s.port, s.grpc_port) for s in classic.servers] == [(8100, 8102), (8101, 8103)]
    assert [(p.picker.grpc_port, p.picker.health_port, p.picker.metrics_port) for p in the_plan.pools] == [
        (9002, 9003, 9090), (9012, 9013, 9100)]
    assert classic.picker.pool_name == "classic" and classic.picker.endpoints == ["127.0.0.1:8100", "127.0.0.1:8101"]
    # models pools: fewest in flight and the queue; no prefix-cache or KV scoring
    assert [s.type for s in classic.picker.profile.scorers] == ["in-flight-scorer", "queue-scorer"]
    assert "prefix-cache-scorer" in [s.type for s in chat.picker.profile.scorers]
    # the Batch API's sheddable objective reaches every pool's picker
    assert all(p.picker.objectives["batch"] == -1 for p in the_plan.pools)
    assert [(p.process("server-0"), p.process("picker")) for p in the_plan.pools] == [
        ("chat-server-0", "chat-picker"), ("classic-server-0", "classic-picker")]


def test_the_router_and_gateway_know_every_pool(tmp_path: Path) -> None:
    the_plan = plan(_two_pools(tmp_path), tmp_path)
    router = the_plan.router
    assert [(p.name, p.kind, p.models, p.grpc) for p in router.pools] == [
        ("chat", "llm", ["SmolLM2-135M-Instruct"], False), ("classic", "models", ["fraud", "minilm"], True)]
    gateway = the_plan.gateway
    assert gateway.router_address == "127.0.0.1:9004" and gateway.pool_endpoints == []
    assert [(p.name, p.picker_address) for p in gateway.pools] == [("chat", "127.0.0.1:9002"),
                                                                   ("classic", "127.0.0.1:9012")]
    assert gateway.pools[1].grpc_endpoints == {"127.0.0.1:8100": "127.0.0.1:8102", "127.0.0.1:8101": "127.0.0.1:8103"}


def test_the_primary_pool_feeds_batch_and_console(tmp_path: Path) -> None:
    the_plan = plan(_two_pools(tmp_path), tmp_path)
    assert the_plan.primary == "chat" and the_plan.picker.pool_name == "chat"
    assert the_plan.batch.dispatch.pool_metrics_url == "http://127.0.0.1:9090/metrics"
    assert the_plan.console.picker_url == "http://127.0.0.1:9090"
    assert the_plan.picker.model_rewrites_file == tmp_path / "model-rewrites.yaml"
    assert the_plan.pools[1].picker.model_rewrites_file == tmp_path / "model-rewrites-classic.yaml"
    other = plan(_two_pools(tmp_path / "b", primary_pool="classic"), tmp_path)
    assert other.batch.dispatch.pool_metrics_url == "http://127.0.0.1:9100/metrics"


def test_prometheus_scrapes_every_pool(tmp_path: Path) -> None:
    jobs = scrape_jobs(plan(_two_pools(tmp_path), tmp_path))
    groups = {(job.name, job.labels.get("pool")): job.targets for job in jobs}
    assert groups[("model-servers", "chat")] == ["127.0.0.1:8000", "127.0.0.1:8001"]
    assert groups[("oip-servers", "classic")] == ["127.0.0.1:8100", "127.0.0.1:8101"]
    assert groups[("picker", "chat")] == ["127.0.0.1:9090"] and groups[("picker", "classic")] == ["127.0.0.1:9100"]


def test_one_llm_pool_needs_no_router(tmp_path: Path) -> None:
    single = plan(PlatformConfig.model_validate({"pools": [{"name": "only", "server": {"engine": "sim"}}]}), tmp_path)
    assert single.router is None and single.gateway.pools == []
    assert single.gateway.pool_endpoints == ["127.0.0.1:8000"]
    legacy = plan(PlatformConfig(server={"engine": "sim"}), tmp_path)
    assert legacy.router is None and [p.process("picker") for p in legacy.pools] == ["picker"]
    assert legacy.picker.pool_name == "default" and legacy.gateway.picker_address == "127.0.0.1:9002"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ({"pools": [{"name": "a", "replicas": 0}]}, "pools[0].replicas: Input should be greater than or equal to 1"),
        ({"pools": [{"name": "a", "server": {"engine": "sim"}}, {"name": "b", "replicas": 65}]}, "pools[1].replicas"),
        ({"pools": [{"name": "Bad_Name"}]}, "pools[0].name: String should match pattern"),
        ({"pools": [{"name": "a", "kind": "classic"}]}, "pools[0].kind"),
        ({"pools": [{"name": "a", "server": {"engine": "sim"}}, {"name": "a", "server": {"engine": "sim"}}]},
         "pools[1].name: pool 'a' is listed twice"),
        ({"replicas": 3, "pools": [{"name": "a", "server": {"engine": "sim"}}]}, "replicas: with `pools`"),
        ({"pools": [{"name": "m", "kind": "models"}]}, "pools[0].server.repository: Field required"),
        ({"pools": [{"name": "a", "server": {"engine": "sim", "max_num_seqs": 0}}]}, "pools[0].server.max_num_seqs"),
        ({"pools": [{"name": "a", "server": {"engine": "sim"}, "picker": {"scrape_interval": 0}}]},
         "pools[0].picker.scrape_interval"),
        ({"pools": [{"name": "a", "server": {"engine": "sim"}}], "primary_pool": "b"}, "primary_pool: 'b' is not one"),
        ({"primary_pool": "a"}, "primary_pool: only used with `pools`"),
        ({"pools": [{"name": "a", "replicas": 2, "server": {"engine": "sim"}},
                    {"name": "b", "server": {"engine": "sim", "port": 8001}}]},
         "pools[1].server.port: port 8001 (b-server 0) is also the port of a-server 1"),
        ({"pools": [{"name": "a", "server": {"engine": "sim"}}, {"name": "b", "server": {"engine": "sim"},
                                                                 "picker": {"metrics_port": 9090}}]},
         "pools[1].picker.metrics_port: port 9090 (b-picker metrics) is also the port of a-picker metrics"),
        ({"pools": [{"name": "a", "server": {"engine": "sim"}}, {"name": "b", "server": {"engine": "sim"}}],
          "router": {"grpc_port": 8080}}, "gateway.port: port 8080 (gateway) is also the port of router gRPC"),
    ],
)
def test_errors_name_the_field(tmp_path: Path, raw: dict, expected: str) -> None:
    if any(pool.get("kind") == "models" and "server" in pool for pool in raw.get("pools", [])):
        raw["pools"][0]["server"]["repository"] = str(_repository(tmp_path))
    assert expected in _config_error(tmp_path, raw)


def test_command_line_replicas_do_not_mix_with_pools(tmp_path: Path) -> None:
    path = tmp_path / "up.yaml"
    path.write_text("pools: [{name: a, server: {engine: sim}}]\n")
    args = argparse.Namespace(config=str(path), replicas=3, port=None, engine=None, failure_mode=None, observe=False,
                              log_format=None)
    with pytest.raises(ConfigError, match="set replicas and engine per pool"):
        platform_config_from_args(args)
