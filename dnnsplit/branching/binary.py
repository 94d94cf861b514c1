"""Binarized layers (XNOR-Net weights, +/-1 activations) with straight-through gradients.

Weights: ``sign(W)`` times one real scale per output channel (the mean of ``|W|``), so a layer stores
one bit per weight plus a float per channel. Inputs: ``where(x >= t, 1, -1)`` with a learned threshold
``t`` per input channel. The threshold matters: the branch keeps the backbone's ReLUs and BatchNorms
(real-valued), so a layer's input is often >= 0 everywhere and a threshold at 0 would make it all +1.
The threshold starts at each channel's median (:func:`calibrate_thresholds`), which balances the bits.

``where`` rather than ``sign``: sign gives 0 at 0 (a third value) and is missing from onnxruntime-web's
WebGPU kernels. Convolutions keep their zero padding, as XNOR-Net and Larq do: a bit kernel handles
the border with a mask, and a -1 padding would add a Pad before every convolution. In evaluation mode
the forward pass uses only GreaterOrEqual, Where, Conv/Gemm and Mul, so the ONNX export has the +/-1
weights as a plain initializer that :mod:`dnnsplit.branching.packing` then stores as bits.
"""

from __future__ import annotations

import torch
from torch import fx, nn
from torch.nn import functional as F


class _SignSTE(torch.autograd.Function):
    """+/-1 forward; gradient passed through where |x| <= 1 (the clipped straight-through estimator)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        ctx.save_for_backward(x)
        return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: ANN001
        (x,) = ctx.saved_tensors
        return grad * (x.abs() <= 1).to(grad.dtype)


def binarize_input(x: torch.Tensor, threshold: torch.Tensor, training: bool) -> torch.Tensor:
    """+/-1 activations around a per-channel ``threshold`` (channel dim 1)."""
    shape = [1, -1] + [1] * (x.dim() - 2)
    shifted = x - threshold.view(shape)
    if training:
        return _SignSTE.apply(shifted)
    return torch.where(shifted >= 0, 1.0, -1.0)


def binary_weight(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(+/-1 weights, per-output-channel scale = mean |W|)."""
    signs = torch.where(weight >= 0, 1.0, -1.0).to(weight.dtype)
    scale = weight.detach().abs().flatten(1).mean(dim=1)
    return signs, scale


def _ste_weight(weight: torch.Tensor, signs: torch.Tensor) -> torch.Tensor:
    # Forward value: the signs; gradient: identity to the real weights, clipped outside [-1, 1].
    clipped = weight.clamp(-1, 1)
    return clipped + (signs - clipped).detach()


class BinaryConv2d(nn.Conv2d):
    """A Conv2d whose weights and inputs are binary; the output is rescaled per output channel."""

    def __init__(self, *args, **kwargs) -> None:  # noqa: ANN002, ANN003
        super().__init__(*args, **kwargs)
        self.input_threshold = nn.Parameter(torch.zeros(self.in_channels))
        self.binary_input = True  # False: binary weights over real inputs (see BINARY_ACTIVATIONS)

    @classmethod
    def from_conv(cls, conv: nn.Conv2d, binary_input: bool = True) -> BinaryConv2d:
        layer = cls(
            conv.in_channels,
            conv.out_channels,
            conv.kernel_size,
            stride=conv.stride,
            padding=conv.padding,
            dilation=conv.dilation,
            groups=conv.groups,
            bias=conv.bias is not None,
            padding_mode=conv.padding_mode,
        )
        with torch.no_grad():
            layer.weight.copy_(conv.weight)
            if conv.bias is not None:
                layer.bias.copy_(conv.bias)
        layer.binary_input = binary_input
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = binarize_input(x, self.input_threshold, self.training) if self.binary_input else x
        signs, scale = binary_weight(self.weight)
        w = _ste_weight(self.weight, signs) if self.training else signs
        y = F.conv2d(xb, w, None, self.stride, self.padding, self.dilation, self.groups)
        y = y * scale.view(1, -1, 1, 1)
        if self.bias is not None:
            y = y + self.bias.view(1, -1, 1, 1)
        return y


class BinaryLinear(nn.Linear):
    """A Linear layer with binary weights and inputs; the output is rescaled per output feature."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        super().__init__(in_features, out_features, bias=bias)
        self.input_threshold = nn.Parameter(torch.zeros(in_features))
        self.binary_input = True

    @classmethod
    def from_linear(cls, linear: nn.Linear, binary_input: bool = True) -> BinaryLinear:
        layer = cls(linear.in_features, linear.out_features, bias=linear.bias is not None)
        layer.binary_input = binary_input
        with torch.no_grad():
            layer.weight.copy_(linear.weight)
            if linear.bias is not None:
                layer.bias.copy_(linear.bias)
        return layer

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Features are the last dimension of a Linear input, whatever comes before them.
        xb = x
        if self.binary_input:
            shifted = x - self.input_threshold
            xb = _SignSTE.apply(shifted) if self.training else torch.where(shifted >= 0, 1.0, -1.0)
        signs, scale = binary_weight(self.weight)
        w = _ste_weight(self.weight, signs) if self.training else signs
        y = F.linear(xb, w) * scale
        if self.bias is not None:
            y = y + self.bias
        return y


BINARY_LAYERS = (BinaryConv2d, BinaryLinear)


# Not 1/2: levels form a lattice (zero padding mixes odd and even sums), and the midpoint of two
# observed levels is often an unobserved one. 0.382 of a gap is no small-integer fraction of it.
OFF_LEVEL = 0.382


def _off_the_levels(values: torch.Tensor, threshold: float) -> float:
    """Move ``threshold`` part-way to the neighbouring observed value when a value sits on it.

    After a binary layer, activations take few distinct values (sums of +/-1 times a scale, then
    BatchNorm): a threshold equal to one of them decides those samples by rounding, and onnxruntime's
    fused kernels round differently from PyTorch. Keeping the threshold between levels keeps every
    decision on the observed data and makes it robust to 1e-6 differences.
    """
    levels = torch.unique(values)
    if levels.numel() == 0:
        return threshold
    tol = 1e-4 * float(levels.abs().max()) + 1e-6
    near = (levels - threshold).abs() < tol
    if not bool(near.any()):
        return threshold
    hit = levels[near]
    below, above = levels[levels < float(hit.min())], levels[levels > float(hit.max())]
    if float(hit.max()) >= threshold or above.numel() == 0:  # on or just above: keep them +1
        lower = float(below.max()) if below.numel() else float(hit.min()) - 2 * tol
        return float(hit.min()) - OFF_LEVEL * (float(hit.min()) - lower)
    return float(hit.max()) + OFF_LEVEL * (float(above.min()) - float(hit.max()))  # just below: keep -1


@torch.no_grad()
def calibrate_thresholds(module: nn.Module, *inputs: torch.Tensor, median: bool = True) -> int:
    """Set every binary layer's input thresholds from one forward pass over ``inputs``.

    ``median=True`` starts each channel at the median of what it receives (balanced bits); either way
    each threshold is then moved off any activation level it sits on (see :func:`_off_the_levels`).
    Each layer is set before it computes, so later layers see the new binarization of earlier ones.
    Returns the number of layers set.
    """
    handles = []

    def pre_hook(layer: nn.Module, args: tuple[torch.Tensor, ...]) -> None:
        x = args[0]
        if isinstance(layer, BinaryConv2d):
            channels = x.transpose(0, 1).flatten(1)
        else:
            channels = x.reshape(-1, x.shape[-1]).transpose(0, 1)
        start = channels.median(dim=1).values if median else layer.input_threshold.detach().clone()
        settled = [_off_the_levels(channels[c], float(start[c])) for c in range(channels.shape[0])]
        layer.input_threshold.copy_(torch.tensor(settled, dtype=layer.input_threshold.dtype))

    for layer in module.modules():
        if isinstance(layer, BINARY_LAYERS) and layer.binary_input:
            handles.append(layer.register_forward_pre_hook(pre_hook))
    was_training = module.training
    module.eval()
    try:
        module(*inputs)
    finally:
        for handle in handles:
            handle.remove()
        module.train(was_training)
    return len(handles)


class _FrozenBinary(nn.Module):
    """Export form of a binary layer: +/-1 weights and scales as buffers, nothing computed from them.

    The exporter then writes the signs as one initializer (which packing turns into bits) instead of
    recomputing them from the real weights in the graph.
    """

    def __init__(self, layer: BinaryConv2d | BinaryLinear) -> None:
        super().__init__()
        signs, scale = binary_weight(layer.weight.detach())
        self.register_buffer("signs", signs.clone())
        self.register_buffer("scale", scale.clone())
        # Real inputs need no threshold: leaving it out keeps it out of the file.
        threshold = layer.input_threshold.detach().clone() if layer.binary_input else None
        self.register_buffer("threshold", threshold)
        self.register_buffer("bias", None if layer.bias is None else layer.bias.detach().clone())


class FrozenBinaryConv2d(_FrozenBinary):
    def __init__(self, layer: BinaryConv2d) -> None:
        super().__init__(layer)
        self.stride, self.dilation, self.groups = layer.stride, layer.dilation, layer.groups
        self.padding = layer.padding

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x if self.threshold is None else torch.where(x >= self.threshold.view(1, -1, 1, 1), 1.0, -1.0)
        y = F.conv2d(xb, self.signs, None, self.stride, self.padding, self.dilation, self.groups)
        y = y * self.scale.view(1, -1, 1, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


class FrozenBinaryLinear(_FrozenBinary):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xb = x if self.threshold is None else torch.where(x >= self.threshold, 1.0, -1.0)
        y = torch.matmul(xb, self.signs.t()) * self.scale
        return y if self.bias is None else y + self.bias


@torch.no_grad()
def fold_batchnorms(gm: fx.GraphModule) -> int:
    """Fold each BatchNorm2d that directly follows a frozen binary convolution into its scale and bias.

    The convolution already multiplies by a scale per output channel, so an eval-mode BatchNorm after it
    (``gain * (y - mean) + beta``) costs nothing to absorb: the scale becomes ``scale * gain`` and the bias
    ``gain * (bias - mean) + beta``. The file then carries 2 floats per channel instead of 5; for
    mobilenet_v2, whose many thin layers make BatchNorm 311 kB of a 734 kB mobile.onnx, that matters.
    Returns the number of BatchNorms folded.
    """
    modules = dict(gm.named_modules())
    folded = 0
    for node in list(gm.graph.nodes):
        bn = modules.get(node.target) if node.op == "call_module" else None
        if not isinstance(bn, nn.BatchNorm2d) or bn.running_mean is None or bn.running_var is None:
            continue
        source = node.args[0]
        is_module = isinstance(source, fx.Node) and source.op == "call_module"
        conv = modules.get(source.target) if is_module else None
        if not isinstance(conv, FrozenBinaryConv2d) or len(source.users) != 1:
            continue
        gain = torch.rsqrt(bn.running_var + bn.eps)
        if bn.weight is not None:
            gain = gain * bn.weight
        bias = conv.bias if conv.bias is not None else torch.zeros_like(conv.scale)
        shift = (bias - bn.running_mean) * gain
        conv.scale = conv.scale * gain
        conv.bias = shift + bn.bias if bn.bias is not None else shift
        node.replace_all_uses_with(source)
        gm.graph.erase_node(node)
        folded += 1
    if folded:
        gm.graph.lint()
        gm.delete_all_unused_submodules()
        gm.recompile()
    return folded


def freeze(module: nn.Module) -> nn.Module:
    """A copy of ``module`` with every binary layer in its export form (same outputs in eval mode).

    In a traced module (the branch is one), BatchNorms right after a binary convolution are folded
    into it (:func:`fold_batchnorms`).
    """
    import copy

    frozen = copy.deepcopy(module).eval()
    for path, layer in list(frozen.named_modules()):
        if isinstance(layer, BinaryConv2d):
            replacement: nn.Module = FrozenBinaryConv2d(layer)
        elif isinstance(layer, BinaryLinear):
            replacement = FrozenBinaryLinear(layer)
        else:
            continue
        parent_path, _, name = path.rpartition(".")
        setattr(frozen.get_submodule(parent_path) if parent_path else frozen, name, replacement)
    if isinstance(frozen, fx.GraphModule):
        frozen.recompile()
        fold_batchnorms(frozen)
    return frozen
