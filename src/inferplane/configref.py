"""The configuration reference (docs/configuration.md), generated from the pydantic models.

Run ``python -m inferplane.configref > docs/configuration.md`` after changing a configuration
model; a test checks the committed file is current.
"""

from __future__ import annotations

import importlib
import inspect
import json
import re
import types
import typing
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# (section, "module:Model") in the order the reference lists them.
SECTIONS = (
    ("top level of `inferplane up --config`", "inferplane.up:PlatformConfig"),
    ("`server` (inferplane serve)", "inferplane.server.config:ServerConfig"),
    ("`picker` (inferplane picker)", "inferplane.picker.config:PickerConfig"),
    ("`gateway` (inferplane gateway)", "inferplane.gateway.config:GatewayConfig"),
    ("`router` (inferplane router: the body-based router between pools)", "inferplane.gateway.router.config:RouterConfig"),
    ("`batch` (inferplane batch serve)", "inferplane.jobs.config:BatchConfig"),
    ("`console` (inferplane console)", "inferplane.console.config:ConsoleConfig"),
    ("`oip` (inferplane serve-models)", "inferplane.oip.config:OipConfig"),
    ("`auth` (inferplane auth; API keys at the gateway)", "inferplane.auth.config:AuthConfig"),
)


def _load(target: str) -> type[BaseModel]:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _type_text(annotation: Any) -> str:
    """A readable type: ``Annotated`` metadata dropped, ``typing.`` prefixes gone."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_text(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_text(a) for a in args)
    if origin is typing.Literal:
        return " | ".join(json.dumps(a) for a in args)
    if origin is not None:
        name = getattr(origin, "__name__", str(origin))
        return f"{name}[{', '.join(_type_text(a) for a in args)}]"
    if annotation is type(None):
        return "None"
    return getattr(annotation, "__name__", str(annotation).replace("typing.", ""))


def _type_name(annotation: Any) -> str:
    return _type_text(annotation).replace("|", "\\|")


def _default(field: Any) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "doc_default" in extra:  # a default computed from the machine (e.g. an installed file's path)
        return str(extra["doc_default"])
    if field.default is not PydanticUndefined:
        value = field.default
    elif field.default_factory is not None:
        try:
            value = field.default_factory()
        except TypeError:
            return "(derived)"
    else:
        return "required"
    if isinstance(value, BaseModel):
        return "(see below)"
    return f"`{json.dumps(value, default=str)}`"


def _annotation_parts(annotation: Any) -> list[Any]:
    """``annotation`` and the types inside it (``list[Pool] | None`` → ..., ``Pool``)."""
    return [annotation, *(part for arg in typing.get_args(annotation) for part in _annotation_parts(arg))]


def _nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = []
    for field in model.model_fields.values():
        for candidate in _annotation_parts(field.annotation):
            if inspect.isclass(candidate) and issubclass(candidate, BaseModel) and candidate not in found:
                found.append(candidate)
    return found


_FIELD_LINE = re.compile(r"^\s+(\w+)\s*:")


def _attribute_comments(model: type[BaseModel]) -> dict[str, str]:
    """Comment lines (``#:`` or ``#``) written right above a field, used when it has no description."""
    try:
        source = inspect.getsource(model)
    except (OSError, TypeError):
        return {}
    comments: dict[str, str] = {}
    pending: list[str] = []
    for line in source.splitlines():
        stripped = line.strip()
        if stripped.startswith("#"):
            pending.append(stripped.lstrip("#:").strip())
            continue
        match = _FIELD_LINE.match(line)
        if match and pending:
            comments.setdefault(match.group(1), " ".join(pending))
        pending = []
    return comments


def _table(model: type[BaseModel], title: str, seen: set[type[BaseModel]]) -> list[str]:
    seen.add(model)
    lines = [f"## {title}", ""]
    doc = inspect.cleandoc(model.__doc__ or "")
    if doc:
        lines += [doc, ""]
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    comments = _attribute_comments(model)
    for name, field in model.model_fields.items():
        description = (field.description or comments.get(name, "")).replace("|", "\\|").replace("\n", " ")
        lines.append(f"| `{name}` | {_type_name(field.annotation)} | {_default(field)} | {description} |")
    lines.append("")
    for nested in _nested_models(model):
        if nested not in seen:
            lines += _table(nested, f"{title} → `{nested.__name__}`", seen)
    return lines


def render_reference() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from the pydantic models by `python -m inferplane.configref`; do not edit by hand.",
        "Every component validates its section at start and names the bad field on error (exit status 2).",
        "",
    ]
    seen: set[type[BaseModel]] = set()
    for title, target in SECTIONS:
        lines += _table(_load(target), title, seen)
    return "\n".join(lines).rstrip() + "\n"


if __name__ == "__main__":
    print(render_reference(), end="")
