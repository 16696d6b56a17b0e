"""Flow control policies, driven directly: bands, tenant fairness, ordering, limits, time-to-live, cancellation."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest
from picker_support import wait_until

from inferplane.picker.endpoints import Datastore, Endpoint, EndpointMetrics
from inferplane.picker.errors import QueueFull, QueueTimeout, RequestRejected, Saturated
from inferplane.picker.flowcontrol.config import FlowControlConfig
from inferplane.picker.flowcontrol.controller import FlowController
from inferplane.picker.metrics import PickerMetrics
from inferplane.picker.request import InferenceRequest
from inferplane.picker.scheduling.saturation import UtilizationDetector, UtilizationParameters


class Pool:
    """A pool with ``slots`` free places: saturated once that many requests were dispatched."""

    def __init__(self, slots: int = 0) -> None:
        self.slots = slots
        self.used = 0
        self.order: list[str] = []

    def is_saturated(self, pending: bool) -> bool:
        return self.used >= self.slots

    def open(self, controller: FlowController, slots: int) -> list[str]:
        """Make room for ``slots`` more requests, let the controller dispatch; what went, in order."""
        before = len(self.order)
        self.slots += slots
        controller.pump()
        return self.order[before:]


class Owner:
    def __init__(self, pool: Pool, name: str) -> None:
        self.pool = pool
        self.name = name
        self.error: RequestRejected | None = None
        self.told = 0

    def dispatched(self, engine_rank: int | None = None) -> None:
        self.told += 1
        self.pool.used += 1
        self.pool.order.append(self.name)

    def rejected(self, error: RequestRejected) -> None:
        self.told += 1
        self.error = error


def request(priority: int = 0, tenant: str = "", slo_ms: float | None = None) -> InferenceRequest:
    return InferenceRequest("r", priority=priority, fairness_id=tenant, slo_ttft_ms=slo_ms, model="m",
                            requested_model="m")


def controller(pool: Pool, metrics: PickerMetrics | None = None, **config: object) -> FlowController:
    return FlowController(FlowControlConfig(enabled=True, **config), pool.is_saturated, metrics, "pool")


def submit(fc: FlowController, pool: Pool, name: str, size: int = 100, **kwargs: object) -> Owner:
    owner = Owner(pool, name)
    fc.enqueue(owner, request(**kwargs), size)
    return owner


async def test_pool_with_room_dispatches_at_once_without_queueing() -> None:
    pool = Pool(slots=2)
    fc = controller(pool)
    owner = Owner(pool, "a")
    assert fc.enqueue(owner, request(), 10) is None
    assert pool.order == ["a"] and fc.queued == 0


async def test_bands_go_in_strict_priority_order() -> None:
    pool = Pool()
    fc = controller(pool, queue_sheddable=True)
    for name, priority in [("low1", 0), ("shed", -5), ("high1", 10), ("low2", 0), ("high2", 10), ("mid", 3)]:
        submit(fc, pool, name, priority=priority)
    assert fc.queued == 6 and pool.order == []
    assert pool.open(fc, 2) == ["high1", "high2"]
    # a later, more important arrival overtakes everything still queued
    submit(fc, pool, "high3", priority=10)
    assert pool.open(fc, 10) == ["high3", "mid", "low1", "low2", "shed"]
    assert fc.queued == 0


async def test_round_robin_serves_tenants_in_turn() -> None:
    pool = Pool()
    fc = controller(pool)
    for name in ["a1", "a2", "a3", "b1", "b2", "b3", "c1"]:
        submit(fc, pool, name, tenant=name[0])
    assert pool.open(fc, 7) == ["a1", "b1", "c1", "a2", "b2", "a3", "b3"]


async def test_weighted_round_robin_shares_by_weight_and_interleaves() -> None:
    pool = Pool()
    fc = controller(pool, fairness="weighted-round-robin", weights={"gold": 3})  # silver: default weight 1
    for i in range(40):
        submit(fc, pool, f"gold{i}", tenant="gold")
        submit(fc, pool, f"silver{i}", tenant="silver")
    went = pool.open(fc, 40)
    tenants = [name.rstrip("0123456789") for name in went]
    assert Counter(tenants) == {"gold": 30, "silver": 10}
    for window in range(0, 40, 4):  # smooth: every 4 dispatches hold 3 gold and 1 silver
        assert Counter(tenants[window : window + 4]) == {"gold": 3, "silver": 1}
    assert [n for n in went if n.startswith("gold")] == [f"gold{i}" for i in range(30)]  # FCFS inside a flow


async def test_edf_orders_a_flow_by_ttft_deadline() -> None:
    pool = Pool()
    fc = controller(pool, ordering="edf")
    for name, slo in [("lax", 5000.0), ("none", None), ("tight", 100.0), ("medium", 1000.0)]:
        submit(fc, pool, name, slo_ms=slo)
    assert pool.open(fc, 4) == ["tight", "medium", "lax", "none"]


async def test_fcfs_ignores_deadlines() -> None:
    pool = Pool()
    fc = controller(pool)
    for name, slo in [("lax", 5000.0), ("tight", 100.0)]:
        submit(fc, pool, name, slo_ms=slo)
    assert pool.open(fc, 2) == ["lax", "tight"]


async def test_global_strict_ignores_tenants_and_bands_can_differ() -> None:
    pool = Pool()
    fc = controller(pool, fairness="round-robin", bands=[{"priority": 5, "fairness": "global-strict"}])
    for name in ["a1", "a2", "b1"]:
        submit(fc, pool, name, tenant=name[0], priority=5)
    for name in ["a1", "a2", "b1"]:
        submit(fc, pool, "p0-" + name, tenant=name[0], priority=0)
    assert pool.open(fc, 6) == ["a1", "a2", "b1", "p0-a1", "p0-b1", "p0-a2"]


async def test_band_limits_on_requests_and_bytes_give_429() -> None:
    pool = Pool()
    fc = controller(pool, max_requests=2, bands=[{"priority": 1, "max_bytes": 250}])
    submit(fc, pool, "a")
    submit(fc, pool, "b")
    with pytest.raises(QueueFull) as full:
        submit(fc, pool, "c")
    assert full.value.status == 429 and full.value.reason == "rejected-queue-full"
    submit(fc, pool, "x", size=200, priority=1)  # another band has its own limits
    with pytest.raises(QueueFull):
        submit(fc, pool, "y", size=100, priority=1)  # 300 bytes > 250
    submit(fc, pool, "z", size=50, priority=1)
    assert fc.queue_sizes() == {(0, "default"): (2, 200), (1, "default"): (2, 250)}


async def test_time_to_live_rejects_with_503() -> None:
    pool = Pool()
    fc = controller(pool, ttl=60, bands=[{"priority": 0, "ttl": 0.05}])
    keep = submit(fc, pool, "keep", priority=1)
    expire = submit(fc, pool, "expire", priority=0)
    await wait_until(lambda: expire.error is not None)
    assert isinstance(expire.error, QueueTimeout)
    assert expire.error.status == 503 and expire.error.reason == "queue-ttl-expired"
    assert fc.queue_sizes() == {(1, "default"): (1, 100)}
    assert pool.open(fc, 5) == ["keep"] and keep.error is None and expire.told == 1


@pytest.mark.parametrize("ordering", ["fcfs", "edf"])
async def test_cancelled_request_leaves_the_queue_at_once(ordering: str) -> None:
    pool = Pool()
    metrics = PickerMetrics()
    fc = controller(pool, metrics, ordering=ordering)
    owners = [Owner(pool, name) for name in ["a", "b", "c"]]
    items = [fc.enqueue(owner, request(slo_ms=100.0 * i), 100) for i, owner in enumerate(owners)]
    fc.cancel(items[1])
    fc.cancel(items[1])  # idempotent
    assert fc.queue_sizes() == {(0, "default"): (2, 200)}
    labels = {"fairness_id": "default", "priority": "0", "inference_pool": "pool", "model_name": "m",
              "target_model_name": "m"}
    assert metrics.registry.get_sample_value("inference_extension_flow_control_queue_size", labels) == 2
    assert metrics.registry.get_sample_value("inference_extension_flow_control_queue_bytes", labels) == 200
    assert pool.open(fc, 5) == ["a", "c"] and owners[1].told == 0
    assert metrics.registry.get_sample_value(
        "inference_extension_flow_control_request_queue_duration_seconds_count",
        {**labels, "outcome": "EvictedContextCancelled"},
    ) == 1
    assert metrics.registry.get_sample_value(
        "inferplane_picker_dropped_requests_total",
        {"reason": "client-disconnected", "priority": "0", "fairness_id": "default"},
    ) == 1
    assert metrics.registry.get_sample_value("inference_extension_flow_control_queue_size", labels) == 0


async def test_sheddable_gets_429_on_a_saturated_pool_unless_configured_to_wait() -> None:
    pool = Pool()
    fc = controller(pool)
    with pytest.raises(Saturated) as shed:
        submit(fc, pool, "shed", priority=-1)
    assert shed.value.status == 429 and shed.value.reason == "rejected-saturated"
    waiting = controller(pool, queue_sheddable=True)
    submit(waiting, pool, "shed", priority=-1)
    assert waiting.queued == 1


async def test_new_arrivals_queue_behind_a_backlog_even_when_the_pool_has_room() -> None:
    pool = Pool()
    fc = controller(pool)
    submit(fc, pool, "first")
    pool.slots = 1  # room appeared but nobody pumped yet: the newcomer must not overtake
    submit(fc, pool, "second")
    assert pool.order == ["first"] and fc.queued == 1


async def test_dispatch_outcomes_are_recorded_per_tenant_and_band() -> None:
    pool = Pool()
    metrics = PickerMetrics()
    fc = controller(pool, metrics)
    submit(fc, pool, "a", tenant="t1", priority=2)
    pool.open(fc, 1)
    samples = {
        s.labels["outcome"]: s.value
        for s in metrics.registry.collect()
        for s in s.samples
        if s.name == "inference_extension_flow_control_request_queue_duration_seconds_count"
    }
    assert samples == {"Dispatched": 1}
    assert metrics.registry.get_sample_value("inference_extension_flow_control_dispatch_cycle_duration_seconds_count")


def test_pending_requests_count_towards_saturation_only_when_asked() -> None:
    detector = UtilizationDetector()
    ep = Endpoint("10.0.0.1:8000", EndpointMetrics(waiting=2), updated_at=100.0)
    ep.routed_since_scrape = 3
    assert detector.endpoint_saturation(ep, 100.0, 0.2) == pytest.approx(0.4)
    assert detector.endpoint_saturation(ep, 100.0, 0.2, pending=True) == pytest.approx(1.0)
    # a request routed since the scrape that finished is no longer pending ...
    ep.in_flight = 3
    ep.request_finished(ep.scrape_generation)
    assert ep.pending == 2
    # ... and one routed before the scrape frees load the scrape still shows
    ep.request_finished(ep.scrape_generation - 1)
    assert ep.pending == 1 and ep.in_flight == 1


def test_requests_a_scrape_does_not_show_yet_still_count_towards_saturation() -> None:
    """A routed request spends a while on its way and in the server's API process before it joins the
    queue the server reports; a scrape in that time resets ``pending`` but must not make it vanish."""
    detector = UtilizationDetector(parameters=UtilizationParameters(queue_threshold=4))
    datastore = Datastore()
    ep = Endpoint("10.0.0.1:8000", EndpointMetrics(running=8), updated_at=100.0)
    ep.in_flight = 8  # the batch the scrape shows
    for _ in range(4):
        ep.request_routed()
        ep.routed_since_scrape += 1
    assert detector.pool_saturation([ep], 100.0, 0.2, pending=True) == pytest.approx(1.0)
    datastore.record_scrape(ep, EndpointMetrics(running=8), now=100.05)  # the four are not in its queue yet
    assert ep.pending == 0
    assert ep.queued(ep.metrics) == 4
    assert detector.pool_saturation([ep], 100.05, 0.2, pending=True) == pytest.approx(1.0)
    assert detector.endpoint_saturation(ep, 100.05, 0.2, pending=True) == pytest.approx(1.0)
    # once the server shows them, they count once, not twice
    datastore.record_scrape(ep, EndpointMetrics(running=8, waiting=4), now=100.1)
    assert ep.queued(ep.metrics) == 4


def test_config_errors_name_the_policy() -> None:
    with pytest.raises(ValueError, match="unknown fairness policy 'fair'; known: global-strict, round-robin"):
        FlowControlConfig(fairness="fair")
    with pytest.raises(ValueError, match="unknown ordering policy"):
        FlowControlConfig(bands=[{"priority": 1, "ordering": "lifo"}])
    with pytest.raises(ValueError, match="each priority may appear once"):
        FlowControlConfig(bands=[{"priority": 1}, {"priority": 1}])
    with pytest.raises(ValueError, match="weight of 'a' must be greater than 0"):
        FlowControlConfig(weights={"a": 0})


async def test_queued_requests_stay_while_the_pool_is_saturated() -> None:
    pool = Pool()
    fc = controller(pool)
    owner = submit(fc, pool, "a")
    await asyncio.sleep(0.05)
    assert owner.told == 0 and fc.queued == 1


# ---- ranked dispatch (servers that schedule by priority) --------------------------------------


class RankedPool(Pool):
    """A priority-scheduling pool: a request of some engine rank meets only the load of its rank and above."""

    def __init__(self, slots: int = 0) -> None:
        super().__init__(slots)
        self.ranks: list[int] = []

    def is_saturated(self, pending: bool, rank: int | None = None) -> bool:
        return sum(1 for other in self.ranks if rank is None or other >= rank) >= self.slots


class RankedOwner(Owner):
    def __init__(self, pool: RankedPool, name: str) -> None:
        super().__init__(pool, name)
        self.rank: int | None = None

    def dispatched(self, engine_rank: int | None = None) -> None:
        super().dispatched(engine_rank)
        assert engine_rank is not None
        self.rank = engine_rank
        self.pool.ranks.append(engine_rank)  # type: ignore[attr-defined]


def ranked(pool: RankedPool, **config: object) -> FlowController:
    return FlowController(FlowControlConfig(enabled=True, **config), pool.is_saturated, None, "pool", ranked=True)


def submit_ranked(fc: FlowController, pool: RankedPool, name: str, **kwargs: object) -> RankedOwner:
    owner = RankedOwner(pool, name)
    fc.enqueue(owner, request(**kwargs), 100)
    return owner


async def test_ranked_dispatch_does_not_hold_critical_behind_sheddable_load() -> None:
    pool = RankedPool(slots=2)
    fc = ranked(pool, queue_sheddable=True)
    fillers = [submit_ranked(fc, pool, f"s{i}", priority=-1) for i in range(3)]
    assert [f.told for f in fillers] == [1, 1, 0]  # the pool is full of sheddable work: the third waits
    critical = submit_ranked(fc, pool, "c", priority=10)
    assert critical.told == 1 and critical.rank == 21  # the server runs it first, preempting filler work
    assert fillers[2].told == 0
    assert fc.running == {-1: {"default": 2}, 10: {"default": 1}}


async def test_unranked_dispatch_holds_every_band_while_the_pool_is_saturated() -> None:
    pool = Pool(slots=2)
    fc = controller(pool, queue_sheddable=True)
    submit(fc, pool, "s0", priority=-1)
    submit(fc, pool, "s1", priority=-1)
    assert submit(fc, pool, "c", priority=10).told == 0


async def test_a_tenant_within_its_share_overtakes_a_heavy_tenant_in_its_band() -> None:
    pool = RankedPool(slots=4)
    fc = ranked(pool)
    heavy = [submit_ranked(fc, pool, f"h{i}", tenant="heavy") for i in range(6)]
    # The first request of a tenant is within its share; beyond it, heavy runs at the band's lower rank.
    assert [h.rank for h in heavy[:4]] == [1, 0, 0, 0] and [h.told for h in heavy[4:]] == [0, 0]
    light = submit_ranked(fc, pool, "l", tenant="light")
    assert light.told == 1 and light.rank == 1  # dispatched at once, ahead of heavy's queue
    assert [h.told for h in heavy[4:]] == [0, 0]


async def test_share_within_a_band_follows_the_weights() -> None:
    fc = ranked(RankedPool(slots=100), weights={"a": 3.0})
    fc.running = {0: {"a": 2, "b": 1}}
    # a: weight 3 of 4 → share of 4 in flight is 3: one more keeps it within; b: 1 of 4 → 1, it has 1 already.
    assert fc.within_share(0, "a") and not fc.within_share(0, "b")
    assert fc.within_share(0, "c")  # a tenant with nothing in flight always is
    fc.finished(0, "b")
    assert fc.running == {0: {"a": 2}} and fc.within_share(0, "b")


async def test_ranked_pump_serves_tenants_within_share_first() -> None:
    pool = RankedPool(slots=2)
    fc = ranked(pool)
    heavy = [submit_ranked(fc, pool, f"h{i}", tenant="heavy") for i in range(4)]
    light = [submit_ranked(fc, pool, f"l{i}", tenant="light") for i in range(2)]
    assert [o.rank for o in heavy] == [1, 0, None, None] and [o.rank for o in light] == [1, None]

    def finish(owner: RankedOwner, tenant: str) -> None:
        pool.ranks.remove(owner.rank)  # type: ignore[arg-type]
        fc.finished(0, tenant)
        fc.pump()

    finish(heavy[1], "heavy")  # room at rank 0 only: both tenants are within share, rank 1 is still full
    assert heavy[2].told == light[1].told == 0
    finish(light[0], "light")  # light (0 in flight) is within its share, heavy (1 of 1) is not: light goes first
    assert light[1].rank == 1 and heavy[2].told == 0


def test_saturation_for_a_rank_leaves_out_lower_ranked_requests() -> None:
    now = 100.0
    ep = Endpoint("10.0.0.1:8000", EndpointMetrics(waiting=6, running=8, kv_cache_usage=0.9), updated_at=now)
    for rank in (-2, -2, -2, -2, -2, -2, 21, 21):
        ep.request_routed(rank)
    detector = UtilizationDetector()
    assert detector.endpoint_saturation(ep, now, 1.0) == pytest.approx(1.2)
    # rank 21 meets the 2 critical requests only: 0 waiting, 2/8 of the KV use
    assert detector.endpoint_saturation(ep, now, 1.0, rank=21) == pytest.approx(0.9 * 2 / 8 / 0.8)
    ep.request_finished(ep.scrape_generation, 21)
    assert ep.ranks == {-2: 6, 21: 1} and ep.load_below(22) == 7 and ep.load_below(-2) == 0
