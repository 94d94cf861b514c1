"""The trained bottleneck as a codec option of the planner (plan --bottleneck, issue 20): chosen when a
constructed profile makes it pay, refused over the accuracy bound, never making the optimum worse, and
priced exactly as a brute force over the cuts of the bottleneck model written from the formulas."""

from __future__ import annotations

import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnnsplit.errors import UsageError
from dnnsplit.partition.bottleneck_option import (
    DECODER_LAYER,
    ENCODER_LAYER,
    BottleneckCosts,
    cut_tensor,
    resolved,
)
from dnnsplit.partition.evaluate import evaluate
from dnnsplit.partition.from_profile import tier_devices
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.plan_file import load_plan
from dnnsplit.partition.request import PlanRequest, make_plan
from dnnsplit.profiling.profile import Profile
from tests.fixtures.profiles import sized_chain as chain

INPUT_BYTES = 3 * 64 * 64 * 4
LOGITS_BYTES = 40


def bottleneck(at: str, cut_bytes: int, **changes) -> BottleneckCosts:
    base = BottleneckCosts(
        directory="bn",
        sha256="2" * 64,
        at=at,
        model_sha256="1" * 64,
        model_source="hand-made",
        cut_bytes=cut_bytes,
        code_name="code",
        code_shape=(1, 8, 8, 8),
        int8_bytes=512,
        coded_mean=380.0,
        coded_p95=395.0,
        header_bytes=72,
        encoder_ms=0.5,
        decoder_ms=1.0,
        zstd_compress_ms=0.05,
        zstd_decompress_ms=0.03,
        encoder_weight_bytes=2_080,
        decoder_weight_bytes=35_000,
        accuracy_drop=0.5,
        agreement=0.99,
    )
    return replace(base, **changes)


def _heavy_case(drop: float = 0.5):
    """A cheap first layer making a 400 kB tensor, a heavy rest; a slow uplink: only a small code pays."""
    profile = chain([2.0, 300.0], [1000, 1000], [100_000, 10])
    return profile, bottleneck("m0", 400_000, accuracy_drop=drop), LinkSpec(2.0, 10.0, 40.0)


def test_the_bottleneck_is_chosen_when_it_pays_and_the_plan_says_so(tmp_path) -> None:
    profile, costs, link = _heavy_case()
    planned = make_plan(
        PlanRequest(profile=profile, links={"mobile-edge": link}, bottleneck=costs, session_requests=None)
    )
    pred = planned.plan.prediction
    block = planned.context.boundary_codec
    assert (block["codec"], block["lossless"]) == ("bottleneck", "zstd")
    assert block["bottleneck"]["chosen"] and block["bottleneck"]["refused"] is None
    assert block["bottleneck"]["tensor"] == "t0" and block["bottleneck"]["sha256"] == "2" * 64
    # mobile: l0 + encoder; edge: decoder + l1; only the code crosses, at its coded bytes + the header
    assert planned.plan.assignment == {
        "l0": "mobile",
        ENCODER_LAYER: "mobile",
        DECODER_LAYER: "edge",
        "l1": "edge",
    }
    assert [t.name for t in pred.links[0].up_tensors] == ["code"]
    assert pred.links[0].up_bytes == 380 + 72
    assert block["boundaries"] == [
        {
            "link": "mobile-edge",
            "tensor": "code",
            "codec": "bottleneck",
            "lossless": "zstd",
            "bytes": 452,
            "bytes_p95": pytest.approx(395 + 72),
            "accuracy_drop": 0.5,
        }
    ]
    devices = tier_devices(("mobile", "edge"), {})
    sm, se = devices["mobile"].latency_scale, devices["edge"].latency_scale
    expected = (
        (2.0 + 0.5) * sm
        + (1.0 + 300.0) * se
        + 452 * 8 / 2000
        + (0.05 * sm + 0.03 * se)
        + link.rtt_ms
        + LOGITS_BYTES * 8 / 10_000
    )
    assert pred.latency_ms == pytest.approx(expected)
    # it beats every plan without it: the plain optimum is another option the block records
    plain = next(o for o in block["options"] if o["codec"] == "none")
    assert plain["objective"] > pred.objective
    # the file reproduces the prediction with the two bottleneck layers in its problem
    from dnnsplit.fileio import write_document

    write_document(tmp_path / "plan.yaml", planned.to_dict())
    again = load_plan(tmp_path / "plan.yaml")
    assert again.document["boundary_codec"]["codec"] == "bottleneck"
    assert evaluate(again.problem, again.assignment).latency_ms == pytest.approx(pred.latency_ms)


def test_a_bottleneck_over_the_accuracy_bound_is_refused() -> None:
    profile, costs, link = _heavy_case(drop=3.0)
    request = PlanRequest(
        profile=profile, links={"mobile-edge": link}, bottleneck=costs, max_accuracy_drop=1.0
    )
    planned = make_plan(request)
    block = planned.context.boundary_codec
    assert block["codec"] == "none" and not block["bottleneck"]["chosen"]
    assert (
        "3.00 points" in block["bottleneck"]["refused"]
        and "--max-accuracy-drop 1" in block["bottleneck"]["refused"]
    )
    assert [o["codec"] for o in block["options"]] == ["none"]  # not even weighed
    assert ENCODER_LAYER not in planned.plan.assignment
    from dnnsplit.partition.summary import plan_summary

    said = [
        b for b in plan_summary(planned, "chain").blocks if isinstance(b, str) and b.startswith("bottleneck")
    ]
    assert len(said) == 1 and "refused: its accuracy drop, 3.00 points" in said[0]
    looser = make_plan(replace(request, max_accuracy_drop=5.0))
    assert looser.context.boundary_codec["codec"] == "bottleneck"


def test_a_raw_code_wins_when_zstd_would_grow_it() -> None:
    profile, costs, link = _heavy_case()
    tiny = replace(costs, int8_bytes=64, coded_mean=73.0, coded_p95=73.0)  # zstd's frame over 64 bytes
    planned = make_plan(PlanRequest(profile=profile, links={"mobile-edge": link}, bottleneck=tiny))
    block = planned.context.boundary_codec
    assert (block["codec"], block["lossless"]) == ("bottleneck", "identity")
    assert planned.plan.prediction.links[0].up_bytes == 64 + 72


def test_bad_bottleneck_pairings_are_usage_errors() -> None:
    profile, costs, link = _heavy_case()
    with pytest.raises(UsageError, match="another model"):
        make_plan(PlanRequest(profile=profile, bottleneck=replace(costs, model_sha256="9" * 64)))
    with pytest.raises(UsageError, match="module 'm7'"):
        make_plan(PlanRequest(profile=profile, bottleneck=replace(costs, at="m7")))
    with pytest.raises(UsageError, match="cut"):
        make_plan(PlanRequest(profile=profile, bottleneck=replace(costs, cut_bytes=123)))
    with pytest.raises(UsageError, match="--compress"):
        make_plan(PlanRequest(profile=profile, bottleneck=costs, compress="int8"))
    with pytest.raises(UsageError, match="deflate"):
        make_plan(PlanRequest(profile=profile, bottleneck=costs, lossless="deflate"))


def test_times_missing_from_an_older_file_are_derived_from_the_whole_halves() -> None:
    profile, costs, _ = _heavy_case()
    old = replace(costs, encoder_ms=None, decoder_ms=None, encoder_onnx_ms=2.75, decoder_onnx_ms=310.0)
    got = resolved(old, profile, cut_tensor(profile, old))
    assert got.encoder_ms == pytest.approx(0.75) and got.decoder_ms == pytest.approx(10.0)
    assert "less the profile" in got.time_source
    assert resolved(costs, profile, "t0") is costs


def brute_force(
    profile: Profile, costs: BottleneckCosts, at: int, link: LinkSpec, lossless: str, session: int | None
) -> float:
    """min over the cuts of the bottleneck model (a chain: l0..l_at, encoder, decoder, the rest), mobile ->
    edge, latency objective, from the formulas."""
    devices = tier_devices(("mobile", "edge"), {})
    sm, se = devices["mobile"].latency_scale, devices["edge"].latency_scale
    times = [la.latency_ms for la in profile.layers]
    weights = [4 * la.params for la in profile.layers]
    n = len(times)
    times = [*times[: at + 1], costs.encoder_ms, costs.decoder_ms, *times[at + 1 :]]
    weights = [*weights[: at + 1], costs.encoder_weight_bytes, costs.decoder_weight_bytes, *weights[at + 1 :]]
    code_bytes = max(1, round(costs.bytes_with(lossless)[0]))
    zstd = (costs.zstd_compress_ms * sm + costs.zstd_decompress_ms * se) if lossless == "zstd" else 0.0
    # what crosses before layer k of the new chain: the input, t_0..t_at, the code, t_at again, t_at+1 ...
    sizes = [la.outputs[0].bytes for la in profile.layers]
    crossing = [INPUT_BYTES, *sizes[: at + 1], code_bytes, sizes[at], *sizes[at + 1 : n - 1]]
    up = lambda b: b * 8 / (link.up_mbps * 1000)  # noqa: E731
    down = lambda b: b * 8 / (link.down_mbps * 1000)  # noqa: E731
    best = math.inf
    for k in range(n + 3):  # layers < k on the phone
        total = sum(times[:k]) * sm + sum(times[k:]) * se
        if session:
            total += down(sum(weights[:k])) / session
        if k < n + 2:
            total += up(crossing[k]) + link.rtt_ms + down(LOGITS_BYTES)
            if k == at + 2:  # the code crosses: zstd on either side
                total += zstd
        best = min(best, total)
    return best


@st.composite
def cases(draw: st.DrawFn):
    n = draw(st.integers(2, 5))
    times = [draw(st.floats(0.0, 50)) for _ in range(n)]
    params = [draw(st.integers(0, 2_000_000)) for _ in range(n)]
    sizes = [draw(st.integers(10, 200_000)) for _ in range(n - 1)]
    profile = chain(times, params, [*sizes, 10])
    at = draw(st.integers(0, n - 2))
    costs = bottleneck(
        f"m{at}",
        sizes[at] * 4,
        int8_bytes=draw(st.integers(16, 20_000)),
        coded_mean=draw(st.floats(20, 25_000)),
        encoder_ms=draw(st.floats(0, 20)),
        decoder_ms=draw(st.floats(0, 20)),
        zstd_compress_ms=draw(st.floats(0, 2)),
        zstd_decompress_ms=draw(st.floats(0, 2)),
        accuracy_drop=draw(st.floats(-1, 3)),
        encoder_weight_bytes=draw(st.integers(0, 100_000)),
    )
    link = LinkSpec(draw(st.floats(0.1, 100)), draw(st.floats(0.5, 200)), draw(st.floats(0, 100)))
    return profile, costs, at, link, draw(st.sampled_from([None, 1, 100]))


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from([0.5, 1.0, 10.0]))
def test_the_option_never_makes_the_optimum_worse_and_the_choice_is_the_brute_force_minimum(
    case, max_drop: float
) -> None:
    profile, costs, at, link, session = case
    request = PlanRequest(
        profile=profile, links={"mobile-edge": link}, session_requests=session, max_accuracy_drop=max_drop
    )
    without = make_plan(request).plan.prediction.objective
    planned = make_plan(replace(request, bottleneck=costs))
    got = planned.plan.prediction.objective
    assert got <= without + 1e-9
    expected = without
    if costs.accuracy_drop <= max_drop:
        expected = min(
            without, *(brute_force(profile, costs, at, link, ll, session) for ll in ("identity", "zstd"))
        )
    assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9), (got, expected)
    block = planned.context.boundary_codec
    if block["codec"] == "bottleneck":  # chosen only where the code crosses and it strictly pays
        assert got < without
        assert planned.plan.assignment[ENCODER_LAYER] != planned.plan.assignment[DECODER_LAYER]
    else:
        assert ENCODER_LAYER not in planned.plan.assignment
