"""One set of cases, tests/vectors/elastic_decisions.json, for the elastic decision and the estimate's
trackers in Python and in the browser (static/elastic.js in headless Chromium): the same cut from the same
context. The file is what tests/vectors/make_elastic_decisions.py writes."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from dnnsplit.partition.elastic import Context, ElasticSpec, decide
from dnnsplit.runtime.estimate import EstimatorSettings, Tracker
from tests.fixtures.browser import needs_browser

VECTORS = Path(__file__).resolve().parent.parent / "vectors" / "elastic_decisions.json"


@pytest.fixture(scope="module")
def vectors() -> dict:
    return json.loads(VECTORS.read_text())


def _same(a: object, b: object, where: str = "") -> None:
    """``a`` equals ``b``, floats to 1e-9 relative: the generator's random contexts go through numpy's
    exp and log, whose last digits differ between numpy builds."""
    if isinstance(a, float) or isinstance(b, float):
        assert isinstance(a, int | float) and isinstance(b, int | float), where
        assert a == pytest.approx(b, rel=1e-9, abs=1e-12), where
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), where
        for key in a:
            _same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, list):
        assert isinstance(b, list) and len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_the_vector_file_is_the_generators_output(vectors: dict) -> None:
    from tests.vectors.make_elastic_decisions import vectors as generate

    _same(json.loads(json.dumps(generate())), vectors)  # rerun the script after changing the decision


def test_python_decides_every_case_as_recorded(vectors: dict) -> None:
    cases = vectors["decisions"]
    assert len(cases) == 200
    assert len({c["expected"]["cut"] for c in cases}) >= 3 and any(c["expected"]["kept"] for c in cases)
    for case in cases:
        got = decide(
            ElasticSpec.from_dict(case["spec"]),
            Context.from_dict(case["context"]),
            case["allowed"],
            case["current"],
            case["hysteresis"],
        )
        assert (got.candidate.boundary, got.predicted_ms, got.kept) == (
            case["expected"]["boundary"],
            case["expected"]["predicted_ms"],
            case["expected"]["kept"],
        )
    for case in vectors["trackers"]:
        tracker = Tracker(case["prior"], EstimatorSettings(), floor=case["floor"])
        for sample, value, step in zip(case["samples"], case["values"], case["steps"], strict=True):
            assert tracker.update(sample) == step
            assert math.isclose(tracker.value, value, rel_tol=1e-12)
    assert any(any(c["steps"]) for c in vectors["trackers"])


@needs_browser()
def test_the_browser_decides_every_case_alike(vectors: dict, two_tier: Path) -> None:
    from dnnsplit.browser.chromium import chromium_page
    from dnnsplit.runtime.server import ServeSettings, serving

    script = """async ([url, vectors]) => {
      const m = await import(url + '/web/elastic.js');
      const decisions = vectors.decisions.map((c) => {
        const d = m.decide(c.spec, c.context, c.allowed, c.current, c.hysteresis);
        return [d.candidate.boundary, d.predicted_ms, d.kept];
      });
      const trackers = vectors.trackers.map((c) => {
        const t = new m.Tracker(c.prior, vectors.settings, c.floor);
        return c.samples.map((s) => [t.update(s), t.value]);
      });
      return { decisions, trackers };
    }"""
    with serving(two_tier, ServeSettings(tier="edge", web=True)) as edge, chromium_page() as (page, console):
        page.goto(f"{edge.url}/web/style.css")
        got = page.evaluate(script, [edge.url, vectors])
    for case, (boundary, predicted, kept) in zip(vectors["decisions"], got["decisions"], strict=True):
        expected = case["expected"]
        assert (boundary, kept) == (expected["boundary"], expected["kept"]), case
        assert predicted == expected["predicted_ms"]  # the same operations in the same order: the same float
    for case, trace in zip(vectors["trackers"], got["trackers"], strict=True):
        assert [step for step, _ in trace] == case["steps"]
        for (_, value), want in zip(trace, case["values"], strict=True):
            assert math.isclose(value, want, rel_tol=1e-9)
