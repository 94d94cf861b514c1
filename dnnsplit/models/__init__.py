"""Load a model from a torchvision name, an import path, a checkpoint or an ONNX file; export to ONNX."""

from dnnsplit.models.export import ExportedModel, export_model
from dnnsplit.models.loading import LoadedModel, ModelOptions, load_model
from dnnsplit.models.shapes import format_shape, parse_input_shape

__all__ = [
    "ExportedModel",
    "LoadedModel",
    "ModelOptions",
    "export_model",
    "format_shape",
    "load_model",
    "parse_input_shape",
]
