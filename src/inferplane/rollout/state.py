"""A rollout as an ``InferenceModelRewrite`` resource, and the rewrites file the picker re-reads.

One rollout per requested model: a rewrite named ``rollout-<model>`` whose single rule sends the
model to its stable and canary targets by weight. The rollout's own state (stable, canary,
phase, last message) rides in the resource's annotations, so the same YAML is what the picker
applies locally and what ``kubectl apply`` takes on Kubernetes. Other documents in the file (hand
written rewrites) are kept as they are; comments are not.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from enum import Enum
from pathlib import Path
from typing import Any

import yaml
from filelock import FileLock
from pydantic import BaseModel, ConfigDict, Field

API_VERSION = "inference.networking.x-k8s.io/v1alpha2"
KIND = "InferenceModelRewrite"
_ANNOTATION = "inferplane.io/rollout-"
_NAME_CHARS = re.compile(r"[^a-z0-9-]+")


class RolloutError(Exception):
    """A rollout command cannot do what it was asked; the message is for the user."""


class Phase(str, Enum):
    PROGRESSING = "progressing"  # traffic split between stable and canary
    PROMOTED = "promoted"  # all traffic on the former canary, now the stable version
    ROLLED_BACK = "rolled-back"  # all traffic on the stable version


class Rollout(BaseModel):
    """Requests naming ``model`` go to ``stable`` and ``canary`` (``weight`` percent to the canary)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1)
    stable: str = Field(min_length=1)
    canary: str = ""
    weight: int = Field(0, ge=0, le=100, description="percent of the model's requests sent to the canary")
    phase: Phase = Phase.PROGRESSING
    message: str = ""

    @property
    def name(self) -> str:
        return resource_name(self.model)

    def targets(self) -> list[tuple[str, int]]:
        """(target model, weight) pairs, zero weights left out."""
        pairs = [(self.stable, 100 - self.weight)]
        if self.canary:
            pairs.append((self.canary, self.weight))
        return [(target, weight) for target, weight in pairs if weight > 0]

    def weights(self) -> dict[str, int]:
        """Percent of the traffic per version (zero included)."""
        weights = {self.stable: 100 - self.weight if self.canary else 100}
        if self.canary:
            weights[self.canary] = self.weight
        return weights


def resource_name(model: str) -> str:
    """A Kubernetes name for the rollout of ``model``."""
    slug = _NAME_CHARS.sub("-", model.lower()).strip("-")[:50] or "model"
    return f"rollout-{slug}"


def to_resource(rollout: Rollout, pool: str = "", namespace: str = "") -> dict[str, Any]:
    """The InferenceModelRewrite of a rollout."""
    metadata: dict[str, Any] = {"name": rollout.name}
    if namespace:
        metadata["namespace"] = namespace
    annotations = {
        f"{_ANNOTATION}model": rollout.model,
        f"{_ANNOTATION}stable": rollout.stable,
        f"{_ANNOTATION}canary": rollout.canary,
        f"{_ANNOTATION}weight": str(rollout.weight),
        f"{_ANNOTATION}phase": rollout.phase.value,
    }
    if rollout.message:
        annotations[f"{_ANNOTATION}message"] = rollout.message
    metadata["annotations"] = annotations
    spec: dict[str, Any] = {}
    if pool:
        spec["poolRef"] = {"name": pool}
    spec["rules"] = [{
        "matches": [{"model": {"type": "Exact", "value": rollout.model}}],
        "targets": [{"modelRewrite": target, "weight": weight} for target, weight in rollout.targets()],
    }]
    return {"apiVersion": API_VERSION, "kind": KIND, "metadata": metadata, "spec": spec}


def from_resource(document: Any) -> Rollout | None:
    """The rollout a document describes, or ``None`` when it is not one of ours."""
    if not isinstance(document, dict) or document.get("kind") != KIND:
        return None
    annotations = (document.get("metadata") or {}).get("annotations") or {}
    if f"{_ANNOTATION}model" not in annotations:
        return None
    try:
        return Rollout(
            model=annotations[f"{_ANNOTATION}model"],
            stable=annotations.get(f"{_ANNOTATION}stable", ""),
            canary=annotations.get(f"{_ANNOTATION}canary", ""),
            weight=int(annotations.get(f"{_ANNOTATION}weight", "0")),
            phase=annotations.get(f"{_ANNOTATION}phase", Phase.PROGRESSING.value),
            message=annotations.get(f"{_ANNOTATION}message", ""),
        )
    except (ValueError, TypeError) as exc:
        name = (document.get("metadata") or {}).get("name", "?")
        raise RolloutError(f"rollout resource {name!r} has bad annotations: {exc}") from None


def dump_resources(documents: list[dict[str, Any]]) -> str:
    return yaml.safe_dump_all(documents, sort_keys=False, explicit_start=True)


class RewritesFile:
    """The picker's ``model_rewrites_file``: rollouts read and written under a lock, replaced atomically."""

    def __init__(self, path: Path, pool: str = "") -> None:
        self.path = Path(path)
        self.pool = pool

    def _documents(self) -> list[Any]:
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return []
        except OSError as exc:
            raise RolloutError(f"cannot read {self.path}: {exc}") from None
        try:
            return [doc for doc in yaml.safe_load_all(text) if doc is not None]
        except yaml.YAMLError as exc:
            raise RolloutError(f"{self.path} is not valid YAML: {exc}") from None

    def rollouts(self) -> dict[str, Rollout]:
        """Every rollout in the file, by requested model."""
        found = (from_resource(doc) for doc in self._documents())
        return {rollout.model: rollout for rollout in found if rollout is not None}

    def get(self, model: str) -> Rollout:
        rollout = self.rollouts().get(model)
        if rollout is None:
            raise RolloutError(f"no rollout of model {model!r} in {self.path} (start one with 'rollout start')")
        return rollout

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Serialise read-modify-write cycles of several ``rollout`` commands."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(self.path) + ".lock"):
            yield

    def save(self, rollout: Rollout) -> None:
        """Put ``rollout`` in the file (replacing the model's previous one); the picker applies it on its next poll."""
        with self.locked():
            documents = []
            replaced = False
            for doc in self._documents():
                old = from_resource(doc)
                if old is not None and old.model == rollout.model:
                    if not replaced:
                        documents.append(to_resource(rollout, self.pool))
                        replaced = True
                    continue
                documents.append(doc)
            if not replaced:
                documents.append(to_resource(rollout, self.pool))
            self._write(dump_resources(documents))

    def _write(self, text: str) -> None:
        # Write beside and rename: the picker never reads a half-written file.
        fd, tmp = tempfile.mkstemp(prefix=self.path.name + ".", suffix=".tmp", dir=self.path.parent)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, self.path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
