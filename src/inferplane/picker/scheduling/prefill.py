"""Prefill backlog: prefer the endpoint that would reach this request's first token soonest.

Per endpoint the scorer keeps the uncached prompt tokens of the requests it sent there whose
response has not started yet: the prefill work queued ahead of a new request. A request's cost on
an endpoint is that backlog plus its own uncached tokens there, the prompt's estimated length less
what the prefix-cache scorer believes the endpoint holds (that scorer must come earlier in the
profile; without it every prompt counts as uncached everywhere). A prefill costs time per token, so
the cost reads as a predicted time to first token in token units; unlike the request counts of the
queue and in-flight scorers it tells a 60-token cache hit from a 360-token miss.

The ext_proc service reports a response as started on its first body chunk: vLLM's first SSE
event comes once the first token exists (for chat, the role event just before it), so that ends the
prefill. A server that streams an event before prefilling (inferplane's own server sends the chat
role event at once) ends the backlog early for chat requests; completions are unaffected.
"""

from __future__ import annotations

from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field

from inferplane.picker.endpoints import Endpoint
from inferplane.picker.request import InferenceRequest
from inferplane.picker.scheduling.plugin import CycleContext, Scorer
from inferplane.picker.scheduling.prefix import MATCHED_TOKENS_KEY, PROMPT_TOKENS_KEY
from inferplane.picker.scheduling.registry import register


class PrefillBacklogParameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    #: Characters per prompt token, to estimate a prompt's length (the prefix scorer's default).
    chars_per_token: float = Field(4.0, gt=0)
    #: Tokens added to every cost before comparing: the fixed part of a prefill (a step, the API
    #: server), so that an empty endpoint does not make every other one score near 0.
    offset_tokens: float = Field(64.0, ge=0)


@register("predicted-ttft-scorer")
class PrefillBacklogScorer(Scorer):
    """Less prefill ahead of the request (its own uncached tokens included) is better:
    ``(min cost + offset) / (cost + offset)`` over the candidates, 1 for the cheapest.

    A ratio, not a difference: the score means the same for 300-token and 7,000-token prompts, and
    a backlog has to grow several times the cost of a cache miss before it outweighs the
    prefix-cache scorer at the same weight (moving a shared prefix elsewhere under load thrashes
    the KV caches: every later request of its group then misses too).
    """

    type_name = "prefill-backlog-scorer"
    Parameters = PrefillBacklogParameters

    def __init__(self, name: str = "", parameters: BaseModel | None = None) -> None:
        super().__init__(name, parameters)
        p: PrefillBacklogParameters = self.parameters  # type: ignore[assignment]
        self.chars_per_token = p.chars_per_token
        self.offset = p.offset_tokens
        #: Uncached prompt tokens of the requests routed to each address whose response has not started.
        self.backlog: dict[str, float] = {}
        #: ``InferenceRequest.state`` key: (address, tokens this request added there); per instance,
        #: so a scheduler rebuilt while requests are in flight never subtracts another's tokens.
        self.state_key = f"prefill-backlog-scorer.routed.{id(self)}"

    def prompt_tokens(self, request: InferenceRequest) -> float:
        """The prompt's token count: exact when a scorer tokenized it, else estimated from its length."""
        exact = request.state.get(PROMPT_TOKENS_KEY)
        if exact is not None:
            return float(exact)
        return len(request.prompt) / self.chars_per_token

    def costs(self, ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[float]:
        """Per endpoint: its prefill backlog plus this request's uncached tokens there."""
        prompt = self.prompt_tokens(ctx.request)
        costs = [prompt] * len(endpoints)
        matched: dict[str, int] | None = ctx.request.state.get(MATCHED_TOKENS_KEY)
        if not self.backlog and not matched:
            return costs
        # only the endpoints with a backlog or a cached prefix differ from the prompt's length
        where = ctx.positions(endpoints).get
        for address, tokens in self.backlog.items():
            i = where(address)
            if i is not None:
                costs[i] += tokens
        for address, cached in (matched or {}).items():
            i = where(address)
            if i is not None:
                costs[i] -= min(prompt, cached)
        return costs

    def score(self, ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[float]:
        if not endpoints:
            return []
        costs = self.costs(ctx, endpoints)
        offset = self.offset
        best = min(costs) + offset
        if best <= 0.0:  # offset 0 and a free endpoint: it alone scores 1
            return [1.0 if c <= 0.0 else 0.0 for c in costs]
        return [best / (c + offset) for c in costs]

    def on_picked(self, ctx: CycleContext, endpoint: Endpoint) -> None:
        request = ctx.request
        prompt = self.prompt_tokens(request)
        matched: dict[str, int] = request.state.get(MATCHED_TOKENS_KEY) or {}
        tokens = max(0.0, prompt - matched.get(endpoint.address, 0))
        request.state[self.state_key] = (endpoint.address, tokens)
        self.backlog[endpoint.address] = self.backlog.get(endpoint.address, 0.0) + tokens

    def on_response_started(self, request: InferenceRequest, endpoint: Endpoint) -> None:
        routed = request.state.pop(self.state_key, None)
        if routed is None:
            return
        address, tokens = routed
        left = self.backlog.get(address)
        if left is not None:
            left -= tokens
            if left > 1e-6:
                self.backlog[address] = left
            else:  # only endpoints with a backlog are kept: scoring walks them
                del self.backlog[address]

    def forget_endpoint(self, address: str) -> None:
        self.backlog.pop(address, None)
