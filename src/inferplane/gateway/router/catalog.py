"""Which pool serves which model: the configured names plus what the pools' servers list.

LLM servers list their base model and LoRA adapters at ``GET /v1/models`` (OpenAI format); KServe
v2 servers list their repository at ``POST /v2/repository/index`` (every model on disk with its
state). A pool's models are the union over its replicas. A pool none of whose replicas answers
keeps its last list, so its requests still reach its picker (which answers 503) rather than 404.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from inferplane.gateway.router.config import RouterConfig, RouterPool

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PoolModels:
    """What one pool serves: model id → its OpenAI model object; ``ready`` ids are listed by ``/v1/models``."""

    pool: RouterPool
    cards: dict[str, dict[str, Any]] = field(default_factory=dict)
    ready: set[str] = field(default_factory=set)


def _card(model_id: str, created: int, owner: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": created, "owned_by": owner}


class ModelCatalog:
    """The model → pool table, refreshed from the servers in the background and on a miss."""

    def __init__(self, config: RouterConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self.started = int(time.time())
        self._client = client or httpx.AsyncClient(timeout=config.discovery_timeout_s)
        self._pools = [self._static(pool) for pool in config.pools]
        self._table: dict[str, str] = {}
        self._refreshing: asyncio.Task[None] | None = None
        self._refreshed_at = float("-inf")
        self._warned: set[str] = set()
        #: Model names a pool's picker rewrites (to its own models) → that pool.
        self._aliases: dict[str, str] = {}
        self._rebuild()
        self._read_rewrites()

    def _static(self, pool: RouterPool) -> PoolModels:
        cards = {name: _card(name, self.started, "inferplane") for name in pool.models}
        return PoolModels(pool, cards, set(pool.models))

    # ---- lookups ------------------------------------------------------------------------

    def pool_of(self, model: str) -> str | None:
        """The pool serving ``model`` (the first one listed when several do), or the pool whose picker
        rewrites it (a canary name, ``inferplane rollout``), or ``None``."""
        return self._table.get(model) or self._aliases.get(model)

    @property
    def default_pool(self) -> str:
        return self.config.pools[0].name

    def default_pool_of_kind(self, kind: str) -> str | None:
        """The first pool of ``kind`` (``models`` for KServe v2 requests naming no model)."""
        return next((pool.name for pool in self.config.pools if pool.kind == kind), None)

    def cards(self) -> list[dict[str, Any]]:
        """Every pool's ready models as OpenAI model objects, pool by pool, each id once."""
        seen: set[str] = set()
        listed = []
        for pool in self._pools:
            for model_id, card in pool.cards.items():
                if model_id in pool.ready and model_id not in seen:
                    seen.add(model_id)
                    listed.append(card)
        return listed

    def card(self, model_id: str) -> dict[str, Any] | None:
        return next((card for card in self.cards() if card["id"] == model_id), None)

    def _rebuild(self) -> None:
        table: dict[str, str] = {}
        for pool in self._pools:
            for model_id in pool.cards:
                owner = table.setdefault(model_id, pool.pool.name)
                if owner != pool.pool.name and model_id not in self._warned:
                    self._warned.add(model_id)
                    log.warning("model %r is served by pools %r and %r: requests go to %r",
                                model_id, owner, pool.pool.name, owner)
        self._table = table

    # ---- discovery ----------------------------------------------------------------------

    async def refresh(self) -> None:
        """Re-read every pool's model list (concurrent calls share one refresh)."""
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.ensure_future(self._refresh())
        await asyncio.shield(self._refreshing)

    async def refresh_if_older(self, seconds: float) -> None:
        """Refresh unless the last refresh finished less than ``seconds`` ago."""
        if time.monotonic() - self._refreshed_at >= seconds:
            await self.refresh()

    async def _refresh(self) -> None:
        results = await asyncio.gather(*(self._discover(pool.pool) for pool in self._pools))
        for pool, found in zip(self._pools, results):
            if found is None:
                continue  # no replica answered: keep what we knew
            cards, ready = found
            # configured names stay routable (the server answers for them); listed are what is ready
            pool.cards = {**self._static(pool.pool).cards, **cards}
            pool.ready = ready
        self._rebuild()
        self._read_rewrites()
        self._refreshed_at = time.monotonic()

    def _read_rewrites(self) -> None:
        """The names each pool's picker rewrites: its configured rewrites and its rewrites file, as the
        picker reads them (a file that is missing or does not parse adds nothing)."""
        from inferplane.picker.rewrite import ModelRewrite, parse_rewrites

        aliases: dict[str, str] = {}
        for pool in self.config.pools:
            rewrites = [ModelRewrite.model_validate(item) for item in pool.model_rewrites]
            if pool.model_rewrites_file is not None:
                try:
                    rewrites += parse_rewrites(pool.model_rewrites_file.read_text())
                except (OSError, ValueError) as exc:
                    log.debug("rewrites file %s not read: %s", pool.model_rewrites_file, exc)
            for rewrite in rewrites:
                for rule in rewrite.rules:
                    for match in rule.matches:
                        aliases.setdefault(match.model.value, pool.name)
        self._aliases = aliases

    async def _discover(self, pool: RouterPool) -> tuple[dict[str, dict[str, Any]], set[str]] | None:
        """The union of the replicas' lists; ``None`` when no replica answered."""
        replies = await asyncio.gather(*(self._list(pool, address) for address in pool.endpoints))
        answered = [reply for reply in replies if reply is not None]
        if not answered:
            return None
        cards: dict[str, dict[str, Any]] = {}
        ready: set[str] = set()
        for replica_cards, replica_ready in answered:
            for model_id, card in replica_cards.items():
                cards.setdefault(model_id, card)
            ready |= replica_ready
        return cards, ready

    async def _list(self, pool: RouterPool, address: str) -> tuple[dict[str, dict[str, Any]], set[str]] | None:
        try:
            if pool.kind == "llm":
                response = await self._client.get(f"http://{address}/v1/models")
            else:
                response = await self._client.post(f"http://{address}/v2/repository/index", content=b"{}")
            if response.status_code != 200:
                raise ValueError(f"status {response.status_code}")
            document = orjson.loads(response.content)
            return _llm_models(document) if pool.kind == "llm" else _repository_models(document, self.started)
        except (httpx.HTTPError, ValueError, orjson.JSONDecodeError, TypeError, AttributeError, KeyError) as exc:
            log.debug("pool %s: listing models at %s failed: %s", pool.name, address, exc)
            return None

    async def close(self) -> None:
        await self._client.aclose()


def _llm_models(document: Any) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """An OpenAI model list: every entry (base model, LoRA adapters) as the server wrote it."""
    cards = {card["id"]: card for card in document["data"] if isinstance(card, dict) and isinstance(card.get("id"), str)}
    return cards, set(cards)


def _repository_models(rows: Any, created: int) -> tuple[dict[str, dict[str, Any]], set[str]]:
    """A KServe v2 repository index: routable whatever their state, listed when ``READY``."""
    cards: dict[str, dict[str, Any]] = {}
    ready: set[str] = set()
    for row in rows:
        name = row.get("name") if isinstance(row, dict) else None
        if not isinstance(name, str):
            continue
        cards.setdefault(name, _card(name, created, "inferplane"))
        if row.get("state") == "READY":
            ready.add(name)
    return cards, ready
