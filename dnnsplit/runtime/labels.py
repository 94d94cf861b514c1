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


def top_classes(manifest: Any, results: dict[str, Any], top: int) -> list[dict[str, Any]]:
    """The ``top`` classes of the model's first output (softmax over its logits), with ImageNet names.

    Plain data (class, name, probability, logit): what ``run`` and ``infer`` print and write as JSON.
    """
    import numpy as np

    first = manifest.outputs[0].name
    logits = np.asarray(results[first], dtype=np.float64).reshape(-1)
    probs = np.exp(logits - logits.max())
    probs /= probs.sum()
    order = np.argsort(-probs)[: max(top, 1)]
    names = class_names(manifest.model, len(logits))
    return [
        {
            "class": int(i),
            "name": names[i] if names else None,
            "probability": float(probs[i]),
            "logit": float(logits[i]),
        }
        for i in order
    ]
