"""The API groups the picker reads, and pure functions from their objects to plain Python data."""

from __future__ import annotations

import copy
import logging
from collections.abc import Iterable
from typing import Any

from inferplane.picker.addresses import parse_address

log = logging.getLogger(__name__)

POOL_GROUP, POOL_VERSION, POOL_PLURAL = "inference.networking.k8s.io", "v1", "inferencepools"
X_GROUP, X_VERSION = "inference.networking.x-k8s.io", "v1alpha2"
OBJECTIVE_PLURAL, REWRITE_PLURAL = "inferenceobjectives", "inferencemodelrewrites"


def pod_is_ready(pod: dict[str, Any]) -> bool:
    """Routable: not terminating, phase Running, has a podIP, and condition ``Ready`` is ``True``."""
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    if metadata.get("deletionTimestamp") or not status.get("podIP"):
        return False
    if status.get("phase", "Running") != "Running":
        return False
    return any(
        c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or []
    )


def label_selector(pool: dict[str, Any]) -> str | None:
    """``spec.selector.matchLabels`` as a ``k=v,…`` selector; ``None`` when empty (select no pods)."""
    labels = ((pool.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
    if not isinstance(labels, dict) or not labels:
        return None
    return ",".join(f"{key}={labels[key]}" for key in sorted(labels))


def target_ports(pool: dict[str, Any]) -> list[int]:
    """``spec.targetPorts[].number``, valid ones in order, duplicates dropped."""
    ports: list[int] = []
    for entry in (pool.get("spec") or {}).get("targetPorts") or []:
        number = entry.get("number") if isinstance(entry, dict) else None
        if isinstance(number, int) and not isinstance(number, bool) and 0 < number < 65536:
            if number not in ports:
                ports.append(number)
        else:
            log.warning("InferencePool %s: ignoring targetPort %r", _name(pool), entry)
    return ports


def pool_addresses(pods: Iterable[dict[str, Any]], ports: list[int]) -> list[str]:
    """``podIP:port`` for every ready pod × every target port, sorted (stable for comparisons)."""
    addresses: set[str] = set()
    for pod in pods:
        if not pod_is_ready(pod):
            continue
        ip = str(pod["status"]["podIP"])
        host = f"[{ip}]" if ":" in ip else ip
        for port in ports:
            try:
                addresses.add(parse_address(f"{host}:{port}"))
            except ValueError as exc:
                log.warning("pod %s: %s", _name(pod), exc)
    return sorted(addresses)


def refers_to_pool(obj: dict[str, Any], pool: str) -> bool:
    """``spec.poolRef`` names this InferencePool (group and kind default to the InferencePool's)."""
    ref = (obj.get("spec") or {}).get("poolRef") or {}
    return (
        ref.get("name") == pool
        and ref.get("group", POOL_GROUP) in (POOL_GROUP, "")
        and ref.get("kind", "InferencePool") in ("InferencePool", "")
    )


def _order(obj: dict[str, Any]) -> tuple[str, str]:
    metadata = obj.get("metadata") or {}
    return str(metadata.get("creationTimestamp") or ""), str(metadata.get("name") or "")


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", "?"))


def objectives(items: Iterable[dict[str, Any]], pool: str) -> dict[str, int]:
    """InferenceObjective name → ``spec.priority`` (default 0; negative = sheddable) for this pool."""
    result: dict[str, int] = {}
    for obj in sorted(items, key=_order):
        if not refers_to_pool(obj, pool):
            continue
        priority = (obj.get("spec") or {}).get("priority", 0)
        if priority is None:
            priority = 0
        if not isinstance(priority, int) or isinstance(priority, bool):
            log.warning("InferenceObjective %s: spec.priority %r is not an integer; ignored", _name(obj), priority)
            continue
        result[_name(obj)] = priority
    return result


def rewrite_rules(items: Iterable[dict[str, Any]], pool: str) -> list[dict[str, Any]]:
    """Every ``spec.rules[]`` entry of this pool's InferenceModelRewrites, verbatim (deep copies).

    Order: resources oldest first (``creationTimestamp``, then name), rules in their order inside one;
    the first matching rule wins, so the oldest resource takes precedence on a conflict.
    """
    rules: list[dict[str, Any]] = []
    for obj in sorted(items, key=_order):
        if not refers_to_pool(obj, pool):
            continue
        for rule in (obj.get("spec") or {}).get("rules") or []:
            if isinstance(rule, dict):
                rules.append(copy.deepcopy(rule))
    return rules
