"""The LoRA adapters one server serves, by name: configured ones and those loaded at run time.

As in vLLM, an adapter is addressed by putting its name in a request's ``model``; it runs on the
base model with the adapter applied, ``/v1/models`` lists it with ``parent`` = the base model,
and ``POST /v1/load_lora_adapter`` / ``/v1/unload_lora_adapter`` change the set at run time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from inferplane.server.engine import Engine, EngineError
from inferplane.server.protocol import APIError


@dataclass(frozen=True, slots=True)
class Adapter:
    name: str
    path: str


def adapter_rank(path: str) -> int | None:
    """The rank ``r`` in ``path/adapter_config.json`` (PEFT's format); None when there is no such file."""
    config = Path(path) / "adapter_config.json"
    if not config.is_file():
        return None
    try:
        rank = json.loads(config.read_text()).get("r")
    except (OSError, ValueError, AttributeError) as exc:
        raise ValueError(f"cannot read {config}: {exc}") from None
    if not isinstance(rank, int) or isinstance(rank, bool) or rank < 1:
        raise ValueError(f"{config}: 'r' must be a positive integer, not {rank!r}")
    return rank


def check_adapter(path: str, max_lora_rank: int) -> str | None:
    """Why the adapter at ``path`` cannot be served (None if it can).

    The simulator reads no weights, so a path that does not exist is accepted; an existing
    directory's ``adapter_config.json`` rank is checked against ``max_lora_rank`` as vLLM does."""
    target = Path(path)
    if target.exists() and not target.is_dir():
        return f"{path} is not a directory (an adapter is a directory with adapter_config.json)"
    try:
        rank = adapter_rank(path)
    except ValueError as exc:
        return str(exc)
    if rank is not None and rank > max_lora_rank:
        return f"LoRA rank {rank} is greater than max_lora_rank {max_lora_rank}."
    return None


class LoraRegistry:
    """Adapter names → adapters, kept in step with the engine (``add_lora`` / ``remove_lora``)."""

    def __init__(self, engine: Engine, base_model: str, max_lora_rank: int) -> None:
        self._engine = engine
        self.base_model = base_model
        self.max_lora_rank = max_lora_rank
        self._adapters: dict[str, Adapter] = {}

    def __contains__(self, name: object) -> bool:
        return name in self._adapters

    def adapters(self) -> list[Adapter]:
        """Every adapter, in the order they were loaded."""
        return list(self._adapters.values())

    def resolve(self, model: str | None) -> str | None:
        """The adapter a request's ``model`` names (None: the base model); 404 for an unknown name."""
        if model is None or model == self.base_model:
            return None
        if model in self._adapters:
            return model
        raise APIError(f"The model `{model}` does not exist.", 404, "model")

    def load(self, name: str, path: str) -> str:
        """Add an adapter (vLLM's ``load_lora_adapter``); 400 for a duplicate or unusable adapter."""
        if not name or not path:
            raise APIError("Both 'lora_name' and 'lora_path' must be provided.", 400, "lora_name" if not name else "lora_path")
        if name in self._adapters:
            raise APIError(f"The lora adapter '{name}' has already been loaded.", 400, "lora_name")
        if name == self.base_model:
            raise APIError(f"'{name}' is the base model's name; choose another adapter name.", 400, "lora_name")
        problem = check_adapter(path, self.max_lora_rank)
        if problem is not None:
            raise APIError(problem, 400, "lora_path")
        try:
            self._engine.add_lora(name, path)
        except EngineError as exc:
            raise APIError(str(exc), exc.status, "lora_name") from None
        self._adapters[name] = Adapter(name, path)
        return f"Success: LoRA adapter '{name}' added successfully."

    def unload(self, name: str) -> str:
        """Remove an adapter (vLLM's ``unload_lora_adapter``); 404 when there is none by that name."""
        if not name:
            raise APIError("'lora_name' must be provided.", 400, "lora_name")
        if name not in self._adapters:
            raise APIError(f"The lora adapter '{name}' cannot be found.", 404, "lora_name")
        del self._adapters[name]
        self._engine.remove_lora(name)
        return f"Success: LoRA adapter '{name}' removed successfully."
