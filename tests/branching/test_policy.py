"""Exit calibration: the chosen threshold meets the accuracy constraint and exits as much as allowed."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from dnnsplit.branching.policy import calibrate_threshold, exit_figures, normalised_entropy
from dnnsplit.errors import UsageError


def test_normalised_entropy_bounds() -> None:
    uniform = torch.zeros(1, 10)
    sure = torch.tensor([[100.0] + [0.0] * 9])
    assert float(normalised_entropy(uniform)) == pytest.approx(1.0)
    assert float(normalised_entropy(sure)) == pytest.approx(0.0, abs=1e-6)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(min_value=5, max_value=80),
    st.floats(min_value=0.0, max_value=0.2),
    st.integers(min_value=0, max_value=10_000),
)
def test_chosen_threshold_meets_the_constraint_and_is_maximal(n: int, drop: float, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 4, (n,), generator=g)
    branch = torch.randn(n, 4, generator=g) * 3
    main = torch.randn(n, 4, generator=g) * 3
    main[torch.rand(n, generator=g) < 0.8, :] = 0
    main[torch.arange(n), labels] += 5 * (torch.rand(n, generator=g) < 0.9).float()
    t = calibrate_threshold(branch, main, labels, drop)
    fig = exit_figures(t, branch, main, labels)
    assert fig.overall_accuracy >= fig.backbone_accuracy - drop - 1e-9
    # Exiting one more distinct entropy level than chosen would break the constraint (or nothing is left).
    entropy = normalised_entropy(branch)
    above = sorted({float(h) for h in entropy if float(h) >= t})
    if above:
        more = exit_figures(above[0] + 1e-9, branch, main, labels)
        assert more.overall_accuracy < fig.backbone_accuracy - drop - 1e-12 or more.exit_rate == fig.exit_rate


def test_perfect_branch_exits_everything_and_useless_one_nothing() -> None:
    labels = torch.arange(10) % 3
    good = torch.nn.functional.one_hot(labels, 3).float() * 10
    bad = torch.nn.functional.one_hot((labels + 1) % 3, 3).float() * 10
    assert exit_figures(calibrate_threshold(good, good, labels, 0.0), good, good, labels).exit_rate == 1.0
    assert exit_figures(calibrate_threshold(bad, good, labels, 0.0), bad, good, labels).exit_rate == 0.0


@pytest.mark.parametrize("drop", [-0.1, 1.5, float("nan")])
def test_max_drop_outside_the_unit_interval_is_refused(drop: float) -> None:
    x = torch.zeros(3, 2)
    with pytest.raises(UsageError, match="max-accuracy-drop"):
        calibrate_threshold(x, x, torch.zeros(3, dtype=torch.long), drop)
