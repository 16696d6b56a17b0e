"""The plugin kinds of the scheduling framework and what they see of one scheduling cycle."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from inferplane.picker.endpoints import Endpoint
from inferplane.picker.request import InferenceRequest


class NoParameters(BaseModel):
    """Parameters of a plugin that takes none."""

    model_config = ConfigDict(extra="forbid")


@dataclass(slots=True)
class CycleContext:
    """One scheduling cycle: the request and the clock the endpoints' metrics are judged by."""

    request: InferenceRequest
    now: float
    staleness: float
    _positions: dict[str, int] | None = None
    _positions_of: Sequence[Endpoint] | None = None

    def positions(self, endpoints: Sequence[Endpoint]) -> dict[str, int]:
        """``{address: index in endpoints}``, built once per candidate list: scorers that know a few
        addresses (a prefix match, a backlog) update just those scores instead of looking up every
        endpoint."""
        if self._positions_of is not endpoints or self._positions is None:
            self._positions = {ep.address: i for i, ep in enumerate(endpoints)}
            self._positions_of = endpoints
        return self._positions


class Plugin:
    """A named plugin built from ``{type, name, parameters}``; ``Parameters`` validates the latter."""

    type_name: ClassVar[str] = ""
    Parameters: ClassVar[type[BaseModel]] = NoParameters

    def __init__(self, name: str = "", parameters: BaseModel | None = None) -> None:
        self.name = name or self.type_name
        self.parameters = parameters if parameters is not None else self.Parameters()

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class Filter(Plugin):
    """Removes endpoints that must not serve the request."""

    def filter(self, ctx: CycleContext, endpoints: list[Endpoint]) -> list[Endpoint]:
        raise NotImplementedError


class Scorer(Plugin):
    """Scores each endpoint in [0, 1]; higher is better."""

    def score(self, ctx: CycleContext, endpoints: Sequence[Endpoint]) -> list[float]:
        raise NotImplementedError

    def on_picked(self, ctx: CycleContext, endpoint: Endpoint) -> None:
        """The request was sent to ``endpoint`` (scorers that learn from routing override this)."""

    def on_response_started(self, request: InferenceRequest, endpoint: Endpoint) -> None:
        """The response to ``request`` (sent to ``endpoint``) began: its prompt is prefilled.

        Called on the first response body chunk (the first token of a stream), or when the request
        ends without one; it may come more than once for a request, so overrides must be idempotent.
        """

    def forget_endpoint(self, address: str) -> None:
        """``address`` left the pool: drop any state kept about it."""


class Picker(Plugin):
    """Orders endpoints by their combined scores: the picked one first, then fallbacks."""

    def pick(self, endpoints: Sequence[Endpoint], scores: Sequence[float], count: int) -> list[Endpoint]:
        raise NotImplementedError


class SaturationDetector(Plugin):
    """Says whether the pool is too loaded to admit sheddable requests (or, with flow control, any more).

    ``pending=True`` also counts the requests routed since each endpoint's last scrape, which its
    metrics cannot show yet (flow control paces the draining of its queues with it). ``rank``: judge
    it for a request of that engine rank, leaving out the load of lower ranks (ranked flow control).
    """

    def endpoint_saturation(self, endpoint: Endpoint, now: float, staleness: float, pending: bool = False,
                            rank: int | None = None) -> float:
        raise NotImplementedError

    def pool_saturation(self, endpoints: Sequence[Endpoint], now: float, staleness: float,
                        pending: bool = False, rank: int | None = None) -> float:
        raise NotImplementedError

    def is_saturated(self, endpoints: Sequence[Endpoint], now: float, staleness: float, pending: bool = False,
                     rank: int | None = None) -> bool:
        return self.pool_saturation(endpoints, now, staleness, pending, rank) >= 1.0
