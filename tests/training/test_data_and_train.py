"""Data sources (digits, ImageFolder), checkpoints, and `dnnsplit train` / `dnnsplit eval`."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from dnnsplit.errors import UsageError
from dnnsplit.training.data import DataSpec, load_data
from tests.fixtures.assertions import assert_usage_error


def test_digits_split_is_fixed_stratified_and_shaped() -> None:
    a = load_data("digits", (1, 3, 32, 32), augment=False)
    b = load_data("digits", (1, 3, 32, 32), augment=False)
    assert a.sizes() == {"train": 1078, "val": 359, "test": 360}
    assert a.num_classes == 10
    image, label = a.test[0]
    assert image.shape == (3, 32, 32) and 0 <= label < 10
    assert torch.equal(image, b.test[0][0])  # same split every time
    counts = np.bincount([int(a.test[i][1]) for i in range(len(a.test))], minlength=10)
    assert counts.min() >= 34 and counts.max() <= 38  # stratified: ~36 per class
    # Normalised like an ImageNet input: the blank background sits at (0 - mean) / std per channel.
    assert float(image[0].min()) == pytest.approx(-0.485 / 0.229, abs=1e-4)


def _write_folder(root: Path, classes: int, per_class: int) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"class{c}").mkdir(parents=True)
        for i in range(per_class):
            pixels = (rng.random((12, 12, 3)) * 80 + c * 80).astype(np.uint8)
            Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")


def test_image_folder_one_pool_split_by_seed(tmp_path: Path) -> None:
    _write_folder(tmp_path / "pool", classes=3, per_class=10)
    data = load_data(f"imagefolder:{tmp_path / 'pool'}", (1, 3, 16, 16))
    assert data.num_classes == 3 and data.class_names == ["class0", "class1", "class2"]
    assert sum(data.sizes().values()) == 30
    assert data.sizes()["train"] == 18
    image, _ = data.test[0]
    assert image.shape == (3, 16, 16)


def test_image_folder_with_train_and_val(tmp_path: Path) -> None:
    _write_folder(tmp_path / "ds" / "train", classes=2, per_class=6)
    _write_folder(tmp_path / "ds" / "val", classes=2, per_class=4)
    data = load_data(DataSpec.parse(f"imagefolder:{tmp_path / 'ds'}"), (1, 3, 8, 8))
    assert data.sizes() == {"train": 12, "val": 4, "test": 4}


def test_bad_data_sources(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="unknown data source"):
        DataSpec.parse("cifar")
    with pytest.raises(UsageError, match="not found"):
        DataSpec.parse(f"imagefolder:{tmp_path / 'missing'}")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match="ImageFolder"):
        load_data(f"imagefolder:{tmp_path / 'empty'}", (1, 3, 8, 8))
    (tmp_path / "junk" / "a").mkdir(parents=True)
    (tmp_path / "junk" / "a" / "x.png").write_text("not an image")
    (tmp_path / "junk" / "b").mkdir()
    with pytest.raises(UsageError):
        data = load_data(f"imagefolder:{tmp_path / 'junk'}", (1, 3, 8, 8))
        data.train[0]


def test_train_checkpoint_is_a_model_everywhere(cli, tiny_checkpoint: Path) -> None:
    obj = torch.load(tiny_checkpoint, weights_only=True)  # no pickled code
    assert obj["arch"] == "tests.fixtures.tiny_models:digits_net"
    assert obj["num_classes"] == 10 and obj["input_shape"] == [1, 3, 16, 16]
    # Its arch is an import path: a file's word for what to run, so it is built only when the user names it.
    assert_usage_error(cli("eval", tiny_checkpoint, "--data", "digits"), "not torchvision:NAME", "--arch")
    code, stdout, _ = cli("eval", tiny_checkpoint, "--arch", obj["arch"], "--data", "digits", "--format", "json")
    assert code == 0
    report = json.loads(stdout)
    assert report["samples"] == 360
    assert report["accuracy"] == pytest.approx(obj["test_accuracy"])
    assert report["accuracy"] > 0.9


def test_train_refuses_bad_input(cli, tmp_path: Path) -> None:
    out = tmp_path / "m.pt"
    assert_usage_error(
        cli(
            "train",
            "torchvision:resnet18",
            "--num-classes",
            "3",
            "--input-shape",
            "1x3x32x32",
            "--data",
            "digits",
            "-o",
            out,
        ),
        "3 outputs but digits has 10 classes",
    )
    assert_usage_error(
        cli(
            "train",
            "tests.fixtures.tiny_models:digits_net",
            "--input-shape",
            "1x3x16x16",
            "--data",
            "digits",
            "--epochs",
            "0",
            "-o",
            out,
        ),
        "--epochs",
    )
    assert not out.exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    ("model", "least"),
    [
        ("resnet18", 0.97),
        # BatchNorms with momentum 0.01: without recomputing their statistics it scored 10% (chance).
        ("mobilenet_v3_small", 0.95),
    ],
)
def test_trains_on_digits(cli, tmp_path: Path, model: str, least: float) -> None:
    code, stdout, stderr = cli(
        "train",
        f"torchvision:{model}",
        "--num-classes",
        "10",
        "--input-shape",
        "1x3x32x32",
        "--data",
        "digits",
        "--output",
        tmp_path / "model.pt",
        "--format",
        "json",
    )
    assert code == 0, stderr
    assert json.loads(stdout)["test_accuracy"] >= least


def test_batchnorm_statistics_are_recomputed_from_the_batches() -> None:
    """Stale running statistics (momentum 0.01 keeps them near their start) are replaced by the batches'."""
    from torch import nn

    from dnnsplit.training.train import recalibrate_batchnorm

    model = nn.Sequential(nn.Conv2d(3, 4, 1, bias=False), nn.BatchNorm2d(4, momentum=0.01), nn.ReLU())
    norm = model[1]
    generator = torch.Generator().manual_seed(0)
    batches = [(3.0 + 2.0 * torch.randn(16, 3, 5, 5, generator=generator), torch.zeros(16)) for _ in range(4)]
    with torch.no_grad():
        features = torch.cat([model[0](x) for x, _ in batches])  # what the BatchNorm sees
    recalibrate_batchnorm(model, batches)
    assert not model.training and norm.momentum == 0.01 and int(norm.num_batches_tracked) == 4
    want_mean = features.mean(dim=(0, 2, 3))
    # Each batch's unbiased variance, averaged: the batches have the same mean, so close to the pooled one.
    want_var = torch.stack([model[0](x).var(dim=(0, 2, 3)) for x, _ in batches]).mean(0).detach()
    assert torch.allclose(norm.running_mean, want_mean, rtol=1e-4, atol=1e-5)
    assert torch.allclose(norm.running_var, want_var, rtol=1e-4, atol=1e-5)
