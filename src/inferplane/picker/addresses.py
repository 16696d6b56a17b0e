"""Endpoint addresses: ``ip:port`` strings, validated once so Envoy's ORIGINAL_DST cluster accepts them."""

from __future__ import annotations

import ipaddress


def parse_address(text: str) -> str:
    """Return ``text`` normalised as ``ip:port`` (``[v6]:port``); raise ``ValueError`` naming the problem.

    ORIGINAL_DST routes to the literal address in the header, so host names are refused.
    """
    text = text.strip()
    host, sep, port_text = text.rpartition(":")
    if not sep or not host:
        raise ValueError(f"endpoint {text!r} is not ip:port")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"endpoint {text!r}: {host!r} is not an IP address") from None
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"endpoint {text!r}: port must be 1-65535")
    if ip.version == 6:
        return f"[{ip}]:{int(port_text)}"
    return f"{ip}:{int(port_text)}"


def parse_address_list(text: str) -> list[str]:
    """Addresses from an endpoints file: one per line (``- ip:port`` YAML list lines too), ``#`` comments."""
    addresses: list[str] = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("- "):
            line = line[2:].strip()
        line = line.strip("'\"")
        if line:
            addresses.append(parse_address(line))
    return addresses
