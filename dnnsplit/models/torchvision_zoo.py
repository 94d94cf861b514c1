"""torchvision classification models: names, builders and their published metadata."""

from __future__ import annotations

import difflib
from functools import cache
from typing import Any

import torch
from torch import nn

from dnnsplit.errors import UsageError


@cache
def classification_model_names() -> tuple[str, ...]:
    import torchvision.models as tvm

    return tuple(sorted(tvm.list_models(module=tvm)))


def check_name(name: str) -> None:
    names = classification_model_names()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run 'dnnsplit models' to list them"
    raise UsageError(f"unknown torchvision classification model '{name}'", hint)


def default_meta(name: str) -> dict[str, Any]:
    """The DEFAULT weights' metadata (read offline; nothing is downloaded)."""
    import torchvision.models as tvm

    return dict(tvm.get_model_weights(name).DEFAULT.meta)


def default_input_shape(name: str) -> tuple[int, int, int, int]:
    """1x3xSxS with S the crop size of the model's DEFAULT weights transforms (299 for inception_v3)."""
    import torchvision.models as tvm

    weights = tvm.get_model_weights(name).DEFAULT
    crop = getattr(weights.transforms(), "crop_size", [224])
    size = int(crop[0]) if isinstance(crop, list | tuple) else int(crop)
    return (1, 3, size, size)


def build(name: str, num_classes: int | None = None, seed: int = 0) -> nn.Module:
    """Random-initialised model (seeded) in eval mode; weights are loaded separately."""
    import torchvision.models as tvm

    check_name(name)
    kwargs: dict[str, Any] = {"weights": None}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    if name == "googlenet":
        # The published googlenet weights (and their num_params) come without the training-only aux heads.
        kwargs["aux_logits"] = False
    if name in ("googlenet", "inception_v3"):
        kwargs["init_weights"] = True
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = tvm.get_model(name, **kwargs)
    return model.eval()
