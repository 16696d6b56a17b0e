"""Model-name rewrites (GIE ``InferenceModelRewrite``): weighted canary / A-B between model names.

A rewrite's rules match the body's ``model`` exactly (a rule without matches catches every model
no exact rule names) and send it to one of their targets, drawn by weight (equal shares when no
target has a weight). The body is re-serialised with the new ``model`` before it goes on.

Rules come from named sources, each replaceable at run time without a restart: ``config``
(``picker.model_rewrites``), ``file`` (``picker.model_rewrites_file``, re-read when it changes,
like the endpoints file) and, later, an ``InferenceModelRewrite`` watch.
"""

from __future__ import annotations

import asyncio
import bisect
import logging
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from inferplane.picker.request import InferenceRequest

log = logging.getLogger(__name__)


class _Spec(BaseModel):
    # Kubernetes spells fields in camelCase (modelRewrite); YAML written by hand may use snake_case.
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class ModelMatch(_Spec):
    type: Literal["Exact"] = "Exact"
    value: str = Field(min_length=1)


class RewriteMatch(_Spec):
    model: ModelMatch


class RewriteTarget(_Spec):
    model_rewrite: str = Field(min_length=1, alias="modelRewrite")
    #: Relative share; leave it out on every target of a rule for equal shares.
    weight: int | None = Field(default=None, ge=0, le=1_000_000)


class RewriteRule(_Spec):
    #: Exact model names this rule takes; none = every model no other rule names exactly.
    matches: list[RewriteMatch] = Field(default_factory=list)
    targets: list[RewriteTarget] = Field(min_length=1)

    @model_validator(mode="after")
    def _weights(self) -> RewriteRule:
        weighted = [target.weight is not None for target in self.targets]
        if any(weighted) and not all(weighted):
            raise ValueError("targets: set weight on every target or on none")
        if all(weighted) and sum(target.weight or 0 for target in self.targets) == 0:
            raise ValueError("targets: at least one weight must be greater than 0")
        return self


class ModelRewrite(_Spec):
    """One InferenceModelRewrite: its name (a metric label) and ``spec.rules``."""

    name: str = Field("", description="the resource's name (label of the rewrite metrics)")
    rules: list[RewriteRule] = Field(min_length=1)


@dataclass(frozen=True, slots=True)
class _Choice:
    """A compiled rule: targets and their cumulative weights."""

    rewrite: str
    targets: tuple[str, ...]
    cumulative: tuple[float, ...]

    def draw(self, rng: random.Random) -> str:
        if len(self.targets) == 1:
            return self.targets[0]
        return self.targets[bisect.bisect_right(self.cumulative, rng.random() * self.cumulative[-1])]


def _compile(rewrites: Iterable[ModelRewrite]) -> tuple[dict[str, _Choice], _Choice | None]:
    """Exact model name -> choice (the first rule naming a model wins), and the first catch-all rule."""
    exact: dict[str, _Choice] = {}
    catch_all: _Choice | None = None
    for rewrite in rewrites:
        for rule in rewrite.rules:
            targets = [t for t in rule.targets if t.weight is None or t.weight > 0]
            cumulative: list[float] = []
            total = 0.0
            for target in targets:
                total += 1.0 if target.weight is None else float(target.weight)
                cumulative.append(total)
            choice = _Choice(rewrite.name, tuple(t.model_rewrite for t in targets), tuple(cumulative))
            if not rule.matches:
                catch_all = catch_all or choice
            for match in rule.matches:
                exact.setdefault(match.model.value, choice)
    return exact, catch_all


class ModelRewrites:
    """The rewrite rules in force, merged from named sources (earlier sources win a model name)."""

    def __init__(self, rewrites: Sequence[ModelRewrite] = (), rng: random.Random | None = None,
                 metrics: Any = None) -> None:
        self.rng = rng or random.Random()
        self.metrics = metrics
        self._sources: dict[str, list[ModelRewrite]] = {}
        self._exact: dict[str, _Choice] = {}
        self._catch_all: _Choice | None = None
        self._series: dict[tuple[str, str, str], Any] = {}
        self.set_source("config", rewrites)

    def set_source(self, source: str, rewrites: Sequence[ModelRewrite]) -> None:
        """Replace one source's rewrites (``config``, ``file``, ``kubernetes``…), from the next request on."""
        self._sources[source] = list(rewrites)
        self._exact, self._catch_all = _compile(r for group in self._sources.values() for r in group)

    def __bool__(self) -> bool:
        return bool(self._exact) or self._catch_all is not None

    def sources(self) -> dict[str, list[ModelRewrite]]:
        """The rewrites in force per source (a copy, for read-only views such as the console)."""
        return {source: list(rewrites) for source, rewrites in list(self._sources.items())}

    def choose(self, model: str) -> tuple[str, str] | None:
        """``(rewrite name, target model)`` for a request naming ``model``, or ``None`` when no rule takes it."""
        choice = self._exact.get(model) or self._catch_all
        if choice is None:
            return None
        return choice.rewrite, choice.draw(self.rng)

    def apply(self, request: InferenceRequest) -> bool:
        """Rewrite the parsed body's ``model`` when a rule takes it; True when the request now names another model."""
        chosen = self.choose(request.model)
        if chosen is None:
            return False
        name, target = chosen
        if self.metrics is not None:
            key = (name, request.requested_model, target)
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = self.metrics.rewrite_decisions.labels(*key)
            series.inc()
        if target == request.model:
            return False
        assert request.body is not None
        request.body["model"] = request.model = target
        request.body_changed = True
        return True


def parse_rewrites(text: str) -> list[ModelRewrite]:
    """Rewrites from YAML: ``InferenceModelRewrite`` resources (``kind``/``metadata``/``spec``, several
    documents allowed), or a list of ``{name, rules}``, or one ``{rules}`` mapping. Raises ``ValueError``."""
    rewrites: list[ModelRewrite] = []
    try:
        documents = [doc for doc in yaml.safe_load_all(text) if doc is not None]
    except yaml.YAMLError as exc:
        raise ValueError(f"not valid YAML: {exc}") from None
    for doc in documents:
        items = doc if isinstance(doc, list) else [doc]
        for item in items:
            if not isinstance(item, dict):
                raise ValueError("each rewrite must be a mapping")
            if "spec" in item or "kind" in item:
                kind = item.get("kind", "InferenceModelRewrite")
                if kind != "InferenceModelRewrite":
                    raise ValueError(f"kind {kind!r} is not InferenceModelRewrite")
                spec = item.get("spec") or {}
                name = (item.get("metadata") or {}).get("name", "")
                item = {"name": name, "rules": spec.get("rules")}
            try:
                rewrites.append(ModelRewrite.model_validate(item))
            except ValidationError as exc:
                problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or '(top)'}: {e['msg']}" for e in exc.errors())
                raise ValueError(f"rewrite {item.get('name', '')!r}: {problems}") from None
    return rewrites


class RewriteFileSource:
    """Feeds :class:`ModelRewrites` source ``file`` from a YAML file, re-read when its mtime or size changes.

    A file that disappears removes its rules; a file that does not parse keeps the last good rules.
    """

    def __init__(self, rewrites: ModelRewrites, file: Path, poll_interval: float = 1.0) -> None:
        self.rewrites = rewrites
        self.file = file
        self.poll_interval = poll_interval
        self._state: tuple[float, int] | None = None
        self._missing_warned = False

    def refresh(self) -> bool:
        """Apply the file if it changed; True when the rules in force changed."""
        try:
            stat = self.file.stat()
        except FileNotFoundError:
            if not self._missing_warned:
                log.warning("model rewrites file %s not found: no rewrites from it", self.file)
                self._missing_warned = True
            if self._state is None:
                return False
            self._state = None
            self.rewrites.set_source("file", [])
            return True
        state = (stat.st_mtime, stat.st_size)
        if state == self._state:
            return False
        self._missing_warned = False
        try:
            parsed = parse_rewrites(self.file.read_text())
        except (OSError, ValueError) as exc:
            log.warning("model rewrites file %s not applied (keeping the last good rules): %s", self.file, exc)
            self._state = state
            return False
        self._state = state
        self.rewrites.set_source("file", parsed)
        log.info("model rewrites from %s: %d rewrite(s)", self.file, len(parsed))
        return True

    async def watch(self) -> None:
        """Poll the file until cancelled."""
        while True:
            await asyncio.sleep(self.poll_interval)
            self.refresh()


def rewrites_from_rules(rules: Iterable[Any], name: str = "") -> list[ModelRewrite]:
    """``spec.rules`` entries (CRD shape, e.g. from an InferenceModelRewrite watch) as rewrites; a rule that
    does not validate is left out with a warning, the others apply."""
    valid: list[RewriteRule] = []
    for rule in rules:
        try:
            valid.append(RewriteRule.model_validate(rule))
        except ValidationError as exc:
            log.warning("model rewrite rule %r ignored: %s", rule, exc.errors()[0]["msg"])
    return [ModelRewrite(name=name, rules=valid)] if valid else []
