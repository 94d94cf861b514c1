"""Write tests/vectors/elastic_decisions.json: cases the Python and the browser's elastic decision (and
estimate trackers) must agree on. Run from the repository root: python tests/vectors/make_elastic_decisions.py

Each decision case: an elastic block, a context, the allowed boundaries, the current cut and the hysteresis,
with the cut ``partition.elastic.decide`` picks and its predicted ms. Each tracker case: samples and the
estimate after each (``runtime.estimate.Tracker``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from dnnsplit.partition.elastic import Context, ElasticSpec, decide
from dnnsplit.runtime.estimate import EstimatorSettings, Tracker

PATH = Path(__file__).with_name("elastic_decisions.json")


def _spec(rng: np.random.Generator) -> dict[str, Any]:
    n = int(rng.integers(1, 7))
    pieces = [
        {"layers": [f"p{k}"], "mobile_ms": float(rng.uniform(0, 80)), "edge_ms": float(rng.uniform(0, 10))}
        for k in range(n)
    ]
    inner = sorted(set(int(b) for b in rng.integers(1, n, size=int(rng.integers(0, n))))) if n > 1 else []
    candidates = []
    for b in [0, *inner, n]:
        name = "all-edge" if b == 0 else "all-local" if b == n else f"cut-{b}"
        remote = b < n
        candidates.append(
            {
                "name": name,
                "boundary": b,
                "up_bytes": int(rng.integers(0, 2_000_000)) if remote else 0,
                "down_bytes": int(rng.integers(0, 8000)) if remote else 0,
                "returns": bool(remote and rng.random() < 0.9),
            }
        )
    return {
        "schema": "dnnsplit/elastic@1",
        "tiers": ["mobile", "edge"],
        "reference": Context(10, 20, 20).to_dict(),
        "default": 0,
        "pieces": pieces,
        "candidates": candidates,
    }


def decision_cases(count: int = 200, seed: int = 0) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    cases = []
    for _ in range(count):
        block = _spec(rng)
        spec = ElasticSpec.from_dict(block)
        context = Context(
            float(np.exp(rng.uniform(np.log(0.05), np.log(300)))),
            float(np.exp(rng.uniform(np.log(0.05), np.log(500)))),
            float(rng.uniform(0, 200)),
            float(np.exp(rng.uniform(np.log(0.2), np.log(5)))),
            float(rng.uniform(0.5, 10)),
        )
        boundaries = list(spec.boundaries)
        allowed = None
        if rng.random() < 0.3:
            allowed = sorted(
                {int(b) for b in rng.choice(boundaries, size=int(rng.integers(1, len(boundaries) + 1)))}
            )
        current = int(rng.choice(boundaries)) if rng.random() < 0.3 else None
        best = decide(spec, context, allowed).candidate.boundary
        others = [b for b in (allowed or boundaries) if b != best]
        if others and rng.random() < 0.5:  # the runner-up as the current cut: where hysteresis matters
            current = decide(spec, context, others).candidate.boundary
        hysteresis = float(rng.choice([0.0, 0.05, 0.1, 0.3, 1.0]))
        chosen = decide(spec, context, allowed, current, hysteresis)
        cases.append(
            {
                "spec": block,
                "context": context.to_dict(),
                "allowed": allowed,
                "current": current,
                "hysteresis": hysteresis,
                "expected": {
                    "cut": chosen.candidate.name,
                    "boundary": chosen.candidate.boundary,
                    "predicted_ms": chosen.predicted_ms,
                    "kept": chosen.kept,
                },
            }
        )
    return cases


def tracker_cases(count: int = 20, seed: int = 1) -> list[dict[str, Any]]:
    rng = np.random.default_rng(seed)
    settings = EstimatorSettings()
    cases = []
    for _ in range(count):
        floor = float(rng.choice([0.0, 5.0]))
        level = float(np.exp(rng.uniform(np.log(0.2), np.log(100))))
        prior = level
        tracker = Tracker(prior, settings, floor=floor)
        samples, values, steps = [], [], []
        for _ in range(30):
            if rng.random() < 0.1:
                level *= float(np.exp(rng.uniform(-2.5, 2.5)))
            sample = level * float(np.exp(rng.normal(0, 0.2)))
            steps.append(tracker.update(sample))
            samples.append(sample)
            values.append(tracker.value)
        cases.append(
            {
                "prior": prior,
                "floor": floor,
                "samples": samples,
                "values": values,
                "steps": steps,
            }
        )
    return cases


def vectors() -> dict[str, Any]:
    return {
        "schema": "dnnsplit/elastic-vectors@1",
        "settings": {"alpha": 0.3, "change_ratio": 1.6, "change_count": 2},
        "decisions": decision_cases(),
        "trackers": tracker_cases(),
    }


if __name__ == "__main__":
    PATH.write_text(json.dumps(vectors(), separators=(",", ":")) + "\n")
    print(f"wrote {PATH}")
