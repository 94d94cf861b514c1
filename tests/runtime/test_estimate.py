"""The context estimator on synthetic traces: steps are followed within a few requests, noise does not flap
the cut, one outlier moves nothing."""

from __future__ import annotations

import numpy as np
import pytest

from dnnsplit.errors import UsageError
from dnnsplit.partition.elastic import Context, ElasticSpec, decide
from dnnsplit.runtime.estimate import (
    ContextEstimator,
    EstimatorSettings,
    Observation,
    Tracker,
    edge_header,
    parse_edge_header,
    uplink_sample,
)
from tests.fixtures.elastic import two_piece_spec

BODY = 400_000  # bytes read per request


def _upload(rate_mbps: float, rtt_ms: float = 20.0, compute_ms: float = 5.0) -> Observation:
    read_ms = BODY * 8 / (rate_mbps * 1000)
    return Observation(
        read_bytes=BODY, read_ms=read_ms, wall_ms=rtt_ms + read_ms + compute_ms, edge_total_ms=read_ms + compute_ms
    )


def _spec() -> ElasticSpec:
    """cut-1 (11 ms + 10 kB up) and all-local (20 ms) cost the same at 10 Mbit/s and no rtt."""
    return two_piece_spec(cut_up_bytes=11_250, cut_returns=False, rtt_ms=0.0)


def test_a_step_in_the_uplink_is_followed_within_two_requests() -> None:
    rng = np.random.default_rng(0)
    estimator = ContextEstimator(Context(30, 60, 20))
    rates = [30.0] * 40 + [1.0] * 20 + [8.0] * 20
    seen = []
    for i, rate in enumerate(rates):
        changed = estimator.observe(_upload(rate * float(np.exp(rng.normal(0, 0.1)))), now=float(i))
        seen.append((changed, estimator.context().up_mbps))
    assert all(abs(up / 30 - 1) < 0.2 for _, up in seen[5:40])
    # The second request after each step completes it; the first is held back.
    assert seen[40][0] == [] and abs(seen[40][1] / 30 - 1) < 0.2
    assert seen[41][0] == ["uplink"] and abs(seen[41][1] - 1.0) < 0.25
    assert seen[61][0] == ["uplink"] and abs(seen[61][1] / 8 - 1) < 0.25
    assert estimator.up.steps == 2
    assert estimator.context().down_mbps == pytest.approx(estimator.context().up_mbps * 2)


def test_one_outlier_moves_nothing_and_a_moderate_change_is_averaged_in() -> None:
    tracker = Tracker(10.0, EstimatorSettings())
    tracker.update(10.0)
    tracker.update(100.0)  # one burst
    assert tracker.value == 10.0
    tracker.update(10.0)
    assert tracker.value == pytest.approx(10.0) and tracker.steps == 0
    for _ in range(15):
        tracker.update(14.0)  # 1.4x: in band, averaged
    assert tracker.steps == 0 and tracker.value == pytest.approx(14.0, rel=0.01)


def test_a_noisy_constant_link_does_not_flap_the_cut() -> None:
    spec = _spec()
    rng = np.random.default_rng(1)
    estimator = ContextEstimator(Context(10, 10, 0))

    def run(hysteresis: float) -> int:
        current, switches = None, 0
        for i in range(300):
            rate = 10.0 * float(np.exp(rng.normal(0, 0.15)))
            estimator.observe(_upload(rate, rtt_ms=0.0), now=float(i))
            chosen = decide(spec, estimator.context(), current=current, hysteresis=hysteresis).candidate
            switches += current is not None and chosen.boundary != current
            current = chosen.boundary
        return switches

    assert run(0.0) > 20  # without hysteresis the cut flips back and forth with the noise ...
    assert run(0.1) <= 1  # ... with 10% it holds


def test_round_trip_phone_speed_and_edge_load() -> None:
    estimator = ContextEstimator(Context(10, 10, 10))
    for i in range(6):
        estimator.observe(_upload(10.0, rtt_ms=10.0), now=float(i))
    assert estimator.context().rtt_ms == pytest.approx(10.0, abs=0.5)
    estimator.observe(_upload(10.0, rtt_ms=120.0))
    assert estimator.observe(_upload(10.0, rtt_ms=120.0)) == ["rtt"]
    assert estimator.context().rtt_ms == pytest.approx(120.0, abs=1)
    for _ in range(3):
        estimator.observe(Observation(phone_profiled_ms=50.0, phone_ms=100.0))
    assert estimator.context().phone_speed == pytest.approx(0.5)
    # The edge computes at its profiled speed but 3 requests wait behind its one slot: 4x.
    for _ in range(3):
        estimator.observe(Observation(edge_profiled_ms=4.0, edge_compute_ms=4.0, edge_queued=3))
    assert estimator.context().edge_load == pytest.approx(4.0)
    header = parse_edge_header(edge_header(3, 1, 2, 4096, 3.25, 7.5))
    assert header == {
        "queued": 3, "computing": 1, "concurrency": 2, "read-bytes": 4096, "read-ms": 3.25, "total-ms": 7.5
    }
    tail = parse_edge_header(edge_header(0, 1, 1, 16_000, 90.0, 95.0, 8_000, 80.0))
    assert tail["tail-bytes"] == 8_000 and tail["tail-ms"] == 80.0 and tail["read-bytes"] == 16_000


def test_the_uplink_is_read_from_the_bodys_second_half_past_a_shapers_burst() -> None:
    """A 0.2 Mbit/s link whose shaper lets 3 kB through at once (tbf's burst): of a 16 kB body, 1.4 kB
    come in the first chunk, the next 3 kB at once, the rest at 25 kB/s. All but the first chunk reads
    0.25 Mbit/s; the second half (8 kB in 320 ms) reads the link's 0.2."""
    rate = 0.2e6 / 8
    read_bytes, read_ms = 16_000 - 1_400, (16_000 - 1_400 - 3_000) / rate * 1000
    tail_bytes, tail_ms = 8_000, 8_000 / rate * 1000
    assert uplink_sample(read_bytes, read_ms, tail_bytes, tail_ms, 2.0) == (tail_bytes, tail_ms)
    assert uplink_sample(read_bytes, read_ms, tail_bytes, 1.5, 2.0) == (read_bytes, read_ms)  # too short
    assert uplink_sample(read_bytes, 1.0, None, None, 2.0) is None
    estimator = ContextEstimator(Context(30, 60, 20))
    estimator.observe(Observation(read_bytes=read_bytes, read_ms=read_ms, tail_bytes=tail_bytes, tail_ms=tail_ms))
    assert estimator.context().up_mbps == pytest.approx(0.2)
    burst = ContextEstimator(Context(30, 60, 20))
    burst.observe(Observation(read_bytes=read_bytes, read_ms=read_ms))  # an edge that did not say the tail
    assert burst.context().up_mbps > 0.25


def test_an_idle_link_asks_for_a_probe_sized_to_the_estimate() -> None:
    estimator = ContextEstimator(Context(10, 10, 10))
    estimator.observe(_upload(10.0), now=100.0)
    assert not estimator.needs_probe(now=100.5) and estimator.needs_probe(now=101.0)
    assert estimator.probe_bytes() == 125_000  # 100 ms at 10 Mbit/s
    slow = ContextEstimator(Context(0.2, 0.2, 10))
    assert slow.probe_bytes() == 16_384  # 100 ms at 0.2 Mbit/s is 2.5 kB: at least 16 kB, past a burst
    estimator.observe(Observation(read_bytes=BODY, read_ms=1.0))  # too short to measure: no sample
    assert estimator.up.samples == 1
    with pytest.raises(UsageError, match="alpha"):
        ContextEstimator(Context(1, 1, 1), EstimatorSettings(alpha=0))


def test_in_flight_windows_see_a_step_within_half_a_second_of_upload() -> None:
    """A 0.2 Mbit/s upload timed every 0.25 s (connection.UploadMeter): the second window completes the
    step, 0.5 s into the upload, long before the request ends; the request's end adds nothing new."""
    rng = np.random.default_rng(1)
    estimator = ContextEstimator(Context(30, 60, 20))
    for i in range(10):
        estimator.observe(_upload(30 * float(np.exp(rng.normal(0, 0.1)))), now=float(i))
    window_ms = 250.0
    stepped_at = None
    for k in range(1, 9):  # 8 windows: a 50 kB JPEG at 0.2 Mbit/s takes 2 s
        taken = int(0.2e6 / 8 * window_ms / 1000 * float(np.exp(rng.normal(0, 0.1))))
        if estimator.observe_upload(taken, window_ms, now=10 + k * 0.25) and stepped_at is None:
            stepped_at = k * window_ms
    assert stepped_at == 500.0 and estimator.context().up_mbps == pytest.approx(0.2, rel=0.2)
    assert estimator.observe(Observation()) == ["uplink"]  # reported with the request that saw it
    assert estimator.observe(Observation()) == []
    # windows too short to say anything are skipped; a steady in-flight rate is averaged in
    assert not estimator.observe_upload(100, 1.0) and estimator.up.samples == 18
    for _ in range(20):
        estimator.observe_upload(int(0.2e6 / 8 * 0.25), 250.0)
    assert estimator.up.steps == 1 and estimator.context().up_mbps == pytest.approx(0.2, rel=0.1)


def test_an_abandoned_upload_drops_the_estimate_at_once_but_never_raises_it() -> None:
    estimator = ContextEstimator(Context(30, 60, 20))
    estimator.observe(_upload(30))
    # 130 ms past its start the link had taken 3.2 kB: at most 0.2 Mbit/s, believed without a second sample
    assert estimator.observe_abandoned(3250, 130.0)
    assert estimator.context().up_mbps == pytest.approx(0.2) and estimator.up.steps == 1
    assert not estimator.observe_abandoned(10**6, 100.0)  # 80 Mbit/s "at most": says nothing
    assert estimator.context().up_mbps == pytest.approx(0.2)
    assert not estimator.observe_abandoned(0, 0.5)  # too short to mean anything
