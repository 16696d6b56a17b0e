"""One release: its name, namespace and values, and the names and labels every manifest shares.

The Helm chart's ``_helpers.tpl`` defines the same names and labels; the parity test holds them equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from inferplane.deploy.values import Values

#: The picker's ports (fixed by the GIE protocol, design §1).
GRPC_PORT, HEALTH_PORT, METRICS_PORT = 9002, 9003, 9090
#: Envoy's admin port in the standalone gateway (readiness: /ready).
ENVOY_ADMIN_PORT = 19000
PICKER_CONFIG_PATH = "/etc/inferplane/picker.yaml"


@dataclass(frozen=True)
class Release:
    name: str
    namespace: str
    values: Values

    def component(self, component: str) -> str:
        """``<release>-<component>``, the name of a component's objects."""
        return f"{self.name}-{component}"

    @property
    def pool_name(self) -> str:
        return self.values.pool.name or self.name

    @property
    def picker_host(self) -> str:
        """The picker Service's in-cluster DNS name."""
        return f"{self.component('picker')}.{self.namespace}.svc.cluster.local"

    def selector_labels(self, component: str) -> dict[str, str]:
        return {
            "app.kubernetes.io/name": "inferplane",
            "app.kubernetes.io/instance": self.name,
            "app.kubernetes.io/component": component,
        }

    def labels(self, component: str) -> dict[str, str]:
        return {**self.selector_labels(component), "app.kubernetes.io/part-of": "inferplane"}

    def metadata(self, name: str, component: str, annotations: dict[str, str] | None = None) -> dict[str, Any]:
        """Namespaced object metadata with the standard labels."""
        meta: dict[str, Any] = {"name": name, "namespace": self.namespace, "labels": self.labels(component)}
        if annotations:
            meta["annotations"] = annotations
        return meta

    def image(self, image: Any) -> str:
        return f"{image.repository}:{image.tag}"
