"""Connecting to the API server: in-cluster service account (TLS, rotating token), kubeconfig, config errors."""

from __future__ import annotations

import base64
import ssl
from pathlib import Path

import httpx
import pytest
import yaml
from kubernetes_support import PODS, pod, serve_fake_api

from inferplane.configfile import ConfigError
from inferplane.picker.kubernetes.client import ApiError, KubeClient
from inferplane.picker.kubernetes.cluster import (
    ClusterConfigError,
    from_kubeconfig,
    in_cluster,
)
from inferplane.picker.kubernetes.config import load_picker_config


def service_account(directory: Path, token: str, ca: Path | None, namespace: str = "ml") -> Path:
    directory.mkdir()
    (directory / "token").write_text(token + "\n")
    (directory / "namespace").write_text(namespace)
    if ca is not None:
        (directory / "ca.crt").write_bytes(ca.read_bytes())
    return directory


async def test_in_cluster_uses_the_service_account_token_file_and_ca_and_follows_token_rotation(tmp_path):
    tls = tmp_path / "tls"
    tls.mkdir()
    async with serve_fake_api(tls_dir=tls, token="token-1") as api:
        api.apply(PODS, pod("a", "10.0.0.1"))
        account = service_account(tmp_path / "sa", "token-1", tls / "ca.crt")
        port = api.url.rsplit(":", 1)[1]
        cluster = in_cluster({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port}, account)
        assert (cluster.server, cluster.namespace) == (f"https://127.0.0.1:{port}", "ml")

        client = KubeClient(cluster)
        try:
            listed = await client.list(PODS)
            assert [item["metadata"]["name"] for item in listed["items"]] == ["a"]
            assert api.auth_headers[-1] == "Bearer token-1"

            # the kubelet rotates the projected token: the next request carries the new one
            (account / "token").write_text("token-2\n")
            api.token = "token-2"
            await client.list(PODS)
            assert api.auth_headers[-1] == "Bearer token-2"
        finally:
            await client.aclose()


async def test_in_cluster_without_the_cluster_ca_refuses_the_server_certificate(tmp_path):
    tls = tmp_path / "tls"
    tls.mkdir()
    async with serve_fake_api(tls_dir=tls) as api:
        account = service_account(tmp_path / "sa", api.token, ca=None)
        port = api.url.rsplit(":", 1)[1]
        client = KubeClient(in_cluster({"KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": port},
                                       account))
        try:
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                await client.list(PODS)
        finally:
            await client.aclose()


def test_in_cluster_outside_a_cluster_says_what_is_missing(tmp_path):
    with pytest.raises(ClusterConfigError, match="KUBERNETES_SERVICE_HOST"):
        in_cluster({}, tmp_path)
    with pytest.raises(ClusterConfigError, match="token"):
        in_cluster({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "KUBERNETES_SERVICE_PORT": "443"}, tmp_path)


def write_kubeconfig(path: Path, server: str, user: dict, current: str = "dev") -> Path:
    path.write_text(yaml.safe_dump({
        "apiVersion": "v1",
        "kind": "Config",
        "current-context": current,
        "clusters": [{"name": "kind", "cluster": {"server": server}},
                     {"name": "prod", "cluster": {"server": "https://10.0.0.1",
                                                  "certificate-authority-data": base64.b64encode(b"x").decode()}}],
        "users": [{"name": "dev-user", "user": user}],
        "contexts": [{"name": "dev", "context": {"cluster": "kind", "user": "dev-user", "namespace": "ml"}},
                     {"name": "prod", "context": {"cluster": "prod", "user": "dev-user"}}],
    }))
    return path


async def test_kubeconfig_token_file_context_and_namespace(tmp_path):
    async with serve_fake_api(token="kube-token") as api:
        api.apply(PODS, pod("a", "10.0.0.1"))
        (tmp_path / "token").write_text("kube-token")
        config = write_kubeconfig(tmp_path / "config", api.url, {"tokenFile": "token"})  # relative to the file
        cluster = from_kubeconfig(config)
        assert (cluster.server, cluster.namespace) == (api.url, "ml")
        client = KubeClient(cluster)
        try:
            assert len((await client.list(PODS))["items"]) == 1
            assert api.auth_headers[-1] == "Bearer kube-token"
            api.token = "other"
            with pytest.raises(ApiError, match="401 Unauthorized") as failure:
                await client.list(PODS)
            assert failure.value.code == 401
        finally:
            await client.aclose()
        prod = from_kubeconfig(config, context="prod")
        assert (prod.server, prod.ca_data, prod.namespace) == ("https://10.0.0.1", b"x", None)


def test_kubeconfig_errors_name_the_problem(tmp_path):
    with pytest.raises(ClusterConfigError, match="not found"):
        from_kubeconfig(tmp_path / "absent")
    config = write_kubeconfig(tmp_path / "config", "https://k", {"exec": {"command": "gke-gcloud-auth-plugin"}})
    with pytest.raises(ClusterConfigError, match="'exec', which is not supported"):
        from_kubeconfig(config)
    with pytest.raises(ClusterConfigError, match="no entry named 'staging'"):
        from_kubeconfig(config, context="staging")


def test_client_certificate_from_kubeconfig_data_loads(tmp_path):
    from kubernetes_support import self_signed_cert

    cert, key = self_signed_cert(tmp_path)
    config = write_kubeconfig(tmp_path / "config", "https://127.0.0.1:6443", {
        "client-certificate-data": base64.b64encode(cert.read_bytes()).decode(),
        "client-key-data": base64.b64encode(key.read_bytes()).decode(),
    })
    cluster = from_kubeconfig(config)
    assert isinstance(cluster.ssl_context(), ssl.SSLContext)


def test_picker_config_reads_the_charts_top_level_kubernetes_section(tmp_path):
    path = tmp_path / "picker.yaml"
    path.write_text(yaml.safe_dump({
        "picker": {"pool_name": "qwen-pool", "objectives": {"batch": -1}},
        "kubernetes": {"namespace": "ml", "inference_pool": "qwen-pool"},
    }))
    config = load_picker_config(path)
    assert config.kubernetes is not None
    assert (config.kubernetes.namespace, config.kubernetes.inference_pool) == ("ml", "qwen-pool")
    assert config.kubernetes.objectives and config.kubernetes.rewrites  # both watched by default

    path.write_text(yaml.safe_dump({"picker": {"kubernetes": {"inference_pool": "p", "watch_timeout": 0}}}))
    with pytest.raises(ConfigError, match=r"kubernetes\.watch_timeout"):
        load_picker_config(path)
    path.write_text(yaml.safe_dump({"picker": {"kubernetes": {"namespace": "ml"}}}))
    with pytest.raises(ConfigError, match=r"kubernetes\.inference_pool"):
        load_picker_config(path)
    path.write_text(yaml.safe_dump({"picker": {"kubernetes": {"inference_pool": "p"}},
                                    "kubernetes": {"inference_pool": "p"}}))
    with pytest.raises(ConfigError, match="not both"):
        load_picker_config(path)
    path.write_text(yaml.safe_dump({"picker": {"pool_name": "p"}}))
    assert load_picker_config(path).kubernetes is None  # static endpoints only
