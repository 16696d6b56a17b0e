"""LoRA adapters through the OpenAI API (sim engine, the app in-process over ASGI, driven by the openai SDK)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pydantic import ValidationError

from inferplane.configfile import ConfigError
from inferplane.picker.scraper import parse_metrics
from inferplane.server.app import create_app
from inferplane.server.config import ServerConfig
from inferplane.sim.engine import SimEngine, create_engine

BASE = "SmolLM2-135M-Instruct"
# Longer than one KV block (128 tokens on the smollm2-135m-cpu2 preset, as vLLM on CPU), so a repeat hits the cache.
PROMPT = "Explain in one sentence why adapters share the base model's weights. " * 12


def sim_config(**fields: Any) -> ServerConfig:
    return ServerConfig(engine="sim", sim={"time_scale": 0.0, "preset": "smollm2-135m-cpu2"}, **fields)


class App:
    """A started sim engine, its app, a raw HTTP client and an openai client, all in-process."""

    def __init__(self, engine: SimEngine, http: httpx.AsyncClient) -> None:
        self.engine = engine
        self.http = http
        self.openai = openai.AsyncOpenAI(base_url="http://server/v1", api_key="unused", http_client=http, max_retries=0)


@pytest.fixture
async def app(request: pytest.FixtureRequest) -> AsyncIterator[App]:
    fields = getattr(request, "param", None) or {
        "lora_modules": ["sql=/adapters/sql", {"name": "chat", "path": "/adapters/chat", "base_model_name": BASE}],
        "max_loras": 2,
        "allow_runtime_lora_updating": True,
    }
    config = sim_config(**fields)
    engine = create_engine(config)
    await engine.start()
    transport = httpx.ASGITransport(app=create_app(engine, config))
    async with httpx.AsyncClient(transport=transport, base_url="http://server") as http:
        yield App(engine, http)
    await engine.stop()


def error_of(response: httpx.Response, status: int) -> dict[str, Any]:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["code"] == status
    return error


async def test_models_lists_adapters_with_the_base_model_as_parent(app: App) -> None:
    models = (await app.openai.models.list()).data
    assert [m.id for m in models] == [BASE, "sql", "chat"]
    cards = {m.id: m.model_dump() for m in models}
    assert cards[BASE]["parent"] is None
    assert cards["sql"]["parent"] == BASE and cards["sql"]["root"] == "/adapters/sql"
    assert cards["chat"]["parent"] == BASE


async def test_an_adapter_request_runs_on_the_base_model_with_the_adapter(app: App) -> None:
    base = await app.openai.completions.create(model=BASE, prompt=PROMPT, max_tokens=4)
    first = await app.openai.completions.create(model="sql", prompt=PROMPT, max_tokens=4)
    again = await app.openai.completions.create(model="sql", prompt=PROMPT, max_tokens=4)
    assert base.model == BASE and first.model == "sql" and again.model == "sql"
    assert first.choices[0].text
    # The engine got lora_name: the adapter's KV blocks are its own (vLLM hashes the adapter into
    # the prefix-cache keys), so the base model's cached prompt is no hit for it, its own is.
    assert first.usage.prompt_tokens_details.cached_tokens == 0  # type: ignore[union-attr]
    assert again.usage.prompt_tokens_details.cached_tokens > 0  # type: ignore[union-attr]

    chat = await app.openai.chat.completions.create(
        model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=3
    )
    assert chat.model == "chat" and chat.choices[0].message.content


async def test_streamed_chunks_name_the_adapter(app: App) -> None:
    stream = await app.openai.chat.completions.create(
        model="sql", messages=[{"role": "user", "content": "hi"}], max_tokens=3, stream=True,
        stream_options={"include_usage": True},
    )
    chunks = [chunk async for chunk in stream]
    assert chunks and {chunk.model for chunk in chunks} == {"sql"}


async def test_unknown_adapter_is_404_in_openai_error_json(app: App) -> None:
    error = error_of(await app.http.post("/v1/completions", json={"model": "nope", "prompt": "x"}), 404)
    assert error["type"] == "NotFoundError" and error["param"] == "model"
    assert error["message"] == "The model `nope` does not exist."
    with pytest.raises(openai.NotFoundError):
        await app.openai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])


async def test_load_use_and_unload_an_adapter_at_run_time(app: App) -> None:
    loaded = await app.http.post("/v1/load_lora_adapter", json={"lora_name": "new", "lora_path": "/adapters/new"})
    assert loaded.status_code == 200 and loaded.text == "Success: LoRA adapter 'new' added successfully."
    assert "new" in [m.id for m in (await app.openai.models.list()).data]
    served = await app.openai.completions.create(model="new", prompt="hello", max_tokens=2)
    assert served.model == "new"

    duplicate = await app.http.post("/v1/load_lora_adapter", json={"lora_name": "new", "lora_path": "/other"})
    assert error_of(duplicate, 400)["message"] == "The lora adapter 'new' has already been loaded."
    missing = await app.http.post("/v1/load_lora_adapter", json={"lora_name": "x"})
    assert "lora_path" in error_of(missing, 400)["message"]
    base_name = await app.http.post("/v1/load_lora_adapter", json={"lora_name": BASE, "lora_path": "/p"})
    assert error_of(base_name, 400)["param"] == "lora_name"

    unloaded = await app.http.post("/v1/unload_lora_adapter", json={"lora_name": "new"})
    assert unloaded.status_code == 200 and "removed" in unloaded.text
    assert "new" not in [m.id for m in (await app.openai.models.list()).data]
    with pytest.raises(openai.NotFoundError):
        await app.openai.completions.create(model="new", prompt="hello", max_tokens=2)
    again = await app.http.post("/v1/unload_lora_adapter", json={"lora_name": "new"})
    assert error_of(again, 404)["message"] == "The lora adapter 'new' cannot be found."
    garbage = await app.http.post("/v1/load_lora_adapter", content=b"{not json")
    error_of(garbage, 400)


async def test_an_adapter_above_max_lora_rank_is_refused(app: App, tmp_path: Path) -> None:
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 64, "lora_alpha": 16}))
    response = await app.http.post("/v1/load_lora_adapter", json={"lora_name": "big", "lora_path": str(tmp_path)})
    error = error_of(response, 400)
    assert error["message"] == "LoRA rank 64 is greater than max_lora_rank 16." and error["param"] == "lora_path"
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 8}))
    ok = await app.http.post("/v1/load_lora_adapter", json={"lora_name": "small", "lora_path": str(tmp_path)})
    assert ok.status_code == 200


@pytest.mark.parametrize("app", [{"lora_modules": ["sql=/adapters/sql"]}], indirect=True)
async def test_runtime_updating_is_off_unless_enabled(app: App) -> None:
    for route in ("/v1/load_lora_adapter", "/v1/unload_lora_adapter"):
        error = error_of(await app.http.post(route, json={"lora_name": "sql", "lora_path": "/p"}), 404)
        assert "allow_runtime_lora_updating" in error["message"]
    assert [m.id for m in (await app.openai.models.list()).data] == [BASE, "sql"]


async def test_metrics_report_adapters_in_vllm_format_and_keep_the_base_model_label(app: App) -> None:
    await app.openai.completions.create(model="sql", prompt="hello", max_tokens=2)
    text = (await app.http.get("/metrics")).text
    assert 'vllm:lora_requests_info{max_lora="2",running_lora_adapters="",waiting_lora_adapters=""}' in text
    assert 'model_name="sql"' not in text and f'vllm:request_success_total{{finished_reason="length",model_name="{BASE}"}} 1.0' in text
    # What the picker reads from it (its scraper, used read-only).
    metrics = parse_metrics(text)
    assert metrics.max_lora == 2 and metrics.running_loras == frozenset() and metrics.models == {BASE}


async def test_metrics_list_running_and_waiting_adapters_comma_separated() -> None:
    config = sim_config(lora_modules=["a=/a", "b=/b", "c=/c"], max_loras=1)
    engine = create_engine(config)  # not started: the scheduler is stepped by hand below
    replica = engine.replica
    replica.add_request("r1", list(range(8)), 50, ignore_eos=True, lora_name="a")
    replica.finish_step(replica.begin_step())  # type: ignore[arg-type]
    replica.add_request("r2", list(range(100, 108)), 50, ignore_eos=True, lora_name="c")
    replica.add_request("r3", list(range(200, 208)), 50, ignore_eos=True, lora_name="b")
    replica.finish_step(replica.begin_step())  # type: ignore[arg-type]
    text = create_app(engine, config).state.server.metrics.render().decode()
    line = next(line for line in text.splitlines() if line.startswith("vllm:lora_requests_info{"))
    assert 'max_lora="1"' in line and 'running_lora_adapters="a"' in line and 'waiting_lora_adapters="b,c"' in line
    metrics = parse_metrics(text)
    assert (metrics.max_lora, metrics.running_loras, metrics.waiting_loras) == (1, {"a"}, {"b", "c"})


async def test_no_lora_info_series_when_lora_is_off() -> None:
    config = sim_config()
    text = create_app(create_engine(config), config).state.server.metrics.render().decode()
    assert "vllm:lora_requests_info" not in text  # as vLLM without --enable-lora


# ---------------------------------------------------------------- configuration


def config_error(**fields: Any) -> str:
    with pytest.raises(ValidationError) as caught:
        ServerConfig(**fields)
    return str(caught.value)


def test_engines_that_cannot_apply_adapters_refuse_lora_modules_at_start(tmp_path: Path) -> None:
    model = tmp_path / "model.gguf"
    model.write_bytes(b"")
    for engine in ("openvino", "transformers"):
        message = config_error(engine=engine, model=str(model), lora_modules=["a=/a"])
        assert "lora_modules: the" in message and "cannot apply LoRA adapters" in message
        assert "allow_runtime_lora_updating" in config_error(engine=engine, model=str(model), allow_runtime_lora_updating=True)


def test_lora_config_errors_name_the_field(tmp_path: Path) -> None:
    sim = {"engine": "sim"}
    assert "lora_modules.1.name: adapter 'a' is listed twice" in config_error(**sim, lora_modules=["a=/x", "a=/y"])
    assert f"lora_modules.0.name: '{BASE}' is the base model" in config_error(**sim, lora_modules=[f"{BASE}=/x"])
    assert "lora_modules.0.base_model_name" in config_error(
        **sim, lora_modules=[{"name": "a", "path": "/x", "base_model_name": "other"}]
    )
    assert "max_cpu_loras (1) must be >= max_loras (2)" in config_error(**sim, max_loras=2, max_cpu_loras=1)
    assert "expected name=path" in config_error(**sim, lora_modules=["just-a-name"])
    assert "max_lora_rank" in config_error(**sim, max_lora_rank=7)
    (tmp_path / "adapter_config.json").write_text(json.dumps({"r": 32}))
    assert "lora_modules.0.path: LoRA rank 32 is greater than max_lora_rank 16" in config_error(
        **sim, lora_modules=[f"a={tmp_path}"]
    )
    config = ServerConfig(**sim, lora_modules=[f"a={tmp_path}", '{"name": "b", "path": "/b"}'], max_lora_rank=32)
    assert [(m.name, m.path) for m in config.lora_modules] == [("a", str(tmp_path)), ("b", "/b")]
    assert config.lora_enabled and not ServerConfig(**sim).lora_enabled


def test_static_adapter_the_engine_refuses_is_a_config_error() -> None:
    config = sim_config(lora_modules=["a=/a"])
    engine = create_engine(config)
    engine.replica.adapters = None  # as if LoRA were off in the engine
    with pytest.raises(ConfigError, match=r"lora_modules\.0 \(a\)"):
        create_app(engine, config)
