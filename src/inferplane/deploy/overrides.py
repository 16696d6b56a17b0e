"""``--set key.path=value`` like Helm: dotted keys, ``name[0]`` list indexes, ``{a,b}`` lists, commas between pairs."""

from __future__ import annotations

import re
from typing import Any

import yaml

_SEGMENT = re.compile(r"^([^\[\]]+)((?:\[\d+\])*)$")


def _split_top(text: str, separator: str) -> list[str]:
    """Split on ``separator`` outside braces; ``\\,`` keeps a literal comma."""
    parts, current, depth, escaped = [], "", 0, False
    for char in text:
        if escaped:
            current, escaped = current + char, False
        elif char == "\\":
            escaped = True
        elif char == "{":
            depth, current = depth + 1, current + char
        elif char == "}":
            depth, current = depth - 1, current + char
        elif char == separator and depth == 0:
            parts.append(current)
            current = ""
        else:
            current += char
    parts.append(current)
    return parts


def _scalar(text: str) -> Any:
    """Typed like YAML (true, 10, 0.8, null); anything else stays a string."""
    if text.startswith("{") and text.endswith("}"):
        inner = text[1:-1]
        return [_scalar(item) for item in _split_top(inner, ",")] if inner else []
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (bool, int, float, type(None))) else text


def _path(key: str) -> list[str | int]:
    path: list[str | int] = []
    for segment in key.split("."):
        match = _SEGMENT.match(segment)
        if not match:
            raise ValueError(f"--set: bad key {key!r}")
        path.append(match.group(1))
        path += [int(index) for index in re.findall(r"\[(\d+)\]", match.group(2))]
    return path


def _assign(target: Any, path: list[str | int], value: Any) -> Any:
    head, rest = path[0], path[1:]
    if isinstance(head, int):
        target = list(target) if isinstance(target, list) else []
        while len(target) <= head:
            target.append(None)
        target[head] = _assign(target[head], rest, value) if rest else value
        return target
    target = dict(target) if isinstance(target, dict) else {}
    target[head] = _assign(target.get(head), rest, value) if rest else value
    return target


def apply_sets(values: dict[str, Any], assignments: list[str]) -> dict[str, Any]:
    """``values`` with each ``key=value`` (or several, comma-separated) applied in order."""
    for assignment in assignments:
        for pair in _split_top(assignment, ","):
            key, sep, raw = pair.partition("=")
            if not sep or not key:
                raise ValueError(f"--set: expected key=value, got {pair!r}")
            values = _assign(values, _path(key.strip()), _scalar(raw))
    return values
