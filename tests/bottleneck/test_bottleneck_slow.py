"""The issue's floor for a trained bottleneck (slow): on resnet18 trained on digits at 32x32, a bottleneck
at layer1 sends >= 10x fewer bytes than the float32 cut at <= 1 point of accuracy drop; and a learned
rate term (compressai) sends fewer bytes than the same bottleneck without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from dnnsplit.bottleneck.bottleneck_file import load_bottleneck

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def resnet18_digits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from typer.testing import CliRunner

    from dnnsplit.cli.main import app

    path = tmp_path_factory.mktemp("r18") / "r18.pt"
    args = ["train", "torchvision:resnet18", "--num-classes", "10", "--input-shape", "1x3x32x32"]
    result = CliRunner().invoke(
        app, [*args, "--data", "digits", "--epochs", "5", "--output", str(path)], catch_exceptions=False
    )
    assert result.exit_code == 0, result.stderr
    return path


def _bottleneck(cli, model: Path, out: Path, *extra: str):  # noqa: ANN001, ANN202
    code, _, stderr = cli(
        "bottleneck",
        model,
        "--at",
        "layer1",
        "--channels",
        "8",
        "--epochs",
        "8",
        "--threads",
        "1",
        "-o",
        out,
        *extra,
    )
    assert code == 0, stderr
    return load_bottleneck(out)


def test_bottleneck_shrinks_the_cut_tenfold_within_one_point(
    cli, resnet18_digits: Path, tmp_path: Path
) -> None:
    doc = _bottleneck(cli, resnet18_digits, tmp_path / "bn")
    assert doc.cut_shape == [1, 64, 8, 8] and doc.bytes.float32 == 64 * 8 * 8 * 4
    assert doc.accuracy.base_top1 > 0.95
    assert doc.bytes.reduction >= 10, doc.bytes
    assert doc.bytes.float32 / doc.bytes.p95 >= 10, doc.bytes
    assert doc.accuracy.drop_points <= 1.0, doc.accuracy
    assert doc.accuracy.agreement >= 0.98, doc.accuracy


def test_learned_rate_term_sends_fewer_bytes(cli, resnet18_digits: Path, tmp_path: Path) -> None:
    pytest.importorskip("compressai")
    plain = _bottleneck(cli, resnet18_digits, tmp_path / "plain")
    rated = _bottleneck(cli, resnet18_digits, tmp_path / "rated", "--lambda", "0.5")
    assert rated.bytes.mean < 0.8 * plain.bytes.mean, (rated.bytes, plain.bytes)
    assert rated.training["history"][-1]["bits_per_element"] is not None
    assert rated.accuracy.drop_points <= 2.0, rated.accuracy
