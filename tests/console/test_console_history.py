"""Chart samples and counter rates kept by the console."""

from __future__ import annotations

from inferplane.console.history import History, Rates, sample


def test_rates_average_over_the_window_and_survive_a_counter_reset() -> None:
    rates = Rates(window_s=2.0)
    assert rates.rate("rq", 10, 100.0) is None  # one read: no rate yet
    assert rates.rate("rq", 10, 100.5) == 0.0
    assert rates.rate("rq", 14, 101.0) == 4.0  # (14 − 10) / 1 s
    assert rates.rate("rq", 14, 101.5) == 4 / 1.5  # a quiet half second does not read as zero
    assert rates.rate("rq", 20, 103.0) == 6 / 2.0  # the window slid: from the 101.0 read
    assert rates.rate("rq", 3, 103.5) is None  # restarted (the counter went down)
    assert rates.rate("rq", 5, 104.0) == 4.0
    assert rates.rate("rq", None, 104.5) is None and rates.rate("rq", 6, 105.0) is None


def test_samples_hold_per_endpoint_load_and_the_history_is_bounded() -> None:
    state = {"saturation": 0.4, "flow_control": {"queued": 3},
             "endpoints": [{"address": "10.0.0.1:8000", "running": 2, "waiting": 1, "kv_cache_usage": 0.3,
                            "in_flight": 3}]}
    history = History(size=3)
    rates = Rates()
    for i in range(5):
        gateway = {"downstream_rq_total": 10 * i, "downstream_rq_5xx": i,
                   "cluster.inference_pool.upstream_rq_total": 6 * i}
        history.add(sample(float(i), state, gateway, rates, decisions_total=5 * i))
    assert len(history) == 3 and [s["t"] for s in history.since()] == [2.0, 3.0, 4.0]
    assert [s["t"] for s in history.since(3.0)] == [4.0]
    last = history.last()
    assert last is not None
    assert last["endpoints"]["10.0.0.1:8000"] == {"running": 2, "waiting": 1, "kv": 0.3, "in_flight": 3}
    assert (last["saturation"], last["queued"]) == (0.4, 3)
    assert (last["rps"], last["gateway_rps"], last["errors_ps"], last["decisions_ps"]) == (6.0, 10.0, 1.0, 5.0)
    empty = sample(9.0, None, None, Rates(), None)
    assert empty["endpoints"] == {} and empty["rps"] is None and empty["saturation"] is None
