"""Per-layer cost of a model on a runtime (onnxruntime, torch), and device specs."""

from dnnsplit.profiling.graph import Layer, LayerGraph, TensorSpec, load_layer_graph
from dnnsplit.profiling.profile import LayerProfile, Profile
from dnnsplit.profiling.run import (
    PreparedModel,
    ProfileSettings,
    prepare_model,
    profile_model,
    profile_prepared,
)

__all__ = [
    "Layer",
    "LayerGraph",
    "LayerProfile",
    "PreparedModel",
    "Profile",
    "ProfileSettings",
    "TensorSpec",
    "load_layer_graph",
    "prepare_model",
    "profile_model",
    "profile_prepared",
]
