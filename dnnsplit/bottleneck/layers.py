"""The bottleneck's modules: encoder (phone), int8 quantiser, decoder (edge), and the models they make up.

The encoder is a convolution from the cut's channels down to C (1x1, or 3x3 with a stride) and a
BatchNorm, so its output has about unit spread per channel; the code is that output in steps of
``CODE_STEP`` rounded to int8 (symmetric: zero point 0). A fixed step in BatchNorm units (not a range
calibrated on data) keeps the code's alphabet what training saw, and it is what lets a rate term shrink
the code: with a range recalibrated to the data the code would always fill int8. Training sees the
rounding through a straight-through estimator. The decoder mirrors the encoder (a nearest upsampling for
a stride) and ends in a 1x1 convolution back to the cut's channels, unconstrained so it can stand for
any feature map, before or after an activation.
"""

from __future__ import annotations

import torch
from torch import nn

CODE_STEP = 1.0 / 8  # one int8 step in BatchNorm units: about 5 bits of entropy for a unit Gaussian
CODE_MIN, CODE_MAX = -127, 127  # symmetric int8: -128 is never produced
CODE_NAME = "code"  # the int8 tensor's name in every exported file: what crosses the cut


class Encoder(nn.Module):
    """The cut's features (N, K, H, W) -> the code before rounding (N, C, H/s, W/s), in BatchNorm units."""

    def __init__(self, in_channels: int, channels: int, stride: int = 1) -> None:
        super().__init__()
        kernel = 1 if stride == 1 else 3
        self.conv = nn.Conv2d(in_channels, channels, kernel, stride=stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x))


class Decoder(nn.Module):
    """The dequantised code (N, C, h, w) -> features of the cut's shape (N, K, H, W)."""

    def __init__(self, channels: int, out_channels: int, size: tuple[int, int] | None = None) -> None:
        super().__init__()
        # To the cut's own size (not a factor: a stride-2 code of an odd size must come back to it).
        self.up = nn.Upsample(size=size, mode="nearest") if size is not None else nn.Identity()
        self.conv = nn.Conv2d(channels, out_channels, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(out_channels)
        self.relu = nn.ReLU()
        self.out = nn.Conv2d(out_channels, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(self.relu(self.bn(self.conv(self.up(x)))))


def round_code(latent: torch.Tensor) -> torch.Tensor:
    """``latent`` (in int8 steps) rounded and clipped to int8's range, as floats; the gradient passes the
    rounding as it is (straight-through estimator)."""
    rounded = latent + (torch.round(latent) - latent).detach()
    return torch.clamp(rounded, CODE_MIN, CODE_MAX)


class BottleneckModel(nn.Module):
    """The model with the bottleneck: input -> stem -> encoder -> int8 code -> decoder -> rest -> logits.

    In training mode the code stays float (rounded, straight-through); in eval mode, and so in ONNX, it is
    an int8 tensor (Cast), the one that crosses the cut.
    """

    def __init__(
        self, stem: nn.Module, encoder: Encoder, decoder: Decoder, rest: nn.Module, step: float = CODE_STEP
    ) -> None:
        super().__init__()
        self.stem, self.encoder, self.decoder, self.rest = stem, encoder, decoder, rest
        self.step = float(step)

    def latent(self, x: torch.Tensor) -> torch.Tensor:
        """The encoder's output in int8 steps, before rounding (what a rate model measures)."""
        return self.encoder(self.stem(x)) / self.step

    def code(self, x: torch.Tensor) -> torch.Tensor:
        """The int8 code of ``x`` (eval: an int8 tensor; training: rounded floats)."""
        q = round_code(self.latent(x))
        return q if self.training else q.to(torch.int8)

    def decode(self, code: torch.Tensor) -> torch.Tensor:
        """Logits from a code (int8 or rounded floats)."""
        return self.rest(self.decoder(code.to(torch.float32) * self.step))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(self.code(x))


class EncoderModel(nn.Module):
    """The phone's side: input -> int8 code."""

    def __init__(self, model: BottleneckModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model.code(x)


class DecoderModel(nn.Module):
    """The edge's side: int8 code -> logits."""

    def __init__(self, model: BottleneckModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        return self.model.decode(code)


def feature_shape(stem: nn.Module, input_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape (1, K, H, W) of the cut's features for one input of ``input_shape``."""
    with torch.no_grad():
        return tuple(int(v) for v in stem.eval()(torch.zeros((1, *input_shape[1:]))).shape)
