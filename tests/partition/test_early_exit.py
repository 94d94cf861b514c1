"""Expected latency and energy with an early-exit branch: the formulas at their corners."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dnnsplit.partition.early_exit import BranchCosts, estimate_with_branch
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.problem import LayerCost, MobilePower, Problem, Tensor
from dnnsplit.profiling.devices import DeviceSpec

LINK = LinkSpec(up_mbps=8.0, down_mbps=16.0, rtt_ms=40.0, radio="lte")


def _branch(exit_rate: float, stem: float = 1.0, side: float = 4.0, rest: float = 10.0) -> BranchCosts:
    return BranchCosts(
        directory="branch",
        at="maxpool",
        exit_rate=exit_rate,
        stem_ms=stem,
        branch_ms=side,
        rest_ms=rest,
        boundary_bytes=16_000,
        output_bytes=40,
        model_sha256="x",
    )


def _problem(power: bool = True) -> Problem:
    return Problem(
        tiers=("mobile", "edge"),
        layers=(LayerCost("a", (1.0, 1.0)),),
        tensors=(Tensor("input", 100, None, (0,)), Tensor("out", 40, 0, ())),
        outputs=(1,),
        links=(LINK,),
        mobile_power=MobilePower(2.0, 0.5) if power else None,
    )


MOBILE = DeviceSpec("phone", latency_scale=3.0)
EDGE = DeviceSpec("edge", latency_scale=0.5)


def test_all_exit_costs_only_the_phone() -> None:
    est = estimate_with_branch(_problem(), _branch(1.0), MOBILE, EDGE)
    assert est.sequential.latency_ms == pytest.approx(3.0 * (1.0 + 4.0))
    assert est.sequential.energy_mj == pytest.approx(2.0 * 15.0)
    assert est.sequential.edge_ms == 0.0


def test_no_exit_sequential_adds_transfer_rtt_and_edge() -> None:
    est = estimate_with_branch(_problem(), _branch(0.0), MOBILE, EDGE)
    up, down = LINK.up_ms(16_000), LINK.down_ms(40)
    assert est.sequential.latency_ms == pytest.approx(15.0 + up + down + 40.0 + 5.0)
    # Speculative uploads during the 12 ms branch: the answer comes after max(branch, remote path).
    assert est.speculative.latency_ms == pytest.approx(3.0 + max(12.0, up + down + 40.0 + 5.0))
    assert est.chosen == "speculative"


@settings(max_examples=80, deadline=None)
@given(
    st.floats(0.0, 1.0),
    st.floats(0.01, 50.0),
    st.floats(0.01, 50.0),
    st.floats(0.01, 50.0),
    st.booleans(),
)
def test_speculation_never_slower_and_expectation_is_a_mix(
    p: float, stem: float, side: float, rest: float, power: bool
) -> None:
    est = estimate_with_branch(_problem(power), _branch(p, stem, side, rest), MOBILE, EDGE)
    for mode in (est.sequential, est.speculative):
        lo = min(mode.exited.latency_ms, mode.not_exited.latency_ms)
        hi = max(mode.exited.latency_ms, mode.not_exited.latency_ms)
        assert lo - 1e-9 <= mode.latency_ms <= hi + 1e-9
        assert (mode.energy_mj is None) == (not power)
    assert est.speculative.latency_ms <= est.sequential.latency_ms + 1e-9
    assert est.objective[est.chosen] == min(est.objective.values())


def test_each_request_pays_its_share_of_downloading_mobile_onnx() -> None:
    from dataclasses import replace

    session = replace(_problem(), session_requests=50)
    branch = replace(_branch(0.5), mobile_bytes=1_000_000)
    share = LINK.down_ms(1_000_000) / 50
    est, free = estimate_with_branch(session, branch, MOBILE, EDGE), estimate_with_branch(
        _problem(), branch, MOBILE, EDGE
    )
    assert est.download_share_ms == pytest.approx(share) and free.download_share_ms == 0.0
    for mode in ("sequential", "speculative"):
        a, b = getattr(est, mode), getattr(free, mode)
        assert a.exited.latency_ms == pytest.approx(b.exited.latency_ms + share)
        assert a.not_exited.latency_ms == pytest.approx(b.not_exited.latency_ms + share)
        assert a.energy_mj > b.energy_mj  # the radio downloads during the share
    # Without a size (a branch file from before), nothing is charged.
    assert estimate_with_branch(session, _branch(0.5), MOBILE, EDGE).download_share_ms == 0.0
