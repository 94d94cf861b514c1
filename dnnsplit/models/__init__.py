"""Load a model from a torchvision name, an import path, a checkpoint or an ONNX file; export to ONNX.

The names below load on first use (PEP 562): ``dnnsplit.models.onnx_file`` and ``shapes`` are needed by
code that never touches torch (the servers read ONNX segments only), and importing ``export`` or
``loading`` here would pull torch (2 s, 100+ MB) into every such process.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dnnsplit.models.export import ExportedModel, export_model
    from dnnsplit.models.loading import LoadedModel, ModelOptions, load_model
    from dnnsplit.models.shapes import format_shape, parse_input_shape

_WHERE = {
    "ExportedModel": "export",
    "export_model": "export",
    "LoadedModel": "loading",
    "ModelOptions": "loading",
    "load_model": "loading",
    "format_shape": "shapes",
    "parse_input_shape": "shapes",
}

__all__ = [
    "ExportedModel",
    "LoadedModel",
    "ModelOptions",
    "export_model",
    "format_shape",
    "load_model",
    "parse_input_shape",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'dnnsplit.models' has no attribute {name!r}")
    return getattr(importlib.import_module(f"dnnsplit.models.{_WHERE[name]}"), name)
