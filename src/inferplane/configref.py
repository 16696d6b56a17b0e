"""The configuration reference (docs/configuration.md), generated from the pydantic models.

Run ``python -m inferplane.configref > docs/configuration.md`` after changing a configuration
model; a test checks the committed file is current.
"""

from __future__ import annotations

import importlib
import inspect
import json
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

# (section, "module:Model") in the order the reference lists them.
SECTIONS = (
    ("top level of `inferplane up --config`", "inferplane.up:PlatformConfig"),
    ("`server` (inferplane serve)", "inferplane.server.config:ServerConfig"),
    ("`picker` (inferplane picker)", "inferplane.picker.config:PickerConfig"),
    ("`gateway` (inferplane gateway)", "inferplane.gateway.config:GatewayConfig"),
)


def _load(target: str) -> type[BaseModel]:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _type_name(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation).replace("typing.", "")
    return text.replace("|", "\\|")


def _default(field: Any) -> str:
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


def _nested_models(model: type[BaseModel]) -> list[type[BaseModel]]:
    found = []
    for field in model.model_fields.values():
        for candidate in [field.annotation, *getattr(field.annotation, "__args__", ())]:
            if inspect.isclass(candidate) and issubclass(candidate, BaseModel) and candidate not in found:
                found.append(candidate)
    return found


def _table(model: type[BaseModel], title: str, seen: set[type[BaseModel]]) -> list[str]:
    seen.add(model)
    lines = [f"## {title}", ""]
    doc = inspect.cleandoc(model.__doc__ or "")
    if doc:
        lines += [doc, ""]
    lines += ["| field | type | default | description |", "|---|---|---|---|"]
    for name, field in model.model_fields.items():
        description = (field.description or "").replace("|", "\\|").replace("\n", " ")
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
