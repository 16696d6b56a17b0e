"""The ext_authz gRPC service as Envoy calls it (a real gRPC server and client, no Envoy)."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from inferplane.auth.config import AuthConfig
from inferplane.auth.keys import create_key
from inferplane.auth.service import SERVICE_NAME, start_server
from inferplane.cli import main


def check_request(headers: dict[str, str], body: bytes = b"") -> external_auth_pb2.CheckRequest:
    request = external_auth_pb2.CheckRequest()
    http = request.attributes.request.http
    http.method, http.path = "POST", "/v1/chat/completions"
    http.headers.update(headers)
    http.raw_body = body
    return request


async def test_check_over_grpc(tmp_path: Path) -> None:
    keys_file = tmp_path / "keys.yaml"
    _, key = create_key(keys_file, "acme", ["m1"])
    server, port = await start_server(AuthConfig(keys_file=str(keys_file), port=0))
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            health = await health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=SERVICE_NAME))
            assert health.status == health_pb2.HealthCheckResponse.SERVING
            stub = external_auth_pb2_grpc.AuthorizationStub(channel)
            body = json.dumps({"model": "m1", "messages": []}).encode()
            ok = await stub.Check(check_request({"authorization": f"Bearer {key}"}, body))
            assert ok.HasField("ok_response") and ok.ok_response.headers[0].header.value == "acme"
            denied = await stub.Check(check_request({}, body))
            assert denied.denied_response.status.code == 401
            assert json.loads(denied.denied_response.body)["error"]["code"] == "invalid_api_key"
    finally:
        await server.stop(0)


def test_auth_without_keys_file_is_a_cli_error(capsys) -> None:
    assert main(["auth"]) == 2
    assert "keys_file" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["keys", "--help"], ["auth", "--help"]])
def test_help(argv: list[str], capsys) -> None:
    with pytest.raises(SystemExit) as done:
        main(argv)
    assert done.value.code == 0
