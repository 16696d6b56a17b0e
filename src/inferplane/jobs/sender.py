"""Sending one OpenAI request through the gateway as sheddable traffic, with caps and retries."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from inferplane.jobs.backoff import backoff_delay, parse_retry_after
from inferplane.jobs.config import DispatchConfig

RETRYABLE = frozenset({429, 503})
OBJECTIVE_HEADER = "x-llm-d-inference-objective"
FAIRNESS_HEADER = "x-llm-d-inference-fairness-id"


@dataclass
class Outcome:
    """The final answer to one request (after retries)."""

    status_code: int
    body: Any
    request_id: str | None
    attempts: int


class DeadlineReached(Exception):
    """The request could not be completed before its deadline (it may never have been sent)."""


class Sender:
    """Caps concurrency (global and per model) and retries 429 / 503 / connection errors with backoff.

    A request keeps its concurrency slot while it backs off, so a saturated pool sees at most
    ``max_concurrency`` attempts per backoff period, not a flood of fresh requests.
    """

    def __init__(self, config: DispatchConfig, client: httpx.AsyncClient | None = None,
                 on_retry: Callable[[str], None] | None = None) -> None:
        self.config = config
        self._client = client or httpx.AsyncClient(
            timeout=config.request_timeout_s, verify=config.verify_tls,
            limits=httpx.Limits(max_connections=config.max_concurrency, max_keepalive_connections=config.max_concurrency),
        )
        self._global = asyncio.Semaphore(config.max_concurrency)
        self._models: dict[str, asyncio.Semaphore] = {}
        self._on_retry = on_retry or (lambda reason: None)
        self.in_flight = 0
        self.window = None
        if config.pool_metrics_url:
            from inferplane.jobs.window import AdaptiveWindow

            self.window = AdaptiveWindow(config.pool_metrics_url, config.max_concurrency,
                                         target_queue=config.target_queue)

    def _model_slot(self, model: str) -> asyncio.Semaphore | None:
        cap = self.config.per_model_concurrency.get(model, self.config.default_model_concurrency)
        if cap is None:
            return None
        if model not in self._models:
            self._models[model] = asyncio.Semaphore(cap)
        return self._models[model]

    def headers(self, objective: str | None = None, fairness_id: str | None = None) -> dict[str, str]:
        headers = {"content-type": "application/json", OBJECTIVE_HEADER: objective or self.config.objective}
        if self.config.api_key:
            headers["authorization"] = f"Bearer {self.config.api_key}"
        if fairness_id or self.config.fairness_id:
            headers[FAIRNESS_HEADER] = fairness_id or self.config.fairness_id or ""
        return headers

    async def send(self, path: str, body: dict, *, deadline: float | None = None, objective: str | None = None,
                   fairness_id: str | None = None, gate: Callable[[], Any] | None = None) -> Outcome:
        """POST ``body`` to ``gateway_url + path``; retry until a final answer or ``deadline`` (wall clock).

        ``gate`` (optional coroutine function) is awaited before every attempt: the async processor's
        spare-capacity gate. Raises DeadlineReached when the deadline passes first.
        """
        model = str(body.get("model", ""))
        data = orjson.dumps(body)
        headers = self.headers(objective, fairness_id)
        model_slot = self._model_slot(model)
        attempt = 0
        async with self._global:
            if model_slot is not None:
                await model_slot.acquire()
            try:
                while True:
                    if deadline is not None and time.time() >= deadline:
                        raise DeadlineReached()
                    if gate is not None:
                        await _until(gate(), deadline)
                    if self.window is not None:
                        await _until(self.window.acquire(), deadline)
                    attempt += 1
                    retry_after = None
                    self.in_flight += 1
                    try:
                        response = await _until(
                            self._client.post(self.config.gateway_url + path, content=data, headers=headers), deadline)
                    except httpx.HTTPError as exc:
                        reason = type(exc).__name__
                    else:
                        if response.status_code not in RETRYABLE:
                            return Outcome(response.status_code, _body(response),
                                           response.headers.get("x-request-id"), attempt)
                        reason = str(response.status_code)
                        retry_after = parse_retry_after(response.headers.get("retry-after"))
                    finally:
                        self.in_flight -= 1
                        if self.window is not None:
                            await self.window.release()
                    self._on_retry(reason)
                    delay = backoff_delay(attempt, self.config.backoff_base_s, self.config.backoff_max_s, retry_after)
                    if deadline is not None and time.time() + delay >= deadline:
                        await asyncio.sleep(max(0.0, deadline - time.time()))
                        raise DeadlineReached()
                    await asyncio.sleep(delay)
            finally:
                if model_slot is not None:
                    model_slot.release()

    async def aclose(self) -> None:
        if self.window is not None:
            await self.window.aclose()
        await self._client.aclose()


async def _until(awaitable: Any, deadline: float | None) -> Any:
    if deadline is None:
        return await awaitable
    try:
        return await asyncio.wait_for(awaitable, max(0.0, deadline - time.time()))
    except TimeoutError:
        raise DeadlineReached() from None


def _body(response: httpx.Response) -> Any:
    try:
        return orjson.loads(response.content)
    except orjson.JSONDecodeError:
        return {"error": {"message": response.text[:2000], "type": "server_error", "param": None, "code": None}}
