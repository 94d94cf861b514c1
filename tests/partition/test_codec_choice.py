"""The planner with measured boundaries (issue 20): it charges measured bytes and codec times, chooses the
codec with the cut under --max-accuracy-drop, and charges the phone's download over a session; checked
against a brute force over (cut, codec) written from the formulas."""

from __future__ import annotations

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dnnsplit.partition.boundary_costs import BoundaryCodec, BoundaryCosts, InputCosts, TensorCosts
from dnnsplit.partition.from_profile import tier_devices
from dnnsplit.partition.network import LinkSpec
from dnnsplit.partition.plan_file import load_plan
from dnnsplit.partition.request import PlanRequest, make_plan
from dnnsplit.profiling.profile import Profile
from tests.fixtures.profiles import sized_chain as chain

PAIRS = [(c, ll) for c in ("none", "fp16", "int8") for ll in ("identity", "zstd")]


def costs(options: dict[str, list[BoundaryCodec]], jpeg: float = 5000.0) -> BoundaryCosts:
    return BoundaryCosts(
        model={"sha256": "1" * 64},
        host={},
        samples={},
        base_top1=90.0,
        accuracy_scope="test",
        tensors={name: TensorCosts(name, 4 * 1000, tuple(opts)) for name, opts in options.items()},
        input=InputCosts(3 * 64 * 64 * 4, jpeg, jpeg * 1.2, 90, 10),
    )


def option(codec: str, lossless: str, size: float, enc: float = 0.1, dec: float = 0.1, drop: float = 0.0):
    return BoundaryCodec(codec, lossless, size, size * 1.1, enc, dec, drop, 1.0)


def brute_force(profile: Profile, boundaries: BoundaryCosts, link: LinkSpec, max_drop: float,
                session: int | None) -> float:
    """min over cut k and codec pair of the latency, from the formulas (mobile -> edge, latency objective)."""
    devices = tier_devices(("mobile", "edge"), {})
    sm, se = devices["mobile"].latency_scale, devices["edge"].latency_scale
    times = [la.latency_ms for la in profile.layers]
    weights = [4 * la.params for la in profile.layers]
    n = len(times)
    up = lambda b: b * 8 / (link.up_mbps * 1000)  # noqa: E731
    down = lambda b: b * 8 / (link.down_mbps * 1000)  # noqa: E731
    best = math.inf
    for codec, lossless in boundaries.codecs:
        for k in range(n + 1):  # layers < k on the phone
            total = sum(times[:k]) * sm + sum(times[k:]) * se
            if session:
                total += down(sum(weights[:k])) / session
            if k < n:
                if k == 0:
                    total += up(round(boundaries.input.jpeg_mean))
                else:
                    t = boundaries.tensors[f"t{k - 1}"]
                    o = t.option(codec, lossless)
                    if o.accuracy_drop > max_drop:
                        o = t.option("none", lossless)
                    total += up(max(1, round(o.bytes_mean))) + o.encode_ms * sm + o.decode_ms * se
                total += link.rtt_ms + down(40)  # up and back: rtt/2 each; the logits return
            best = min(best, total)
    return best


@st.composite
def cases(draw: st.DrawFn):
    n = draw(st.integers(1, 4))
    times = [draw(st.floats(0.1, 50)) for _ in range(n)]
    params = [draw(st.integers(0, 2_000_000)) for _ in range(n)]
    sizes = [draw(st.integers(10, 200_000)) for _ in range(n - 1)]
    options = {}
    for i in range(n - 1):
        opts = []
        for codec, lossless in PAIRS:
            shrink = {"none": 1.0, "fp16": 0.5, "int8": 0.25}[codec] * draw(st.floats(0.05, 1.0))
            opts.append(option(codec, lossless, sizes[i] * 4 * shrink, draw(st.floats(0, 5)),
                               draw(st.floats(0, 5)), 0.0 if codec == "none" else draw(st.floats(0, 3))))
        options[f"t{i}"] = opts
    jpeg = draw(st.floats(500, 60_000))
    link = LinkSpec(draw(st.floats(0.1, 100)), draw(st.floats(0.5, 200)), draw(st.floats(0, 100)))
    session = draw(st.sampled_from([None, 1, 100]))
    return chain(times, params, [s for s in sizes] + [10]), costs(options, jpeg), link, session


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(cases(), st.sampled_from([0.5, 1.0, 10.0]))
def test_the_chosen_plan_costs_the_brute_force_minimum_over_cut_and_codec(case, max_drop: float) -> None:
    profile, boundaries, link, session = case
    planned = make_plan(
        PlanRequest(profile=profile, links={"mobile-edge": link}, boundaries=boundaries,
                    max_accuracy_drop=max_drop, session_requests=session)
    )
    expected = brute_force(profile, boundaries, link, max_drop, session)
    got = planned.plan.prediction.latency_ms
    assert math.isclose(got, expected, rel_tol=1e-9, abs_tol=1e-9), (got, expected)
    weighed = planned.context.boundary_codec["options"]
    assert len(weighed) == (len(PAIRS) if boundaries.tensors else 1)
    assert min(o["objective"] for o in weighed) == pytest.approx(got)


def _big_boundary_case(int8_drop: float):
    """A heavy model whose first layer makes a 400 kB float32 tensor of a 150 kB JPEG frame; a 3g-like link."""
    profile = chain([5.0, 200.0], [1000, 5_000_000], [100_000, 10])
    t0 = [
        option("none", "identity", 400_100), option("none", "zstd", 300_000),
        option("fp16", "identity", 200_100), option("fp16", "zstd", 120_000),
        option("int8", "identity", 100_100, drop=int8_drop), option("int8", "zstd", 20_000, drop=int8_drop),
    ]
    return profile, costs({"t0": t0}, jpeg=150_000.0), LinkSpec(1.1, 3.0, 100.0)


def test_the_planner_picks_int8_zstd_when_it_pays_and_says_so(tmp_path) -> None:
    profile, boundaries, link = _big_boundary_case(int8_drop=0.3)
    planned = make_plan(PlanRequest(profile=profile, links={"mobile-edge": link}, boundaries=boundaries))
    pred = planned.plan.prediction
    assert pred.layers_per_tier == {"mobile": 1, "edge": 1}  # the cut after l0 pays with int8+zstd
    block = planned.context.boundary_codec
    assert (block["codec"], block["lossless"]) == ("int8", "zstd")
    assert block["boundaries"] == [
        {"link": "mobile-edge", "tensor": "t0", "codec": "int8", "lossless": "zstd", "bytes": 20_000,
         "bytes_p95": pytest.approx(22_000), "accuracy_drop": 0.3}
    ]
    assert pred.links[0].up_bytes == 20_000 and pred.links[0].codec_ms > 0
    # all-edge sends the measured JPEG (150 kB here), not the 49 kB float32 tensor
    assert planned.plan.baselines["all-edge"].links[0].up_bytes == 150_000
    document = planned.to_dict()
    assert document["boundary_codec"]["codec"] == "int8" and document["compress"] == "int8"
    # the file reproduces the prediction (codec times and the download share included)
    from dnnsplit.fileio import write_document

    write_document(tmp_path / "plan.yaml", document)
    again = load_plan(tmp_path / "plan.yaml")
    from dnnsplit.partition.evaluate import evaluate

    assert evaluate(again.problem, again.assignment).latency_ms == pytest.approx(pred.latency_ms)


def test_a_codec_over_the_accuracy_bound_is_refused() -> None:
    profile, boundaries, link = _big_boundary_case(int8_drop=3.0)
    planned = make_plan(
        PlanRequest(profile=profile, links={"mobile-edge": link}, boundaries=boundaries, max_accuracy_drop=1.0)
    )
    block = planned.context.boundary_codec
    assert block["codec"] == "fp16" and block["lossless"] == "zstd"  # int8 would break the bound
    assert planned.plan.prediction.links[0].up_bytes == 120_000
    # with the bound raised, int8 is back
    looser = make_plan(
        PlanRequest(profile=profile, links={"mobile-edge": link}, boundaries=boundaries, max_accuracy_drop=5.0)
    )
    assert looser.context.boundary_codec["codec"] == "int8"
    # --compress int8 fixes the codec: the over-bound boundary then goes uncoded (float32 + zstd)
    fixed = make_plan(
        PlanRequest(profile=profile, links={"mobile-edge": link}, boundaries=boundaries, compress="int8")
    )
    block = fixed.context.boundary_codec
    assert all(b["codec"] in ("none", "jpeg") for b in block["boundaries"])  # jpeg: the input, all-edge
    # and the plan says so: split will not int8-code what the planner priced as float32
    assert block["codec"] == "none" and fixed.to_dict()["compress"] is None


def test_the_download_is_charged_over_the_session() -> None:
    # 5 M params in a light second layer: 20 MB, 53 s over a 3 Mbit/s downlink
    profile, link = chain([5.0, 1.0], [1000, 5_000_000], [100_000, 10]), LinkSpec(1.1, 3.0, 100.0)
    one = make_plan(PlanRequest(profile=profile, links={"mobile-edge": link}, session_requests=1))
    long = make_plan(PlanRequest(profile=profile, links={"mobile-edge": link}, session_requests=10**7))
    free = make_plan(PlanRequest(profile=profile, links={"mobile-edge": link}, session_requests=None))
    mobile = one.plan.baselines["all-mobile"]
    weights = 4 * (1000 + 5_000_000)
    assert mobile.download_ms == pytest.approx(weights * 8 / 3000)
    assert mobile.latency_ms - mobile.steady_latency_ms == pytest.approx(mobile.download_ms)
    assert mobile.first_request_ms == pytest.approx(mobile.steady_latency_ms + mobile.download_ms)
    assert one.plan.prediction.layers_per_tier["mobile"] == 0  # a one-request session: all on the edge
    assert long.plan.prediction.layers_per_tier["edge"] == 0  # a long one: the phone's compute is cheaper
    assert free.plan.prediction.layers_per_tier["edge"] == 0
    assert free.plan.prediction.download_ms == 0.0 and free.plan.prediction.session_requests is None
    shares = [p.plan.baselines["all-mobile"].download_share_ms for p in (one, long)]
    assert shares[0] == pytest.approx(shares[1] * 10**7)
