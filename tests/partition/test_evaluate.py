"""evaluate() against numbers worked out by hand from docs/cost-model.md."""

from __future__ import annotations

import pytest

from dnnsplit.errors import UsageError
from dnnsplit.partition import LayerCost, LinkSpec, MobilePower, Objective, Problem, Tensor, evaluate

WIFI_UP_W = (283.17 * 8 + 132.86) / 1000  # Huang et al. WiFi model at 8 Mbit/s up: 2.39822 W
WIFI_DOWN_W = (137.01 * 16 + 132.86) / 1000  # ... and 16 Mbit/s down: 2.32502 W


def chain() -> Problem:
    """input (1000 B) -> A -> a (2000 B) -> B -> b (500 B) -> C -> c (40 B, the output)."""
    return Problem(
        tiers=("mobile", "edge"),
        layers=(
            LayerCost("A", (10.0, 1.0), 400),
            LayerCost("B", (20.0, 2.0), 800),
            LayerCost("C", (5.0, 0.5), 0),
        ),
        tensors=(
            Tensor("input", 1000, None, (0,)),
            Tensor("a", 2000, 0, (1,)),
            Tensor("b", 500, 1, (2,)),
            Tensor("c", 40, 2, ()),
        ),
        outputs=(3,),
        links=(LinkSpec(up_mbps=8, down_mbps=16, rtt_ms=20, radio="wifi"),),
        mobile_power=MobilePower(compute_w=2.5, idle_w=0.3),
    )


def test_chain_split_after_first_layer() -> None:
    pred = evaluate(chain(), {"A": "mobile", "B": "edge", "C": "edge"})
    # compute 10 (mobile) + 2.5 (edge); 'a' up: 2000 B * 8 / 8 Mbit/s = 2 ms, + rtt/2 = 10;
    # 'c' back: 40 B * 8 / 16 Mbit/s = 0.02 ms, + rtt/2 = 10.
    assert pred.compute_ms == pytest.approx((10.0, 2.5))
    assert pred.latency_ms == pytest.approx(10 + 2.5 + 2 + 10 + 0.02 + 10)
    (link,) = pred.links
    assert [(t.name, t.bytes) for t in link.up_tensors] == [("a", 2000)]
    assert [(t.name, t.bytes) for t in link.down_tensors] == [("c", 40)]
    assert link.up_ms == pytest.approx(2.0) and link.up_rtt_ms == 10
    assert link.down_ms == pytest.approx(0.02) and link.down_rtt_ms == 10
    assert pred.transfer_ms == pytest.approx(12.0) and pred.return_ms == pytest.approx(10.02)
    # Energy: 2.5 W x 10 ms computing, radio up 2 ms and down 0.02 ms, idle 0.3 W for the other 22.5 ms.
    assert pred.energy is not None
    assert pred.energy.compute_mj == pytest.approx(25.0)
    assert pred.energy.radio_mj == pytest.approx(WIFI_UP_W * 2 + WIFI_DOWN_W * 0.02)
    assert pred.energy.radio_ms == pytest.approx(2.02)
    assert pred.energy.waiting_ms == pytest.approx(22.5)
    assert pred.energy.idle_mj == pytest.approx(6.75)
    assert pred.energy_mj == pytest.approx(25.0 + 4.8429404 + 6.75)
    assert pred.mobile_weight_bytes == 400
    assert pred.objective == pred.latency_ms  # default objective: latency


def test_chain_all_mobile_and_all_edge() -> None:
    problem = chain()
    local = evaluate(problem, [0, 0, 0])
    assert local.latency_ms == pytest.approx(35.0)
    assert local.energy_mj == pytest.approx(2.5 * 35)
    assert all(not link.up_tensors and link.transfer_ms == 0 and link.return_ms == 0 for link in local.links)
    # All on edge: the input (1000 B, 1 ms) still has to be uploaded from the phone.
    remote = evaluate(problem, [1, 1, 1])
    assert remote.latency_ms == pytest.approx(3.5 + 1 + 10 + 0.02 + 10)
    assert remote.energy_mj == pytest.approx(WIFI_UP_W * 1 + WIFI_DOWN_W * 0.02 + 0.3 * (24.52 - 1.02))
    assert [t.name for t in remote.links[0].up_tensors] == ["input"]
    assert remote.mobile_weight_bytes == 0
    energy = problem.with_objective(Objective(latency=1, energy=0.5))
    assert evaluate(energy, [1, 1, 1]).objective == pytest.approx(remote.latency_ms + 0.5 * remote.energy_mj)


def diamond() -> Problem:
    """input -> A -> x (4000 B) -> {B, C} -> b, c (1000 B each) -> D -> y (8 B)."""
    return Problem(
        tiers=("mobile", "edge"),
        layers=tuple(LayerCost(name, (3.0, 1.0)) for name in "ABCD"),
        tensors=(
            Tensor("input", 100, None, (0,)),
            Tensor("x", 4000, 0, (1, 2)),
            Tensor("b", 1000, 1, (3,)),
            Tensor("c", 1000, 2, (3,)),
            Tensor("y", 8, 3, ()),
        ),
        outputs=(4,),
        links=(LinkSpec(up_mbps=8, down_mbps=8, rtt_ms=10),),
    )


def test_shared_tensor_crosses_once() -> None:
    pred = evaluate(diamond(), {"A": "mobile", "B": "edge", "C": "edge", "D": "edge"})
    # 'x' feeds two edge layers but is sent once: 4000 B * 8 / 8 Mbit/s = 4 ms, not 8.
    assert [(t.name, t.bytes) for t in pred.links[0].up_tensors] == [("x", 4000)]
    assert pred.links[0].up_ms == pytest.approx(4.0)
    assert pred.latency_ms == pytest.approx(3 + 3 + 4 + 5 + 0.008 + 5)
    assert pred.energy is None and pred.energy_mj is None  # no mobile power given


def test_two_tensors_cross_when_branches_split() -> None:
    pred = evaluate(diamond(), [0, 0, 1, 1])
    # C (edge) needs 'x' (4 ms) and D (edge) needs 'b' from B on mobile (1 ms); rtt/2 once.
    assert sorted(t.name for t in pred.links[0].up_tensors) == ["b", "x"]
    assert pred.transfer_ms == pytest.approx(4 + 1 + 5)
    assert pred.latency_ms == pytest.approx(6 + 2 + 10 + 5.008)


def three_tier() -> Problem:
    """input -> A -> x (5000 B) -> {B, C} -> y (16 B), z (16 B) -> D -> out (16 B)."""
    return Problem(
        tiers=("mobile", "edge", "cloud"),
        layers=(
            LayerCost("A", (2.0, 1.0, 0.5), 1000),
            LayerCost("B", (8.0, 2.0, 0.5), 1000),
            LayerCost("C", (8.0, 2.0, 0.5), 1000),
            LayerCost("D", (1.0, 1.0, 1.0), 0),
        ),
        tensors=(
            Tensor("input", 1000, None, (0,)),
            Tensor("x", 5000, 0, (1, 2)),
            Tensor("y", 16, 1, (3,)),
            Tensor("z", 16, 2, (3,)),
            Tensor("out", 16, 3, ()),
        ),
        outputs=(4,),
        links=(
            LinkSpec(up_mbps=10, down_mbps=20, rtt_ms=30, radio="lte"),
            LinkSpec(up_mbps=100, down_mbps=100, rtt_ms=10, radio=None),
        ),
        mobile_power=MobilePower(compute_w=2.0, idle_w=0.5),
    )


def test_tensor_crosses_both_links_once_each() -> None:
    pred = evaluate(three_tier(), {"A": "mobile", "B": "edge", "C": "cloud", "D": "cloud"})
    me, ec = pred.links
    # 'x' goes mobile -> edge (for B) and on to cloud (for C): each link carries it once.
    assert [t.name for t in me.up_tensors] == ["x"] and sorted(t.name for t in ec.up_tensors) == ["x", "y"]
    assert me.up_ms == pytest.approx(5000 * 8 / 10e3)  # 4 ms
    assert ec.up_ms == pytest.approx((5000 + 16) * 8 / 100e3)  # 0.40128 ms
    assert me.up_rtt_ms == 15 and ec.up_rtt_ms == 5
    # 'out' comes back cloud -> edge -> mobile.
    assert ec.down_ms == pytest.approx(16 * 8 / 100e3) and me.down_ms == pytest.approx(16 * 8 / 20e3)
    assert me.down_rtt_ms == 15 and ec.down_rtt_ms == 5
    compute = 2 + 2 + 0.5 + 1
    network = 4 + 0.40128 + 20 + 0.00128 + 0.0064 + 20
    assert pred.compute_ms == pytest.approx((2.0, 2.0, 1.5))
    assert pred.latency_ms == pytest.approx(compute + network)
    # Only the phone's own link (LTE) drives radio power; the backhaul is waiting time.
    p_up, p_down = (438.39 * 10 + 1288.04) / 1000, (51.97 * 20 + 1288.04) / 1000
    radio_ms = 4 + 0.0064
    expected = 2.0 * 2 + p_up * 4 + p_down * 0.0064 + 0.5 * (compute + network - 2 - radio_ms)
    assert pred.energy_mj == pytest.approx(expected)


def test_mobile_to_cloud_skipping_edge() -> None:
    pred = evaluate(three_tier(), [0, 2, 2, 2])
    me, ec = pred.links
    # Nothing runs on edge, yet 'x' is relayed through it: both links carry it (and both rtts count).
    assert [t.name for t in me.up_tensors] == ["x"] and [t.name for t in ec.up_tensors] == ["x"]
    assert pred.layers_per_tier == {"mobile": 1, "edge": 0, "cloud": 3}
    assert pred.transfer_ms == pytest.approx(4 + 0.4 + 20)


def test_output_on_mobile_needs_no_return() -> None:
    pred = evaluate(three_tier(), [0, 0, 0, 0])
    assert pred.return_ms == 0 and pred.transfer_ms == 0
    assert pred.latency_ms == pytest.approx(19.0)
    assert pred.energy_mj == pytest.approx(2.0 * 19.0)


def test_invalid_assignments_are_rejected() -> None:
    with pytest.raises(UsageError, match="backwards"):
        evaluate(chain(), {"A": "edge", "B": "mobile", "C": "edge"})
    with pytest.raises(UsageError, match="lacks layer"):
        evaluate(chain(), {"A": "edge"})
    with pytest.raises(UsageError, match="unknown tier"):
        evaluate(chain(), {"A": "cloud", "B": "cloud", "C": "cloud"})
    with pytest.raises(UsageError, match="unknown layer"):
        evaluate(chain(), {"A": "edge", "B": "edge", "C": "edge", "Z": "edge"})
    with pytest.raises(UsageError):
        evaluate(chain(), [0, 1])
