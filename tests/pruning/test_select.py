"""The selector's constraint handling, against a brute-force reference over random variant tables."""

from __future__ import annotations

from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from dnnsplit.pruning.context import Context
from dnnsplit.pruning.plans import PlanLine
from dnnsplit.pruning.select import Request, Selector, read_misses
from dnnsplit.pruning.variants import NetworkPlan, Variant, VariantLatency, VariantsFile

CONTEXT = Context.parse("mobile-web", "wifi", "edge")
POWER = (CONTEXT.device.compute_power_w, CONTEXT.device.idle_power_w)

lines = st.builds(
    PlanLine,
    mobile_ms=st.floats(0, 50),
    rest_ms=st.floats(0, 50),
    radio_mj=st.floats(0, 20),
    radio_ms=st.floats(0, 5),
    mobile_layers=st.integers(0, 30),
    cut=st.just(()),
)
# Few distinct accuracies, so ties between variants are common.
tables = st.lists(
    st.tuples(st.sampled_from([0.9, 0.95, 0.97, 0.99]), st.lists(lines, min_size=1, max_size=4)),
    min_size=1,
    max_size=6,
)


def document(table: list[tuple[float, list[PlanLine]]]) -> VariantsFile:
    variants = [
        Variant(
            name=f"v{i}",
            method="latency-aware" if i else "original",
            file=f"v{i}.onnx",
            checkpoint=f"v{i}.pt",
            profile=f"v{i}.profile.json",
            target=None,
            ratios={},
            macs=0,
            params=0,
            size_bytes=0,
            accuracy=acc,
            val_accuracy=acc,
            latency=VariantLatency(0.0, 0.0, 1, 0.0, 0.0),
            plans={"wifi": NetworkPlan(0.0, 0.0, 0, [], list(ls))},
        )
        for i, (acc, ls) in enumerate(table)
    ]
    return VariantsFile(model={}, data="digits", context=CONTEXT, settings={}, variants=variants)


@settings(max_examples=200, deadline=None)
@given(tables, st.floats(0.25, 4), st.floats(1, 120))
def test_choice_matches_brute_force(
    table: list[tuple[float, list[PlanLine]]], scale: float, budget: float
) -> None:
    selector = Selector(Path("."), record_misses=False, document=document(table))
    choice = selector.choose(Request("wifi", scale, budget))
    options = [(acc, line.latency(scale), line.energy(scale, *POWER)) for acc, ls in table for line in ls]
    feasible = [o for o in options if o[1] <= budget * (1 + 1e-9)]
    assert choice.meets_budget == bool(feasible)
    if feasible:
        assert choice.latency_ms <= budget * (1 + 1e-9)  # met whenever any variant can meet it
        best_acc = max(o[0] for o in feasible)
        assert choice.accuracy == best_acc  # the most accurate within budget
        assert abs(choice.energy_mj - min(o[2] for o in feasible if o[0] == best_acc)) < 1e-6  # ties: energy
    else:
        assert choice.best_effort
        assert abs(choice.latency_ms - min(o[1] for o in options)) < 1e-9  # the fastest, flagged


def test_misses_are_recorded_once_per_context(tmp_path: Path) -> None:
    doc = document([(0.99, [PlanLine(10.0, 5.0, 0.0, 0.0, 3, ())])])
    selector = Selector(tmp_path, document=doc)
    for _ in range(3):
        assert selector.choose(Request("wifi", 1.0, 12.0)).best_effort
    assert not selector.choose(Request("wifi", 1.0, 20.0)).best_effort
    selector.flush()
    misses = read_misses(tmp_path)
    assert [(m["network"], m["device_scale"], m["budget_ms"], m["count"]) for m in misses] == [
        ("wifi", 1.0, 12.0, 3)
    ]
    assert misses[0]["best_effort"]["latency_ms"] == 15.0
