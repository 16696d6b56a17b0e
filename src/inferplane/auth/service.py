"""The Envoy ``envoy.service.auth.v3.Authorization`` gRPC service: a thin translation of :class:`Policy`."""

from __future__ import annotations

import asyncio
import logging
import signal

import grpc
from envoy.config.core.v3 import base_pb2
from envoy.service.auth.v3 import external_auth_pb2, external_auth_pb2_grpc
from google.rpc import code_pb2, status_pb2
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from inferplane.auth.config import AuthConfig
from inferplane.auth.errors import Denial
from inferplane.auth.keys import KeyStore
from inferplane.auth.policy import Allowed, Policy
from inferplane.grpc_listen import listen

log = logging.getLogger("inferplane.auth")
SERVICE_NAME = "envoy.service.auth.v3.Authorization"
_OVERWRITE = base_pb2.HeaderValueOption.OVERWRITE_IF_EXISTS_OR_ADD


def _header(name: str, value: str) -> base_pb2.HeaderValueOption:
    return base_pb2.HeaderValueOption(header=base_pb2.HeaderValue(key=name, value=value), append_action=_OVERWRITE)


def check_response(decision: Allowed | Denial) -> external_auth_pb2.CheckResponse:
    """The CheckResponse Envoy acts on: headers to set and strip, or the error to answer with."""
    if isinstance(decision, Allowed):
        return external_auth_pb2.CheckResponse(
            status=status_pb2.Status(code=code_pb2.OK),
            ok_response=external_auth_pb2.OkHttpResponse(
                headers=[_header(k, v) for k, v in decision.set_headers.items()],
                headers_to_remove=list(decision.remove_headers),
            ),
        )
    code = code_pb2.UNAUTHENTICATED if decision.status == 401 else code_pb2.PERMISSION_DENIED
    headers = {"content-type": "application/json", **decision.headers}
    return external_auth_pb2.CheckResponse(
        status=status_pb2.Status(code=code, message=decision.message),
        denied_response=external_auth_pb2.DeniedHttpResponse(
            status={"code": decision.status},
            headers=[_header(k, v) for k, v in headers.items()],
            body=decision.body().decode(),
        ),
    )


class AuthorizationService(external_auth_pb2_grpc.AuthorizationServicer):
    def __init__(self, policy: Policy) -> None:
        self.policy = policy

    async def Check(self, request: external_auth_pb2.CheckRequest, context: grpc.aio.ServicerContext
                    ) -> external_auth_pb2.CheckResponse:
        http = request.attributes.request.http
        body = http.raw_body or http.body.encode()
        decision = self.policy.decide(dict(http.headers), body)
        if isinstance(decision, Denial):
            log.info("denied %s %s: %d %s", http.method, http.path, decision.status, decision.code)
        return check_response(decision)


def build_policy(config: AuthConfig) -> Policy:
    if not config.keys_file:
        raise ValueError("auth.keys_file is not set: there is nothing to enforce")
    return Policy(KeyStore(config.keys_file), internal_key=config.internal_key,
                  default_max_tokens=config.default_max_tokens, chars_per_token=config.chars_per_token)


async def start_server(config: AuthConfig) -> tuple[grpc.aio.Server, int]:
    """Start the service (and gRPC health on the same port); returns the server and its bound port."""
    server = grpc.aio.server()
    external_auth_pb2_grpc.add_AuthorizationServicer_to_server(AuthorizationService(build_policy(config)), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    port = listen(server, config.host, config.port, "port")
    await server.start()
    for name in ("", SERVICE_NAME, "readiness", "liveness"):
        await health_servicer.set(name, health_pb2.HealthCheckResponse.SERVING)
    return server, port


async def run(config: AuthConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server, port = await start_server(config)
    log.info("auth ready: ext_authz on %s:%d, keys from %s", config.host, port, config.keys_file)
    try:
        await stop.wait()
    finally:
        await server.stop(0.5)


def serve(config: AuthConfig) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run(config))
    except OSError as exc:
        log.error("%s", exc)
        return 1
    return 0
