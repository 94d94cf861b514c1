"""Per-layer cost of a model on a runtime (onnxruntime, torch), and device specs.

Names are imported lazily: reading a profile file (``dnnsplit.profiling.profile``) must not pay for
importing torch, which only measuring needs.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Layer": "dnnsplit.profiling.graph",
    "LayerGraph": "dnnsplit.profiling.graph",
    "TensorSpec": "dnnsplit.profiling.graph",
    "load_layer_graph": "dnnsplit.profiling.graph",
    "LayerProfile": "dnnsplit.profiling.profile",
    "Profile": "dnnsplit.profiling.profile",
    "PreparedModel": "dnnsplit.profiling.run",
    "ProfileSettings": "dnnsplit.profiling.run",
    "prepare_model": "dnnsplit.profiling.run",
    "profile_model": "dnnsplit.profiling.run",
    "profile_prepared": "dnnsplit.profiling.run",
    "load_or_profile": "dnnsplit.profiling.run",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'dnnsplit.profiling' has no attribute '{name}'")
    return getattr(importlib.import_module(_EXPORTS[name]), name)
