"""Branch points and the branch builder on several torchvision families (random weights)."""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from dnnsplit.branching.binary import BINARY_LAYERS
from dnnsplit.branching.builder import binarize
from dnnsplit.branching.points import list_points, resolve_point, split_at, trace
from dnnsplit.errors import UsageError

FAMILIES = {
    "resnet18": "maxpool",
    "mobilenet_v2": "features.0",
    "efficientnet_b0": "features.0",
    "vgg11": "features.2",
    "densenet121": "features.pool0",
    "regnet_x_400mf": "stem",
}


@pytest.mark.parametrize(("name", "expected"), sorted(FAMILIES.items()))
def test_default_point_splits_the_model_exactly_and_binarizes_the_rest(name: str, expected: str) -> None:
    torch.manual_seed(0)
    model = getattr(torchvision.models, name)(num_classes=10).eval()
    gm = trace(model)
    point = resolve_point(gm, None)
    assert point.name == expected
    stem, rest = split_at(gm, point)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(rest(stem(x)), model(x), atol=1e-5)
    branch, layers = binarize(rest)
    convs = [m for m in rest.modules() if isinstance(m, nn.Conv2d | nn.Linear)]
    binary = [m for m in branch.modules() if isinstance(m, BINARY_LAYERS)]
    assert len(binary) == len(layers.binary) == len(convs) - 1  # every conv/linear but the classifier
    classifier = branch.get_submodule(layers.classifier)
    assert type(classifier) in (nn.Linear, nn.Conv2d)
    assert not any(isinstance(m, BINARY_LAYERS) for m in rest.modules())  # the backbone is untouched
    with torch.no_grad():
        assert branch(stem(x)).shape == (2, 10)


def test_points_are_single_tensor_cuts_in_order() -> None:
    gm = trace(torchvision.models.resnet18(num_classes=10).eval())
    names = [p.name for p in list_points(gm)]
    assert names[:4] == ["conv1", "bn1", "relu", "maxpool"]
    assert "layer1" in names and "layer4" in names
    assert "layer1.0.conv1" not in names  # inside a residual block the skip path also crosses


def test_unknown_or_inner_point_lists_valid_ones() -> None:
    gm = trace(torchvision.models.resnet18(num_classes=10).eval())
    for bad in ("nope", "layer1.0.conv1"):
        with pytest.raises(UsageError, match="not a point.*valid: conv1, bn1, relu, maxpool"):
            resolve_point(gm, bad)
    assert resolve_point(gm, "layer2").name == "layer2"
    mnv2 = trace(torchvision.models.mobilenet_v2(num_classes=10).eval())
    assert resolve_point(mnv2, "features.0.2").name == "features.0"  # an alias of the same point
