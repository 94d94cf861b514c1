"""Class names for a model's outputs (the CLI's top-5 table and the browser page show the same ones)."""

from __future__ import annotations

from typing import Any


def class_names(model: dict[str, Any], count: int) -> list[str] | None:
    """ImageNet class names for a torchvision model with its 1000 classes; None otherwise."""
    source = str(model.get("source") or "")
    if not source.startswith("torchvision:"):
        return None
    from torchvision.models import get_model_weights

    try:
        names = list(get_model_weights(source.split(":", 1)[1]).DEFAULT.meta["categories"])
    except (ValueError, KeyError, AttributeError):
        return None
    return names if len(names) == count else None
