"""The issue's floor for a trained bottleneck (slow): on resnet18 trained on digits at 32x32, a bottleneck
of 8 channels at layer1 (the tail fine-tuned) sends >= 10x fewer bytes than the float32 cut at <= 1 point
of accuracy drop; and a learned rate term (compressai) sends fewer bytes than the same bottleneck without.

Measured once on 2 shared cores (OMP_NUM_THREADS=1): see docs/bottleneck.md."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnnsplit.bottleneck.bottleneck_file import BottleneckFile, load_bottleneck

pytestmark = pytest.mark.slow

FLAGS = ("--at", "layer1", "--channels", "8", "--epochs", "8", "--fine-tune", "--threads", "1")


def _invoke(*args: str) -> None:
    from typer.testing import CliRunner

    from dnnsplit.cli.main import app

    result = CliRunner().invoke(app, [str(a) for a in args], catch_exceptions=False)
    assert result.exit_code == 0, result.stderr


@pytest.fixture(scope="module")
def resnet18_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("r18") / "r18.pt"
    shape = ("--num-classes", "10", "--input-shape", "1x3x32x32")
    _invoke("train", "torchvision:resnet18", *shape, "--data", "digits", "--epochs", "5", "--output", path)
    return path


@pytest.fixture(scope="module")
def plain(resnet18_digits: Path, tmp_path_factory: pytest.TempPathFactory) -> BottleneckFile:
    out = tmp_path_factory.mktemp("bn") / "plain"
    _invoke("bottleneck", resnet18_digits, *FLAGS, "-o", out)
    return load_bottleneck(out)


def test_bottleneck_shrinks_the_cut_tenfold_within_one_point(plain: BottleneckFile) -> None:
    assert plain.cut_shape == [1, 64, 8, 8] and plain.bytes.float32 == 64 * 8 * 8 * 4
    assert plain.accuracy.base_top1 > 0.95
    assert plain.bytes.reduction >= 10, plain.bytes
    assert plain.bytes.float32 / plain.bytes.p95 >= 10, plain.bytes
    assert plain.accuracy.drop_points <= 1.0, plain.accuracy
    assert plain.accuracy.agreement >= 0.97, plain.accuracy


def test_learned_rate_term_sends_fewer_bytes(
    plain: BottleneckFile, resnet18_digits: Path, tmp_path: Path
) -> None:
    pytest.importorskip("compressai")
    _invoke("bottleneck", resnet18_digits, *FLAGS, "--lambda", "0.5", "-o", tmp_path / "rated")
    rated = load_bottleneck(tmp_path / "rated")
    assert rated.bytes.mean < 0.8 * plain.bytes.mean, (rated.bytes, plain.bytes)
    assert rated.training["history"][-1]["bits_per_element"] is not None
    assert rated.accuracy.drop_points <= 2.0, rated.accuracy
