"""Build the binarized branch: a deep copy of the backbone's rest with binary convolutions and linears.

BatchNorms, activations, pooling and the final classifier (the last Linear, or the last convolution
when a model classifies with one, as SqueezeNet does) stay real-valued: they are cheap and they carry
the scale information a binary layer throws away (XNOR-Net, Bi-Real Net).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import fx, nn

from dnnsplit.branching.binary import BINARY_LAYERS, BinaryConv2d, BinaryLinear, calibrate_thresholds


@dataclass(frozen=True)
class BranchLayers:
    """What :func:`binarize` changed: the binary layer paths and the real-valued classifier."""

    binary: tuple[str, ...]
    classifier: str | None


def _set_submodule(root: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = root.get_submodule(parent_path) if parent_path else root
    setattr(parent, name, module)


def _call_order(gm: fx.GraphModule) -> list[str]:
    return [str(n.target) for n in gm.graph.nodes if n.op == "call_module"]


def binarize(rest: fx.GraphModule, binary_inputs: bool = True) -> tuple[fx.GraphModule, BranchLayers]:
    """A binarized deep copy of ``rest``; ``rest`` itself is left as it is.

    ``binary_inputs=False`` binarizes the weights only; each layer then takes its input as it is.
    """
    branch = copy.deepcopy(rest)
    modules = dict(branch.named_modules())
    called = [p for p in _call_order(branch) if isinstance(modules.get(p), nn.Conv2d | nn.Linear)]
    classifier = called[-1] if called else None
    binary = []
    for path in called:
        if path == classifier or path in binary:
            continue
        layer = modules[path]
        if (
            isinstance(layer, nn.Conv2d)
            and layer.padding_mode == "zeros"
            and isinstance(layer.padding, tuple)
        ):
            _set_submodule(branch, path, BinaryConv2d.from_conv(layer, binary_inputs))
        elif isinstance(layer, nn.Linear):
            _set_submodule(branch, path, BinaryLinear.from_linear(layer, binary_inputs))
        else:
            continue
        binary.append(path)
    branch.recompile()
    return branch, BranchLayers(tuple(binary), classifier)


def binary_layers(module: nn.Module) -> list[tuple[str, nn.Module]]:
    return [(p, m) for p, m in module.named_modules() if isinstance(m, BINARY_LAYERS)]


def binary_weight_count(module: nn.Module) -> int:
    """Number of 1-bit weights in ``module``."""
    return sum(m.weight.numel() for _, m in binary_layers(module))


@torch.no_grad()
def prepare_branch(
    rest: fx.GraphModule, features: torch.Tensor, binary_inputs: bool = True
) -> tuple[fx.GraphModule, BranchLayers]:
    """Binarize ``rest`` and set its input thresholds from ``features`` (a batch of stem outputs)."""
    branch, layers = binarize(rest, binary_inputs)
    calibrate_thresholds(branch, features)
    return branch, layers
