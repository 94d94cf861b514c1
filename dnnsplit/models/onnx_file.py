"""Checks on user-supplied ONNX files, and the input shape they declare."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dnnsplit.errors import UsageError
from dnnsplit.limits import check_input_size


def check_onnx_file(path: Path) -> None:
    """Parse ``path`` and run ``onnx.checker``; raise a UsageError naming the problem otherwise."""
    import onnx

    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - protobuf raises several types
        raise UsageError(
            f"{path} is not an ONNX model ({type(exc).__name__})", "pass a valid .onnx file"
        ) from exc
    try:
        # The path form also works for models with external data (> 2 GB).
        onnx.checker.check_model(str(path), full_check=False)
    except onnx.checker.ValidationError as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else "validation failed"
        raise UsageError(
            f"{path} fails onnx.checker: {first}", "re-export the model or fix the graph"
        ) from exc
    if not model.graph.node:
        raise UsageError(f"{path} has an empty graph", "pass a model with at least one node")


def onnx_input_shape(path: Path, override: tuple[int, ...] | None = None) -> tuple[int, ...]:
    """The model's (first) input shape with batch 1, or ``override``; error if it has free dims."""
    import onnx

    return input_shape_of(onnx.load(str(path), load_external_data=False), path, override)


def input_shape_of(model: Any, path: Path, override: tuple[int, ...] | None) -> tuple[int, ...]:
    """``onnx_input_shape`` of a loaded ModelProto."""
    inputs = graph_inputs(model)
    if not inputs:
        raise UsageError(f"{path} has no inputs", "pass a model that takes an image tensor")
    dims = inputs[0].type.tensor_type.shape.dim
    if override is not None:
        if len(override) != len(dims):
            raise UsageError(
                f"--input-shape has {len(override)} dims but the model's input has {len(dims)}",
                "match the model's input rank",
            )
        return tuple(override)
    shape = []
    for i, d in enumerate(dims):
        if d.HasField("dim_value") and d.dim_value > 0:
            shape.append(int(d.dim_value))
        elif i == 0:
            shape.append(1)  # dynamic batch axis
        else:
            raise UsageError(
                f"the input of {path} has a free dimension '{d.dim_param or '?'}'",
                "pass --input-shape, e.g. 1x3x224x224",
            )
    check_input_size(tuple(shape), f"{path}'s input")
    return tuple(shape)


def graph_inputs(model: Any) -> list[Any]:
    """The graph's real inputs: its declared inputs that are no initializer."""
    initializers = {i.name for i in model.graph.initializer}
    return [i for i in model.graph.input if i.name not in initializers]
