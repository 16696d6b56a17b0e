"""Where the API server is and how to authenticate: in-cluster service account, or a kubeconfig file."""

from __future__ import annotations

import base64
import contextlib
import os
import ssl
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from inferplane.configfile import ConfigError

#: Where the kubelet mounts the service account's token, CA bundle and namespace.
SERVICE_ACCOUNT_DIR = Path("/var/run/secrets/kubernetes.io/serviceaccount")


class ClusterConfigError(ConfigError):
    """No usable cluster connection could be built; the message names the file or field."""


@dataclass
class ClusterConfig:
    """An API server address plus credentials. ``token_file`` is re-read on every request (tokens rotate)."""

    server: str
    token: str | None = None
    token_file: Path | None = None
    ca_file: Path | None = None
    ca_data: bytes | None = None
    client_cert: bytes | None = None
    client_key: bytes | None = None
    insecure_skip_tls_verify: bool = False
    #: The namespace the credentials point at (service account namespace, kubeconfig context namespace).
    namespace: str | None = None

    def bearer_token(self) -> str | None:
        """The current token: the file's content when a token file is set (kubelet rotates it), else ``token``."""
        if self.token_file is not None:
            try:
                return self.token_file.read_text().strip() or None
            except OSError:
                return self.token
        return self.token

    def ssl_context(self) -> ssl.SSLContext | bool:
        """TLS settings for httpx: the cluster CA (or system CAs), plus a client certificate when set."""
        if not self.server.startswith("https://"):
            return False
        if self.insecure_skip_tls_verify:
            context = ssl.create_default_context()
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        elif self.ca_file is not None or self.ca_data is not None:
            context = ssl.create_default_context(
                cafile=str(self.ca_file) if self.ca_file else None,
                cadata=self.ca_data.decode() if self.ca_data else None,
            )
        else:
            context = ssl.create_default_context()
        if self.client_cert is not None and self.client_key is not None:
            _load_client_cert(context, self.client_cert, self.client_key)
        return context


def _load_client_cert(context: ssl.SSLContext, cert: bytes, key: bytes) -> None:
    """``ssl`` loads certificates only from files: write them privately, load, delete at once."""
    with tempfile.TemporaryDirectory(prefix="inferplane-kube-") as tmp:
        cert_path, key_path = Path(tmp, "client.crt"), Path(tmp, "client.key")
        for path, data in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
        context.load_cert_chain(cert_path, key_path)


def in_cluster(
    environ: Mapping[str, str] | None = None, account_dir: Path = SERVICE_ACCOUNT_DIR
) -> ClusterConfig:
    """The pod's own service account: ``KUBERNETES_SERVICE_HOST/PORT``, token, ``ca.crt``, namespace files."""
    environ = os.environ if environ is None else environ
    host, port = environ.get("KUBERNETES_SERVICE_HOST"), environ.get("KUBERNETES_SERVICE_PORT")
    if not host or not port:
        raise ClusterConfigError(
            "not running in a cluster: KUBERNETES_SERVICE_HOST / KUBERNETES_SERVICE_PORT are not set "
            "(set picker.kubernetes.kubeconfig to run outside one)"
        )
    token_file = account_dir / "token"
    if not token_file.is_file():
        raise ClusterConfigError(f"service account token file {token_file} not found")
    if ":" in host:  # IPv6
        host = f"[{host}]"
    ca_file = account_dir / "ca.crt"
    namespace_file = account_dir / "namespace"
    namespace = namespace_file.read_text().strip() if namespace_file.is_file() else None
    return ClusterConfig(
        server=f"https://{host}:{port}",
        token_file=token_file,
        ca_file=ca_file if ca_file.is_file() else None,
        namespace=namespace or None,
    )


def default_kubeconfig(environ: Mapping[str, str] | None = None) -> Path:
    """``$KUBECONFIG`` (its first entry) or ``~/.kube/config``."""
    environ = os.environ if environ is None else environ
    paths = [p for p in environ.get("KUBECONFIG", "").split(os.pathsep) if p]
    return Path(paths[0]) if paths else Path.home() / ".kube" / "config"


def from_kubeconfig(path: Path, context: str | None = None) -> ClusterConfig:
    """Server, credentials and namespace of one context (default: ``current-context``) of a kubeconfig.

    Supported credentials: ``token``, ``tokenFile``, client certificate (file or data). ``exec`` and
    ``auth-provider`` plugins are refused with a clear error (run a token-producing sidecar instead).
    """
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ClusterConfigError(f"kubeconfig {path} not found") from None
    except (OSError, yaml.YAMLError) as exc:
        raise ClusterConfigError(f"kubeconfig {path} cannot be read: {exc}") from None
    if not isinstance(raw, dict):
        raise ClusterConfigError(f"kubeconfig {path} must hold a mapping")
    base = path.parent
    name = context or raw.get("current-context")
    if not name:
        raise ClusterConfigError(f"kubeconfig {path}: no context given and no current-context")
    ctx = _named(raw, "contexts", "context", name, path)
    cluster = _named(raw, "clusters", "cluster", ctx.get("cluster"), path)
    user = _named(raw, "users", "user", ctx.get("user"), path) if ctx.get("user") else {}
    server = cluster.get("server")
    if not server:
        raise ClusterConfigError(f"kubeconfig {path}: cluster {ctx.get('cluster')!r} has no server")
    for plugin in ("exec", "auth-provider"):
        if plugin in user:
            raise ClusterConfigError(
                f"kubeconfig {path}: user {ctx.get('user')!r} uses '{plugin}', which is not supported; "
                "use token, tokenFile or a client certificate"
            )
    return ClusterConfig(
        server=str(server).rstrip("/"),
        token=user.get("token"),
        token_file=_path(base, user.get("tokenFile")),
        ca_file=_path(base, cluster.get("certificate-authority")),
        ca_data=_b64(cluster.get("certificate-authority-data"), path, "certificate-authority-data"),
        client_cert=_b64(user.get("client-certificate-data"), path, "client-certificate-data")
        or _read(base, user.get("client-certificate"), path),
        client_key=_b64(user.get("client-key-data"), path, "client-key-data")
        or _read(base, user.get("client-key"), path),
        insecure_skip_tls_verify=bool(cluster.get("insecure-skip-tls-verify", False)),
        namespace=ctx.get("namespace") or None,
    )


def _named(raw: dict[str, Any], section: str, key: str, name: Any, path: Path) -> dict[str, Any]:
    for entry in raw.get(section) or []:
        if isinstance(entry, dict) and entry.get("name") == name:
            return entry.get(key) or {}
    raise ClusterConfigError(f"kubeconfig {path}: {section} has no entry named {name!r}")


def _path(base: Path, value: Any) -> Path | None:
    if not value:
        return None
    path = Path(str(value)).expanduser()
    return path if path.is_absolute() else base / path


def _read(base: Path, value: Any, kubeconfig: Path) -> bytes | None:
    path = _path(base, value)
    if path is None:
        return None
    try:
        return path.read_bytes()
    except OSError as exc:
        raise ClusterConfigError(f"kubeconfig {kubeconfig}: cannot read {path}: {exc}") from None


def _b64(value: Any, path: Path, field: str) -> bytes | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return base64.b64decode(str(value), validate=True)
    raise ClusterConfigError(f"kubeconfig {path}: {field} is not valid base64")
