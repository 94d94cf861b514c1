"""The latency-aware search: groups come from torch-pruning, and a target is met when measured."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from dnnsplit.models import ModelOptions, load_model
from dnnsplit.profiling.profile import Profile
from dnnsplit.pruning.context import Context
from dnnsplit.pruning.latency_table import ConvShape, LatencyTable
from dnnsplit.pruning.measure import Measured, measure
from dnnsplit.pruning.predict import Predictor
from dnnsplit.pruning.search import search
from dnnsplit.pruning.structure import Prunable
from dnnsplit.training.data import load_data
from tests.fixtures.trained import TINY

SHAPE = (1, 3, 48, 48)  # at 16x16 the digits net is all runtime overhead: nothing for pruning to win


def test_residual_channels_are_one_group() -> None:
    """The stem's output and the residual conv that is added to it must shrink together."""
    loaded = load_model("tests.fixtures.tiny_models:tiny_cnn", ModelOptions(input_shape=(1, 3, 32, 32)))
    prunable = Prunable(loaded.module, torch.zeros(1, 3, 32, 32), num_classes=10)
    shapes = prunable.conv_shapes()
    coupled = next(g for g in prunable.groups if g.root in ("stem.0", "conv_b"))
    after = prunable.shapes_after(coupled, 2, shapes)
    assert after["stem.0"].out_channels == after["conv_b"].out_channels == 6
    assert after["conv_a"].in_channels == 6  # reads the stem's (pruned) output
    prunable.prune(coupled, [0, 1])
    out = prunable.model(torch.zeros(2, 3, 32, 32))
    assert out.shape == (2, 10)  # the classifier keeps its 10 outputs
    assert prunable.ratios() == {"stem.0": 0.25, "conv_b": 0.25}


def test_latency_table_caches_and_sees_channels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNNSPLIT_CACHE", str(tmp_path))
    table = LatencyTable(threads=1, repeat=15)
    big = ConvShape(64, 64, (3, 3), (1, 1), (1, 1), (1, 1), 1, 24, 24)
    small = ConvShape(16, 16, (3, 3), (1, 1), (1, 1), (1, 1), 1, 24, 24)
    assert table.conv_ms(big) > 2 * table.conv_ms(small)  # 16x fewer MACs: clearly faster
    table.save()
    again = LatencyTable(threads=1)
    assert again.conv_ms(big) == table.conv_ms(big) and again.measured == 0  # read from the cache file


def test_search_meets_the_measured_target(tiny_checkpoint: Path, tmp_path: Path) -> None:
    """Given 55% of the unpruned end-to-end latency, the search stops at a model that measures within it."""
    loaded = load_model(str(tiny_checkpoint), ModelOptions(arch=TINY, input_shape=SHAPE))
    teacher = loaded.module.eval()
    context = Context.parse("mobile-web", "cat1", "none")
    original = measure(loaded, teacher, tmp_path / "original.onnx", threads=1)
    full_ms = context.best(original.profile).latency_ms
    target = 0.55 * full_ms
    prunable = Prunable(copy.deepcopy(teacher), torch.zeros(SHAPE), num_classes=10)
    predictor = Predictor(original.profile, prunable.full_shapes, LatencyTable(threads=1))
    data = load_data("digits", SHAPE, augment=False)
    batches = [next(iter(data.loader("train", 64)))]
    measured: list[float] = []
    reached: list[tuple[float, float, float]] = []  # (target, measured, predicted before measuring)

    def measure_now(p: Prunable) -> Measured:
        m = measure(loaded, p.model, tmp_path / f"pruned-{len(measured)}.onnx", threads=1)
        measured.append(context.best(m.profile).latency_ms)
        return m

    def on_reached(p: Prunable, m: Measured, predicted: Profile, goal: float) -> None:
        reached.append((goal, context.best(m.profile).latency_ms, context.best(predicted).latency_ms))

    result = search(prunable, predictor, context, [target], batches, measure_now, on_reached)
    assert result.reached == [target] and not result.missed
    assert result.measurements == len(measured) >= 1
    assert len(reached) == 1 and reached[0][0] == target and reached[0][1] == measured[-1] <= target
    # The prediction the variant was accepted on came from the table, not from its own measurement.
    assert reached[0][2] != reached[0][1]
    assert result.steps and all(s.saved_ms > 0 for s in result.steps)
    assert prunable.model(torch.zeros(SHAPE)).shape == (1, 10)
    # Fewer channels than the start in at least one group, never below one unit.
    assert any(g.kept < g.channels for g in prunable.groups)
    assert all(g.kept >= g.unit for g in prunable.groups)


def test_channel_shuffle_fails_naming_the_layer() -> None:
    """shufflenet_v2's channel shuffle is beyond torch-pruning's tracer: a clear error naming the layer."""
    from dnnsplit.errors import UsageError

    loaded = load_model(
        "torchvision:shufflenet_v2_x0_5", ModelOptions(num_classes=10, input_shape=(1, 3, 32, 32))
    )
    with pytest.raises(UsageError, match="stage2.0"):
        Prunable(loaded.module, torch.zeros(1, 3, 32, 32), num_classes=10)


@pytest.mark.parametrize(
    ("channels", "block", "unit"),
    [(64, 16, 16), (512, 16, 64), (144, 16, 16), (96, 16, 16), (64, 8, 8), (24, 16, 3), (16, 16, 2), (8, 1, 1)],
)
def test_channel_unit_stays_on_the_runtime_block(channels: int, block: int, unit: int) -> None:
    from dnnsplit.pruning.structure import channel_unit

    assert channel_unit(channels, block) == unit
    if channels % block == 0 and channels >= 2 * block:  # every count the group can reach is whole blocks
        assert all((channels - k * unit) % block == 0 for k in range(channels // unit))


def test_channel_block_override(monkeypatch: pytest.MonkeyPatch) -> None:
    from dnnsplit.errors import UsageError
    from dnnsplit.pruning.latency_table import channel_block

    monkeypatch.setenv("DNNSPLIT_CHANNEL_BLOCK", "1")
    assert channel_block() == 1
    monkeypatch.setenv("DNNSPLIT_CHANNEL_BLOCK", "sixteen")
    with pytest.raises(UsageError, match="DNNSPLIT_CHANNEL_BLOCK"):
        channel_block()
    monkeypatch.delenv("DNNSPLIT_CHANNEL_BLOCK")
    assert channel_block() in (8, 16)
