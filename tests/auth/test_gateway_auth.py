"""API keys, tenants, rate limits and TLS through the real platform (Envoy ext_authz + picker + sim servers)."""

from __future__ import annotations

import io
import json
import time

import httpx
import openai
import pytest
from secure_support import MAX_BODY, MODEL, SecurePlatform

from inferplane.cli import main

pytestmark = pytest.mark.integration
ERROR_FIELDS = {"message", "type", "param", "code"}
#: 127.0.0.1, ::ffff:127.0.0.1 and ::1 as /proc/net/tcp{,6} print them.
LOOPBACK = {"0100007F", "0000000000000000FFFF00000100007F", "00000000000000000000000001000000"}
ROUTES = (("GET", "/models"), ("POST", "/chat/completions"), ("POST", "/completions"), ("GET", "/files"),
          ("GET", "/batches"), ("POST", "/batches"), ("GET", "/anything/else"))


def http(sp: SecurePlatform, key: str | None = None) -> httpx.Client:
    headers = {"authorization": f"Bearer {key}"} if key else {}
    return httpx.Client(base_url=sp.base_url, verify=str(sp.ca_file), headers=headers, timeout=60)


def sdk(sp: SecurePlatform, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=sp.base_url, api_key=key, max_retries=0,
                         http_client=httpx.Client(verify=str(sp.ca_file), timeout=60))


def chat(client: openai.OpenAI, model: str = MODEL):
    return client.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}], max_tokens=4)


def assert_openai_error(reply: httpx.Response, status: int) -> dict:
    assert reply.status_code == status, (reply.status_code, reply.text)
    assert reply.headers["content-type"].startswith("application/json")
    error = reply.json()["error"]
    assert set(error) == ERROR_FIELDS
    return error


def test_the_gateway_speaks_https_only(secure_platform: SecurePlatform) -> None:
    assert secure_platform.base_url.startswith("https://")
    with pytest.raises(httpx.HTTPError):
        httpx.get(secure_platform.base_url.replace("https://", "http://") + "/models", timeout=5)
    with pytest.raises(httpx.ConnectError):  # not a certificate the system trusts
        httpx.get(secure_platform.base_url + "/models", timeout=5)


def test_every_route_needs_a_valid_key(secure_platform: SecurePlatform) -> None:
    for key in (None, "ipk_0123456789ab_wrong", "not-a-key"):
        with http(secure_platform, key) as client:
            for method, path in ROUTES:
                error = assert_openai_error(client.request(method, path, json={"model": MODEL}), 401)
                assert error["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        sdk(secure_platform, "ipk_0123456789ab_wrong").models.list()


def test_a_valid_key_reaches_the_model(secure_platform: SecurePlatform) -> None:
    client = sdk(secure_platform, secure_platform.keys["acme"])
    assert [m.id for m in client.models.list().data] == [MODEL]
    reply = chat(client)
    assert reply.choices[0].message.content and reply.usage.completion_tokens > 0
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "hi"}],
                                            max_tokens=4, stream=True)
    assert any(chunk.choices and chunk.choices[0].delta.content for chunk in stream)


def test_a_model_outside_the_key_is_403(secure_platform: SecurePlatform) -> None:
    with pytest.raises(openai.PermissionDeniedError) as denied:
        chat(sdk(secure_platform, secure_platform.keys["globex"]))
    assert denied.value.body["code"] == "model_not_allowed" and denied.value.body["param"] == "model"


def test_the_rate_limit_is_429_with_retry_after(secure_platform: SecurePlatform) -> None:
    with http(secure_platform, secure_platform.keys["tiny"]) as client:
        replies = [client.get("/models") for _ in range(3)]
    assert [r.status_code for r in replies[:2]] == [200, 200]
    error = assert_openai_error(replies[2], 429)
    assert error["code"] == "rate_limit_exceeded" and int(replies[2].headers["retry-after"]) >= 1


def test_a_body_over_the_limit_is_413_in_openai_format(secure_platform: SecurePlatform) -> None:
    body = {"model": MODEL, "messages": [{"role": "user", "content": "x" * (MAX_BODY + 1)}], "max_tokens": 1}
    with http(secure_platform, secure_platform.keys["acme"]) as client:
        assert_openai_error(client.post("/chat/completions", json=body), 413)


def test_a_revoked_key_stops_working_at_once(secure_platform: SecurePlatform, capsys) -> None:
    keys_file = str(secure_platform.keys_file)
    assert main(["keys", "create", "--keys-file", keys_file, "--tenant", "temp"]) == 0
    key = capsys.readouterr().out.strip()
    with http(secure_platform, key) as client:
        assert client.get("/models").status_code == 200
        assert main(["keys", "revoke", "--keys-file", keys_file, key]) == 0
        assert_openai_error(client.get("/models"), 401)


def test_tenants_cannot_read_each_others_files_or_batches(secure_platform: SecurePlatform) -> None:
    acme = sdk(secure_platform, secure_platform.keys["acme"])
    lines = "\n".join(json.dumps({"custom_id": f"c{i}", "method": "POST", "url": "/v1/chat/completions",
                                  "body": {"model": MODEL, "max_tokens": 4,
                                           "messages": [{"role": "user", "content": f"hello {i}"}]}})
                      for i in range(3)).encode()
    # a spoofed tenant header is replaced by the key's tenant
    spoofing = openai.OpenAI(base_url=secure_platform.base_url, api_key=secure_platform.keys["acme"], max_retries=0,
                             default_headers={"x-llm-d-inference-fairness-id": "globex"},
                             http_client=httpx.Client(verify=str(secure_platform.ca_file), timeout=60))
    uploaded = spoofing.files.create(file=("in.jsonl", io.BytesIO(lines)), purpose="batch")
    batch = acme.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h")
    deadline = time.monotonic() + 120
    while (batch := acme.batches.retrieve(batch.id)).status not in ("completed", "failed"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.2)
    assert batch.status == "completed" and batch.request_counts.completed == 3  # dispatched through the gateway
    output = acme.files.content(batch.output_file_id).text.splitlines()
    assert all(json.loads(line)["response"]["status_code"] == 200 for line in output)

    # another tenant sees none of acme's objects
    with http(secure_platform, secure_platform.keys["other"]) as other:
        assert other.get("/files").json()["data"] == []
        assert other.get("/batches").json()["data"] == []
        for path in (f"/files/{uploaded.id}", f"/files/{uploaded.id}/content", f"/batches/{batch.id}",
                     f"/files/{batch.output_file_id}/content"):
            assert_openai_error(other.get(path), 404)
        assert_openai_error(other.post(f"/batches/{batch.id}/cancel"), 404)
        assert_openai_error(other.delete(f"/files/{uploaded.id}"), 404)
    assert {f.id for f in acme.files.list().data} >= {uploaded.id, batch.output_file_id}
    assert [b.id for b in acme.batches.list().data] == [batch.id]


def test_internal_ports_listen_on_loopback_only(secure_platform: SecurePlatform) -> None:
    ports = secure_platform.platform.ports
    wanted = {ports[name] for name in ("grpc", "health", "metrics", "auth", "batch", "admin")} | set(ports["servers"])
    listening: dict[int, set[str]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as f:
            for line in f.readlines()[1:]:
                local, state = line.split()[1], line.split()[3]
                if state == "0A":
                    host, port = local.split(":")
                    listening.setdefault(int(port, 16), set()).add(host)
    for port in wanted:
        hosts = listening.get(port)
        assert hosts and hosts <= LOOPBACK, (port, hosts)


def test_the_token_rate_limit_counts_max_tokens(secure_platform: SecurePlatform) -> None:
    client = sdk(secure_platform, secure_platform.keys["tokens"])
    ask = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 200}
    assert client.chat.completions.create(**ask).choices  # ~220 of the tenant's 300 tokens per minute
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(**ask)
    assert "tokens" in limited.value.body["message"] and int(limited.value.response.headers["retry-after"]) >= 1
