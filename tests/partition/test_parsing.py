"""Parsing links, objectives and tiers from text, the presets, and their errors."""

from __future__ import annotations

import pytest

from dnnsplit.errors import UsageError
from dnnsplit.partition import (
    BACKHAUL,
    NETWORK_PRESETS,
    RADIO_MODELS,
    Constraints,
    LinkSpec,
    Objective,
    default_links,
    link_names,
    parse_link,
    parse_objective,
    parse_tiers,
)


def test_presets_use_the_measured_uplinks() -> None:
    # Neurosurgeon (3G, LTE, Wi-Fi) and DADS (CAT1) average uplinks, in Mbit/s.
    uplinks = {name: spec.up_mbps for name, spec in NETWORK_PRESETS.items()}
    assert uplinks == {"cat1": 0.13, "3g": 1.1, "4g": 5.85, "5g": 30.0, "wifi": 18.88}
    assert NETWORK_PRESETS["wifi"].radio == "wifi" and NETWORK_PRESETS["3g"].radio == "3g"
    assert {NETWORK_PRESETS[n].radio for n in ("cat1", "4g", "5g")} == {"lte"}
    assert BACKHAUL.radio is None and BACKHAUL.up_mbps == BACKHAUL.down_mbps == 1000


def test_radio_models_are_huang_et_al() -> None:
    lte = RADIO_MODELS["lte"]
    assert (lte.a_up_mw_per_mbps, lte.a_down_mw_per_mbps, lte.base_mw) == (438.39, 51.97, 1288.04)
    assert lte.upload_power_w(5.85) == pytest.approx((438.39 * 5.85 + 1288.04) / 1000)
    assert RADIO_MODELS["wifi"].download_power_w(10) == pytest.approx((137.01 * 10 + 132.86) / 1000)
    assert RADIO_MODELS["3g"].base_mw == 817.88


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("4g", NETWORK_PRESETS["4g"]),
        ("WiFi", NETWORK_PRESETS["wifi"]),
        ("up=8,down=40,rtt=30", LinkSpec(8, 40, 30, radio="lte")),
        (" up = 8 , down=40, rtt=0 ", LinkSpec(8, 40, 0, radio="lte")),
        ("up=8,down=40,rtt=30,radio=wifi", LinkSpec(8, 40, 30, radio="wifi")),
        ("up=1000,down=1000,rtt=20,radio=none", LinkSpec(1000, 1000, 20, radio=None)),
    ],
)
def test_parse_link(text: str, expected: LinkSpec) -> None:
    got = parse_link(text)
    assert (got.up_mbps, got.down_mbps, got.rtt_ms, got.radio) == (
        expected.up_mbps,
        expected.down_mbps,
        expected.rtt_ms,
        expected.radio,
    )


def test_parse_link_preset_with_overrides() -> None:
    got = parse_link("wifi,rtt=5,up=10")
    assert (got.up_mbps, got.down_mbps, got.rtt_ms, got.radio) == (
        10,
        NETWORK_PRESETS["wifi"].down_mbps,
        5,
        "wifi",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("6g", "unknown network preset '6g'"),
        ("up=8,down=40", "lacks rtt"),
        ("up=8,down=40,rtt=30,jitter=2", "unknown link key 'jitter'"),
        ("up=fast,down=40,rtt=30", "not a number"),
        ("up=0,down=40,rtt=30", "must be > 0"),
        ("up=8,down=-1,rtt=30", "must be > 0"),
        ("up=8,down=40,rtt=-3", "rtt"),
        ("up=inf,down=40,rtt=30", "not finite"),
        ("up=8,down=40,rtt", "malformed"),
        ("up=8,down=40,rtt=30,radio=5g", "unknown radio model"),
        ("4g,6g", "malformed"),
    ],
)
def test_parse_link_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_link(text)
    assert info.value.hint  # every error says how to fix it


def test_link_spec_checks_its_values() -> None:
    with pytest.raises(UsageError):
        LinkSpec(0, 1, 1)
    with pytest.raises(UsageError):
        LinkSpec(1, 1, 1, radio="5g")


@pytest.mark.parametrize(
    ("text", "weights"),
    [
        ("latency", (1.0, 0.0)),
        ("energy", (0.0, 1.0)),
        ("latency=1,energy=0.5", (1.0, 0.5)),
        ("energy=2", (0.0, 2.0)),
        (" Latency = 0.1 , energy=3 ", (0.1, 3.0)),
    ],
)
def test_parse_objective(text: str, weights: tuple[float, float]) -> None:
    got = parse_objective(text)
    assert (got.latency, got.energy) == weights


def test_objective_describe_round_trips() -> None:
    for text in ("latency", "energy", "latency=1,energy=0.5", "latency=2"):
        assert parse_objective(parse_objective(text).describe()) == parse_objective(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("speed", "unknown objective 'speed'"),
        ("latency,energy", "'latency' needs a weight"),
        ("latency=1,power=2", "unknown objective key 'power'"),
        ("latency=-1", ">= 0"),
        ("latency=0,energy=0", "all zero"),
        ("latency=abc", "not a number"),
        ("latency=1,latency=2", "given twice"),
        ("", "empty objective"),
    ],
)
def test_parse_objective_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message) as info:
        parse_objective(text)
    assert info.value.hint


def test_parse_tiers_and_links() -> None:
    assert parse_tiers("mobile,edge") == ("mobile", "edge")
    assert parse_tiers("mobile, edge, cloud") == ("mobile", "edge", "cloud")
    assert parse_tiers("mobile,cloud") == ("mobile", "cloud")
    assert link_names(("mobile", "edge", "cloud")) == ("mobile-edge", "edge-cloud")
    assert link_names(("mobile", "cloud")) == ("mobile-cloud",)
    links = default_links(("mobile", "edge", "cloud"), network="4g")
    assert links["mobile-edge"] == NETWORK_PRESETS["4g"] and links["edge-cloud"] == BACKHAUL
    assert default_links(("mobile", "cloud"))["mobile-cloud"] == NETWORK_PRESETS["wifi"]


@pytest.mark.parametrize("text", ["edge,mobile", "mobile", "mobile,cloud,edge", "mobile,fog", ""])
def test_parse_tiers_errors(text: str) -> None:
    with pytest.raises(UsageError, match="unsupported tiers"):
        parse_tiers(text)


def test_constraint_values_are_checked() -> None:
    with pytest.raises(UsageError, match="budget"):
        Constraints(budget_ms=0)
    with pytest.raises(UsageError, match="memory"):
        Constraints(max_mobile_mb=-1)
    assert Constraints(max_mobile_mb=1.5).max_mobile_bytes == 1_500_000
    assert Constraints(max_mobile_mb=0.3).max_mobile_bytes == 300_000  # despite 0.3 * 1e6 < 300000 in floats
    with pytest.raises(UsageError):
        Objective(latency=float("nan"))
