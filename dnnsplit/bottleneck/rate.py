"""The optional learned rate term: compressai's ``EntropyBottleneck`` estimates the bits of the code.

With ``--lambda`` > 0 training minimises distillation + lambda x (estimated bits per code element), so the
encoder learns a code with fewer distinct values, which zstd then stores in fewer bytes. compressai is an
optional dependency (the ``bottleneck`` extra): the plain path (``--lambda 0``) needs only torch.
"""

from __future__ import annotations

import math
import warnings

import torch
from torch import nn

from dnnsplit.errors import UsageError


def rate_model(channels: int) -> nn.Module:
    """A factorised entropy model over ``channels`` code channels (compressai.EntropyBottleneck)."""
    try:
        with warnings.catch_warnings():  # compressai's import warns about torch.jit.script, not about us
            warnings.simplefilter("ignore")
            from compressai.entropy_models import EntropyBottleneck
    except ImportError:
        raise UsageError(
            "--lambda > 0 needs compressai (its EntropyBottleneck is the rate model), which is not installed",
            "pip install 'dnnsplit[bottleneck]' (or compressai), or pass --lambda 0",
        ) from None
    return EntropyBottleneck(channels)


def bits_per_element(rate: nn.Module, latent: torch.Tensor) -> torch.Tensor:
    """Estimated bits per element of the rounded ``latent`` (N, C, H, W, in int8 steps), differentiable.

    compressai adds uniform noise in training mode (a differentiable stand-in for rounding) and gives the
    likelihood of each element; the rate is their negative log2.
    """
    _, likelihoods = rate(latent)
    return -torch.log(likelihoods).sum() / (math.log(2) * latent.numel())
