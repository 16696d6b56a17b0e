"""Plugin types by name, so a YAML profile can say ``type: queue-scorer``."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import ValidationError

from inferplane.picker.scheduling.plugin import (
    Filter,
    Picker,
    Plugin,
    SaturationDetector,
    Scorer,
)

KINDS: dict[str, type[Plugin]] = {
    "filter": Filter,
    "scorer": Scorer,
    "picker": Picker,
    "saturation detector": SaturationDetector,
}
_TYPES: dict[type[Plugin], dict[str, type[Plugin]]] = {base: {} for base in KINDS.values()}

PluginT = TypeVar("PluginT", bound=type[Plugin])


def register(*aliases: str) -> Callable[[PluginT], PluginT]:
    """Class decorator: make the plugin buildable by its ``type_name`` (and any aliases)."""

    def decorate(cls: PluginT) -> PluginT:
        for base, types in _TYPES.items():
            if issubclass(cls, base):
                for name in (cls.type_name, *aliases):
                    types[name] = cls
                return cls
        raise TypeError(f"{cls.__name__} is not a Filter, Scorer, Picker or SaturationDetector")

    return decorate


def known_types(kind: str) -> list[str]:
    _load_builtins()
    return sorted(_TYPES[KINDS[kind]])


def build(kind: str, type_name: str, name: str | None = None, parameters: Mapping[str, Any] | None = None) -> Any:
    """Build a plugin of ``kind``; ``ValueError`` (naming the type or parameter) when it cannot be."""
    _load_builtins()
    types = _TYPES[KINDS[kind]]
    cls = types.get(type_name)
    if cls is None:
        raise ValueError(f"unknown {kind} type {type_name!r}; known: {', '.join(sorted(types))}")
    try:
        params = cls.Parameters.model_validate(dict(parameters or {}))
    except ValidationError as exc:
        problems = "; ".join(
            f"parameters.{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
        )
        raise ValueError(f"{kind} {type_name!r}: {problems}") from None
    return cls(name or type_name, params)


def _load_builtins() -> None:
    # Importing the modules runs their @register decorators.
    from inferplane.picker.scheduling import (  # noqa: F401
        filters,
        pickers,
        precise_prefix,
        prefill,
        prefix,
        saturation,
        scorers,
    )
